"""Collectives read from compiled HLO, bytes per participant, and the sync-time model."""

import jax
import numpy as np
import pytest

from efficient.sharding import MeshConfig, batch_sharding, make_mesh
from efficient.sharding.collectives import (
    Collective,
    bytes_sent,
    collectives,
    sync_bytes,
    sync_time,
)
from efficient.train import OptimizerConfig, OuterConfig
from efficient.train import replicas as replicas_lib
from efficient.train.loop import init_state
from efficient.train.optimizer import make_optimizer
from efficient.train.steps import make_train_step
from tests.efficient.train._toy import toy_task, toy_train_data

HLO = """\
HloModule m

%branch_a (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %cp = f32[8]{0} collective-permute(%p), channel_id=1, source_target_pairs={{0,1},{1,0}}
  ROOT %cp2 = bf16[2,3]{1,0} collective-permute(%p), source_target_pairs={{0,1},{1,0},{2,3},{3,2}}
}

ENTRY %main.1 (x: f32[4,5]) -> (f32[4,5], s32[]) {
  %x = f32[4,5]{1,0} parameter(0)
  %ar = (f32[4,5]{1,0}, s32[]) all-reduce(%x, %y), replica_groups={{0,1,2,3}}, to_apply=%add
  %ars = f32[10]{0} all-reduce-start(%x), replica_groups=[2,4]<=[8], to_apply=%add
  %ard = f32[10]{0} all-reduce-done(%ars)
  ROOT %ag = f32[16]{0} all-gather(%x), replica_groups={{0,1},{2,3}}, dimensions={0}
}
"""


def test_collectives_are_read_with_payload_and_groups():
    found = collectives(HLO)
    assert [(c.op, c.computation, c.payload, c.group_size) for c in found] == [
        ("collective-permute", "branch_a", 32, 2),
        ("collective-permute", "branch_a", 12, 2),
        ("all-reduce", "main.1", 84, 4),  # a tuple: 20 floats + one int32
        ("all-reduce", "main.1", 40, 4),  # async start counted once, done not at all
        ("all-gather", "main.1", 64, 2),
    ]
    assert found[1].pairs == 4
    assert bytes_sent(found[2]) == pytest.approx(2 * 3 / 4 * 84)
    assert bytes_sent(found[4]) == pytest.approx(32)
    with pytest.raises(ValueError, match=r"op='all_reduce': must be one of \['all-gather'"):
        Collective("all_reduce", "main", 100, 4)  # would be costed as an all-gather
    # The entry sends 126 + 60 + 32; the branch 44: the larger computation.
    assert sync_bytes(found) == pytest.approx(126 + 60 + 32)


@pytest.mark.parametrize("name", ["noloco", "diloco"])
def test_an_outer_sync_sends_the_model_once(name):
    """The toy model has 740 float32 parameters: NoLoCo's sync permutes exactly their bytes to
    the peer; DiLoCo's ring all-reduce sends 2 (n - 1) / n of them."""
    replicas = 4
    mesh = make_mesh(MeshConfig(replica=replicas, data=1), jax.devices()[:replicas])
    tx = replicas_lib.outer_optimizer(
        OuterConfig(name=name, sync_period=2), make_optimizer(OptimizerConfig(), 10)
    )
    example = next(iter(toy_train_data(batch_size=16)))
    state, shardings = init_state(toy_task(), tx, example, 0, mesh, replicas=replicas)
    model_bytes = sum(x[0].nbytes for x in jax.tree.leaves(jax.device_get(state.params)))
    assert model_bytes == 740 * 4
    step = jax.jit(
        replicas_lib.replica_train_step(make_train_step(toy_task(), tx), mesh),
        in_shardings=(shardings, batch_sharding(mesh)),
    )
    with jax.set_mesh(mesh):
        found = collectives(step.lower(state, example).compile().as_text())
    expected = model_bytes if name == "noloco" else 2 * (replicas - 1) / replicas * model_bytes
    assert sync_bytes(found, replicas) == pytest.approx(expected)


def test_sync_time_model():
    kw = dict(latency_s=1e-3, bandwidth=1e9)
    m = 4e8
    assert sync_time("pair", 1, m, **kw) == 0.0
    assert sync_time("pair", 1024, m, **kw) == pytest.approx(1e-3 + 0.4)
    assert sync_time("ring", 4, m, **kw) == pytest.approx(6 * (1e-3 + 0.1))
    assert sync_time("tree", 8, m, **kw) == pytest.approx(6 * (1e-3 + 0.4))
    ns = 2 ** np.arange(1, 11)
    pair = [sync_time("pair", int(n), m, **kw) for n in ns]
    tree = [sync_time("tree", int(n), m, **kw) for n in ns]
    assert len(set(pair)) == 1 and np.all(np.diff(tree) > 0)
    with pytest.raises(ValueError, match="kind='mesh'"):
        sync_time("mesh", 4, m, **kw)
    with pytest.raises(ValueError, match="kind='rnig'"):  # also where one replica needs no sync
        sync_time("rnig", 1, m, **kw)
    with pytest.raises(ValueError, match="replicas=0"):
        sync_time("pair", 0, m, **kw)
