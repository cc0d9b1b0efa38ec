"""Training across the `replica` axis with DiLoCo / NoLoCo (`TrainConfig.outer`)."""

import jax
import numpy as np
import pytest

from efficient.sharding import MeshConfig, batch_sharding, make_mesh
from efficient.train import OptimizerConfig, OuterConfig, TrainConfig, read_metrics, train
from efficient.train import replicas as replicas_lib
from efficient.train.loop import init_state
from efficient.train.optimizer import make_optimizer
from efficient.train.steps import make_train_step
from tests.efficient.train._toy import toy_eval_data, toy_task, toy_train_data

INNER = OptimizerConfig(learning_rate=3e-3, warmup_steps=2, weight_decay=0.01, grad_clip_norm=1.0)


def _config(steps, replicas, outer, **kw):
    base = dict(
        steps=steps, log_every=1, checkpoint_every=100, eval_every=0, progress=False,
        optimizer=INNER, mesh=MeshConfig(replica=replicas, data=1), outer=outer,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _run(workdir, config, data, *, dropout=0.1, resume=False):
    return train(
        toy_task(dropout), config, train_data=data, eval_data=toy_eval_data, workdir=workdir,
        resume=resume, devices=jax.devices()[: config.mesh.replica],
    )  # fmt: skip


def _duplicated(replicas, batch_size=8):
    """Every replica's share of each global batch is the same `batch_size` examples."""
    ds = toy_train_data(batch_size=batch_size)
    return ds.map(lambda b: {k: np.concatenate([v] * replicas) for k, v in b.items()})


def _losses(workdir):
    return [r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "train"]


@pytest.mark.parametrize("name", ["diloco", "noloco"])
def test_identical_replicas_with_outer_lr_1_momentum_0_follow_the_inner_optimizer(tmp_path, name):
    """With the same data on every replica (and no dropout) the replicas stay equal, and an outer
    step of learning rate 1 and no momentum sets φ to their mean, i.e. to θ: the run is the inner
    optimizer's run on one replica — an independent single-device run of the ordinary loop."""
    outer = OuterConfig(name=name, sync_period=2, learning_rate=1.0, momentum=0.0, nesterov=False)
    stacked = _run(tmp_path / "r", _config(7, 2, outer), _duplicated(2), dropout=0.0)
    single = _run(tmp_path / "s", _config(7, 1, None), toy_train_data(batch_size=8), dropout=0.0)
    np.testing.assert_allclose(_losses(tmp_path / "r"), _losses(tmp_path / "s"), rtol=2e-5)
    paths = jax.tree_util.tree_leaves_with_path(single.state.params)
    for (path, y), x in zip(paths, jax.tree.leaves(stacked.state.params), strict=True):
        assert x.shape == (2, *y.shape)
        if "Dense_0" in str(path) and "bias" in str(path):
            # Before BatchNorm this bias has gradient 0 up to rounding, which Adam normalises
            # into lr-sized steps of arbitrary sign: not comparable between two programs.
            continue
        np.testing.assert_allclose(np.asarray(x[0]), np.asarray(y), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(x[1]), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert stacked.summary["num_params"] == single.summary["num_params"]


def test_noloco_replicas_differ_between_syncs_and_resume_exactly(tmp_path):
    outer = OuterConfig(name="noloco", sync_period=3)
    full = _run(tmp_path / "full", _config(8, 4, outer), toy_train_data(batch_size=16))
    leaves = [np.asarray(x) for x in jax.tree.leaves(full.state.params)]
    assert all(x.shape[0] == 4 for x in leaves)
    # 8 = 2 syncs + 2 inner steps on different data (and dropout keys): the replicas differ.
    assert not np.allclose(leaves[0][0], leaves[0][1])
    paused = _run(tmp_path / "split", _config(8, 4, outer, stop_after=4), toy_train_data(16))
    assert paused.summary["status"] == "paused"
    resumed = _run(tmp_path / "split", _config(8, 4, outer), toy_train_data(16), resume=True)
    np.testing.assert_array_equal(_losses(tmp_path / "full"), _losses(tmp_path / "split"))
    for x, y in zip(
        jax.tree.leaves(full.state.opt_state), jax.tree.leaves(resumed.state.opt_state),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_evaluation_uses_the_replica_mean_of_the_parameters(tmp_path):
    from efficient.train import evaluate, make_eval_step

    outer = OuterConfig(name="noloco", sync_period=3)
    result = _run(tmp_path, _config(5, 2, outer, eval_every=5), toy_train_data(batch_size=16))
    mesh = make_mesh(MeshConfig(replica=1, data=1), jax.devices()[:1])
    # The replica mean computed here in numpy; the ordinary (unstacked) eval step reads only the
    # variables of the state.
    mean = lambda t: jax.tree.map(lambda x: np.mean(np.asarray(x), axis=0), t)  # noqa: E731
    state = jax.device_get(result.state)
    single = state.replace(params=mean(state.params), model_state=mean(state.model_state))
    with jax.set_mesh(mesh):
        expected = evaluate(
            jax.jit(make_eval_step(toy_task())), single, toy_eval_data(), batch_sharding(mesh)
        )
    for k, v in expected.items():
        assert result.summary["final_eval"][k] == pytest.approx(v, rel=1e-5)
    # The summary's communication: the toy model's 740 float32 to the peer once per sync.
    comm = result.summary["communication"]
    assert comm["collective_ops"].keys() == {"collective-permute"}
    assert comm["bytes_per_device_per_sync"] == 740 * 4
    assert comm["bytes_per_device_per_step"] == pytest.approx(740 * 4 / 3)


@pytest.mark.parametrize(("name", "all_reduce"), [("noloco", False), ("diloco", True)])
def test_compiled_step_collectives(name, all_reduce):
    """NoLoCo's step exchanges with collective-permutes and has no all-reduce at all (each
    replica is one device here); DiLoCo's averages with an all-reduce."""
    mesh = make_mesh(MeshConfig(replica=4, data=1), jax.devices()[:4])
    outer = OuterConfig(name=name, sync_period=2)
    tx = replicas_lib.outer_optimizer(outer, make_optimizer(INNER, 10))
    example = next(iter(toy_train_data(batch_size=16)))
    state, shardings = init_state(toy_task(), tx, example, 0, mesh, replicas=4)
    step = jax.jit(
        replicas_lib.replica_train_step(make_train_step(toy_task(), tx), mesh),
        in_shardings=(shardings, batch_sharding(mesh)),
    )
    with jax.set_mesh(mesh):
        hlo = step.lower(state, example).compile().as_text()
    assert ("all-reduce" in hlo) == all_reduce
    assert ("collective-permute" in hlo) == (name == "noloco")


def test_outer_config_rejects_bad_values():
    with pytest.raises(ValueError, match="OuterConfig.sync_period=0"):
        OuterConfig(sync_period=0)
    with pytest.raises(ValueError, match="OuterConfig.group_size=0"):
        OuterConfig(group_size=0)
