"""NoLoCo's replica groups: the official permutation, partitions, the same on every replica."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficient.optim import noloco, pairings
from tests.efficient.optim._replicas import run


def _official(world_size, group_size, step):
    """jkolehm/noloco `create_random_permutation` and `batched`, verbatim in behaviour."""
    perm = [int(x) for x in np.random.default_rng(step + 1).permutation(world_size)]
    n = len(perm) // group_size
    out = [[] for _ in range(n)]
    for i, x in enumerate(perm):
        out[i % n].append(x)
    return out


SIZES = [(8, 2), (8, 4), (8, 8), (6, 3), (2, 2), (4, 1), (16, 2)]


@pytest.mark.parametrize(("num_replicas", "group_size"), SIZES)
def test_groups_partition_the_replicas_as_the_official_code_does(num_replicas, group_size):
    for step in [0, 1, 50, 100, 12345]:
        groups = pairings(num_replicas, group_size, step)
        assert groups.shape == (num_replicas // group_size, group_size)
        # A partition: every replica in exactly one group (a perfect matching for n = 2).
        np.testing.assert_array_equal(np.sort(groups.ravel()), np.arange(num_replicas))
        assert groups.tolist() == _official(num_replicas, group_size, step)
        np.testing.assert_array_equal(groups, pairings(num_replicas, group_size, step))


def test_matchings_change_from_step_to_step():
    seen = {tuple(sorted(map(tuple, np.sort(pairings(8, 2, 50 * (t + 1)), axis=1).tolist())))
            for t in range(20)}  # fmt: skip
    assert len(seen) > 10  # 105 perfect matchings of 8 replicas; 20 draws rarely repeat much


@pytest.mark.parametrize("group_size", [2, 4])
def test_every_replica_uses_the_same_groups(group_size):
    """Probe: replica i holds the one-hot e_i; one pure-averaging sync (α = 0, β = 1) leaves
    mean_{G_i} e_j, whose support is the group replica i actually averaged with. All replicas
    must agree on it, and it must be the table's partition, cycling after num_pairings syncs."""
    n, period, num_pairings = 8, 1, 8
    tx = noloco(optax.sgd(1.0), sync_period=period, outer_learning_rate=1.0,
                outer_momentum=0.0, group_size=group_size, num_pairings=num_pairings)  # fmt: skip
    params = {"e": jnp.eye(n)}
    for sync in [0, 1, 5, 7, 8, 13]:
        state = jax.vmap(tx.init)(params)
        state = state._replace(count=jnp.full(n, sync * period, jnp.int32))  # the next step syncs
        traj, _, _ = run(tx, params, {"e": jnp.zeros((1, n, n))}, state=state)
        member = np.asarray(traj["e"][0]) * group_size > 0.5  # [replica, replica]
        groups = pairings(n, group_size, (sync % num_pairings + 1) * period)
        want = np.zeros((n, n), bool)
        for g in groups:
            want[np.ix_(g, g)] = True
        np.testing.assert_array_equal(member, want)
        np.testing.assert_allclose(traj["e"][0], want / group_size, atol=1e-7)


@pytest.mark.parametrize(
    ("args", "argument"),
    [((8, 3, 0), "group_size=3 must divide num_replicas=8"), ((8, 0, 0), "group_size=0"),
     ((0, 2, 0), "num_replicas=0"), ((8, 2, -1), "step=-1")],
)  # fmt: skip
def test_bad_arguments_name_the_argument(args, argument):
    with pytest.raises(ValueError, match=argument):
        pairings(*args)
