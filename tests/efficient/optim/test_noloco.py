"""NoLoCo against the official code, DiLoCo and its own invariants, on 8 simulated replicas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficient.optim import DiLoCoState, diloco, noloco, pairings
from tests.efficient.optim._replicas import compiled_step_text, run, stacked

N, D = 8, 4  # replicas; width of the tiny parameter tree


def _params(key, num_replicas=N):
    kw, kb = jax.random.split(key)
    tree = {"w": jax.random.normal(kw, (2, D)), "b": jax.random.normal(kb, (D,))}
    return stacked(tree, num_replicas)


def _grads(key, steps, num_replicas=N):
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.normal(kw, (steps, num_replicas, 2, D)),
        "b": jax.random.normal(kb, (steps, num_replicas, D)),
    }


def _official(params, grads, *, inner_lr, sync_period, group_size, alpha, beta, num_pairings):
    """float64 transcription of jkolehm/noloco `SparseOptimizerC.step` with an SGD inner step.

    Per group: mean = mean_G φ_j, mean_g = mean_G (θ_j - φ_j);
    δ_i ← δ_i + (α - 1) δ_i + β mean_g + β (mean - φ_i); φ_i ← φ_i + δ_i; θ_i ← φ_i.
    The official code seeds the sync after inner step s with s; ours cycles after num_pairings.
    """
    theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
    phi = {k: v.copy() for k, v in theta.items()}
    momentum = {k: np.zeros_like(v) for k, v in theta.items()}
    thetas = []
    for t in range(1, grads["b"].shape[0] + 1):
        theta = {k: theta[k] - inner_lr * np.asarray(grads[k][t - 1], np.float64) for k in theta}
        if t % sync_period == 0:
            sync = (t // sync_period - 1) % num_pairings
            groups = pairings(N, group_size, (sync + 1) * sync_period)
            for k in theta:
                new = momentum[k].copy()
                for group in groups:
                    mean = phi[k][group].mean(0)
                    mean_g = (theta[k][group] - phi[k][group]).mean(0)
                    for i in group:
                        step = (
                            (alpha - 1) * momentum[k][i] + beta * mean_g + beta * (mean - phi[k][i])
                        )
                        new[i] = momentum[k][i] + step
                momentum[k] = new
                phi[k] = phi[k] + momentum[k]
                theta[k] = phi[k].copy()
        thetas.append({k: v.copy() for k, v in theta.items()})
    return {k: np.stack([th[k] for th in thetas]) for k in theta}, phi, momentum


@pytest.mark.parametrize(
    ("group_size", "num_pairings", "runner"),
    [(2, 64, "shard_map"), (4, 64, "shard_map"), (2, 2, "shard_map"), (2, 64, "vmap")],
)
def test_matches_the_official_update(key, group_size, num_pairings, runner):
    steps, period, alpha, beta = 15, 3, 0.5, 0.7  # 5 outer steps
    params, grads = _params(key), _grads(jax.random.fold_in(key, 1), steps)
    tx = noloco(optax.sgd(0.05), sync_period=period, outer_learning_rate=beta,
                outer_momentum=alpha, group_size=group_size, num_pairings=num_pairings)  # fmt: skip
    got, state, _ = run(tx, params, grads, runner=runner)
    want, phi, momentum = _official(
        params, grads, inner_lr=0.05, sync_period=period, group_size=group_size,
        alpha=alpha, beta=beta, num_pairings=num_pairings,
    )  # fmt: skip
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(state.slow_params[k][-1], phi[k], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(state.momentum[k][-1], momentum[k], atol=1e-5, rtol=1e-5)
    # The replicas really did drift apart: the test is not passing on identical copies.
    assert np.ptp(np.asarray(state.slow_params["b"][-1]), axis=0).max() > 1e-2


@pytest.mark.parametrize("sync_period", [1, 3])
def test_one_group_of_all_replicas_is_heavy_ball_diloco(key, sync_period):
    steps, alpha, beta = 6, 0.5, 0.7
    params, grads = _params(key), _grads(jax.random.fold_in(key, 1), steps)
    kw = dict(sync_period=sync_period, outer_learning_rate=beta, outer_momentum=alpha)
    got, got_state, _ = run(noloco(optax.adam(1e-2), group_size=N, **kw), params, grads)
    want, want_state, _ = run(diloco(optax.adam(1e-2), nesterov=False, **kw), params, grads)
    # The group sum runs in another order than pmean's all-reduce: fp32 rounding, no more.
    for a, b in zip(jax.tree.leaves((got, got_state)), jax.tree.leaves((want, want_state)),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_replica_mean_follows_diloco(key):
    """Over a perfect matching mean_i mean_{G_i} θ = mean_i θ_i, so the replica means of φ and δ
    take exactly DiLoCo's heavy-ball step on the means, at every sync."""
    steps, period, alpha, beta, lr = 8, 2, 0.5, 0.7, 0.05
    params, grads = _params(key), _grads(jax.random.fold_in(key, 1), steps)
    tx = noloco(optax.sgd(lr), sync_period=period, outer_learning_rate=beta, outer_momentum=alpha)
    traj, states, _ = run(tx, params, grads)
    mean_tx = diloco(optax.sgd(lr), sync_period=period, outer_learning_rate=beta,
                     outer_momentum=alpha, nesterov=False, axis_name=None)  # fmt: skip
    mean = lambda tree: jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)  # noqa: E731
    at = lambda tree, t: jax.tree.map(lambda x: x[t], tree)  # noqa: E731
    for t in range(period - 1, steps, period):  # index of each sync step in the trajectory
        before = at(states, t - 1) if t else jax.vmap(tx.init)(params)
        before_params = at(traj, t - 1) if t else params
        state = DiLoCoState(
            count=jnp.asarray(period - 1, jnp.int32), inner_state=mean_tx.init(params)[1],
            slow_params=mean(before.slow_params), momentum=mean(before.momentum),
        )  # fmt: skip
        _, state = mean_tx.update(mean(at(grads, t)), state, mean(before_params))
        after = at(states, t)
        got = jax.tree.leaves(mean((after.slow_params, after.momentum)))
        want = jax.tree.leaves((state.slow_params, state.momentum))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    spread = np.ptp(np.asarray(states.slow_params["b"][-1]), axis=0).max()
    assert spread > 1e-2  # the replicas differ; only their mean follows DiLoCo


def test_pairwise_averaging_reaches_consensus_and_keeps_the_mean(key):
    """Pure gossip (α = 0, β = 1, no inner motion): φ_i ← mean of its pair. The replica mean is
    conserved, the spread never grows, and random matchings drive it to zero."""
    syncs = 40
    start = {"b": jax.random.normal(key, (N, D))}  # each replica starts elsewhere
    tx = noloco(optax.sgd(1.0), sync_period=1, outer_learning_rate=1.0, outer_momentum=0.0)
    traj, _, _ = run(tx, start, {"b": jnp.zeros((syncs, N, D))})
    x = np.asarray(traj["b"], np.float64)  # [syncs, N, D]
    variance = x.var(axis=1).sum(-1)  # [syncs]
    initial = np.asarray(start["b"], np.float64).var(axis=0).sum()
    np.testing.assert_allclose(x.mean(axis=1), np.broadcast_to(start["b"].mean(0), x[:, 0].shape),
                               atol=1e-6)  # fmt: skip
    assert np.all(np.diff(np.concatenate([[initial], variance])) <= 1e-7)
    assert variance[-1] < 1e-10 * initial


def test_replicas_reach_consensus_at_the_joint_minimum_of_a_quadratic(key):
    """Replica i minimizes ½‖x - c_i‖² (heterogeneous data); the joint minimum is mean c.
    The inner learning rate decays to zero halfway (the second half is pure gossip): with NoLoCo
    every replica ends at mean c, replicas that never talk (group_size = 1) at their own c_i."""
    steps = 400
    targets = 3.0 * jax.random.normal(key, (N, D))
    data = {"b": jnp.broadcast_to(targets, (steps, N, D))}
    grad_fn = lambda params, c: {"b": params["b"] - c["b"]}  # noqa: E731
    start = stacked({"b": jnp.zeros(D)}, N)
    inner = lambda: optax.sgd(optax.cosine_decay_schedule(0.1, steps // 2))  # noqa: E731
    together, _, _ = run(noloco(inner(), sync_period=4), start, data, grad_fn=grad_fn)
    alone, _, _ = run(noloco(inner(), sync_period=4, group_size=1), start, data, grad_fn=grad_fn)
    end, joint = together["b"][-1], np.asarray(targets.mean(0))
    np.testing.assert_allclose(end, np.broadcast_to(joint, end.shape), atol=1e-4)
    assert np.ptp(end, axis=0).max() < 1e-4
    # Without the exchange nothing pulls the replicas together.
    np.testing.assert_allclose(alone["b"][-1], targets, atol=1e-4)


@pytest.mark.parametrize("group_size", [2, 4])
def test_compiled_step_has_collective_permutes_and_no_all_reduce(key, group_size):
    tx = noloco(optax.adam(1e-2), sync_period=4, group_size=group_size, num_pairings=8)
    text = compiled_step_text(tx, _params(key))
    assert "collective-permute" in text
    assert "all-reduce" not in text


def test_inner_state_is_kept_across_syncs(key):
    # Adam's moments depend on the gradients only, so a kept state equals the inner optimizer's
    # own state after the same gradients; a reset one would not.
    params, grads = _params(key), _grads(jax.random.fold_in(key, 1), 6)
    inner = lambda: optax.adam(optax.cosine_decay_schedule(1e-2, 10))  # noqa: E731
    _, state, _ = run(noloco(inner(), sync_period=3), params, grads)
    _, alone, _ = run(inner(), params, grads, runner="vmap")
    for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(alone), strict=True):
        # Two compiled programs (shard_map vs vmap) fuse differently: a few ulp, not bits; a
        # reset state would be off by orders of magnitude.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(state.count[-1], np.full(N, 6))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"group_size": 3, "num_replicas": 8}, "group_size=3"),
        ({"group_size": 0}, "group_size=0"),
        ({"group_size": True}, "group_size=True"),
        ({"num_replicas": 0}, "num_replicas=0"),
        ({"sync_period": 0}, "sync_period=0"),
        ({"outer_learning_rate": 0.0}, "outer_learning_rate=0.0"),
        ({"outer_learning_rate": float("inf")}, "outer_learning_rate=inf"),
        ({"outer_momentum": 1.0}, "outer_momentum=1.0"),
        ({"num_pairings": 0}, "num_pairings=0"),
        ({"axis_name": None}, "group_size=2 must divide num_replicas=1"),
        ({"axis_name": None, "num_replicas": 4}, "num_replicas=4"),
    ],
)
def test_bad_configs_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        noloco(optax.adam(1e-3), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"group_size": 3}, "group_size=3 must divide num_replicas=8"),
     ({"num_replicas": 4}, "num_replicas=4, but axis 'replica' has 8")],
)  # fmt: skip
def test_configs_that_do_not_fit_the_mesh_fail_when_traced(key, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        run(noloco(optax.sgd(0.1), sync_period=1, **kwargs), _params(key), _grads(key, 1))
