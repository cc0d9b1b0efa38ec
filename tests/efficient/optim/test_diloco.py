"""DiLoCo: the inner optimizer when the outer step is trivial; optax.sgd on the mean Δ."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficient.optim import diloco
from tests.efficient.optim._replicas import compiled_step_text, run, stacked

D = 5  # tiny parameter trees: a [D] vector and a [2, D] matrix


def _params(key, num_replicas):
    kw, kb = jax.random.split(key)
    tree = {"w": jax.random.normal(kw, (2, D)), "b": jax.random.normal(kb, (D,))}
    return stacked(tree, num_replicas)


def _grads(key, steps, num_replicas):
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.normal(kw, (steps, num_replicas, 2, D)),
        "b": jax.random.normal(kb, (steps, num_replicas, D)),
    }


INNERS = {
    "adam": lambda: optax.adam(1e-2),
    "adam_cosine": lambda: optax.adam(optax.cosine_decay_schedule(1e-2, 20)),
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
}


@pytest.mark.parametrize("inner", sorted(INNERS))
@pytest.mark.parametrize("axis_name", ["replica", None])
def test_one_replica_unit_outer_step_is_the_inner_optimizer(key, inner, axis_name):
    params, grads = _params(key, 1), _grads(jax.random.fold_in(key, 1), 9, 1)
    tx = diloco(INNERS[inner](), sync_period=3, outer_learning_rate=1.0, outer_momentum=0.0,
                axis_name=axis_name)  # fmt: skip
    got, state, _ = run(tx, params, grads)
    want, _, _ = run(INNERS[inner](), params, grads, runner="vmap")
    # A sync lands on φ + (θ - φ), which is θ up to one rounding: 1e-6, not bit equality.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
    assert np.all(np.asarray(state.count[:, 0]) == np.arange(1, 10))


def test_nesterov_outer_step_differs_from_the_inner_optimizer(key):
    # Negative control: with the paper's outer step one replica is not the inner optimizer.
    params, grads = _params(key, 1), _grads(jax.random.fold_in(key, 1), 6, 1)
    got, _, _ = run(diloco(optax.adam(1e-2), sync_period=3), params, grads)
    want, _, _ = run(optax.adam(1e-2), params, grads, runner="vmap")
    assert np.abs(np.asarray(got["b"][-1] - want["b"][-1])).max() > 1e-3


def _reference(params, grads, inner_lr, sync_period, outer):
    """N replicas stacked in one array, no collectives: θ_i ← θ_i - lr g_i; every H steps
    Δ = mean_i(φ - θ_i) through `outer` (an optax.sgd), then θ_i ← φ (OpenDiLoCo / MaxText)."""
    theta = jax.tree.map(jnp.asarray, params)
    phi = jax.tree.map(lambda x: x[0], theta)
    outer_state = outer.init(phi)
    thetas = []
    for t in range(jax.tree.leaves(grads)[0].shape[0]):
        theta = jax.tree.map(lambda p, g: p - inner_lr * g[t], theta, grads)  # noqa: B023
        if (t + 1) % sync_period == 0:
            delta = jax.tree.map(lambda s, f: jnp.mean(s[None] - f, axis=0), phi, theta)
            updates, outer_state = outer.update(delta, outer_state, phi)
            phi = optax.apply_updates(phi, updates)
            theta = jax.tree.map(lambda s, f: jnp.broadcast_to(s, f.shape), phi, theta)
        thetas.append(theta)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *thetas), phi


@pytest.mark.parametrize("nesterov", [True, False])
def test_matches_optax_sgd_on_the_mean_pseudo_gradient(key, nesterov):
    n, steps, period, lr, mu = 4, 12, 3, 0.7, 0.9
    params, grads = _params(key, n), _grads(jax.random.fold_in(key, 1), steps, n)
    tx = diloco(optax.sgd(0.05), sync_period=period, outer_learning_rate=lr,
                outer_momentum=mu, nesterov=nesterov)  # fmt: skip
    got, state, _ = run(tx, params, grads)
    want, phi = _reference(params, grads, 0.05, period, optax.sgd(lr, mu, nesterov=nesterov))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.slow_params), jax.tree.leaves(phi), strict=True):
        np.testing.assert_allclose(a[-1], np.broadcast_to(b, a[-1].shape), atol=1e-5, rtol=1e-5)
        # pmean gives every replica the same bits, so the slow weights never drift apart.
        np.testing.assert_array_equal(a[-1], np.broadcast_to(a[-1, :1], a[-1].shape))


def test_compiled_step_all_reduces_over_replicas(key):
    text = compiled_step_text(diloco(optax.adam(1e-2), sync_period=4), _params(key, 8))
    assert "all-reduce" in text
    assert "collective-permute" not in text


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"sync_period": 0}, "sync_period=0"),
        ({"sync_period": -2}, "sync_period=-2"),
        ({"sync_period": True}, "sync_period=True"),
        ({"sync_period": 4, "outer_learning_rate": 0.0}, "outer_learning_rate=0.0"),
        ({"sync_period": 4, "outer_learning_rate": -0.7}, "outer_learning_rate=-0.7"),
        ({"sync_period": 4, "outer_learning_rate": float("nan")}, "outer_learning_rate=nan"),
        ({"sync_period": 4, "outer_momentum": 1.0}, "outer_momentum=1.0"),
        ({"sync_period": 4, "outer_momentum": -0.1}, "outer_momentum=-0.1"),
    ],
)
def test_bad_configs_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        diloco(optax.adam(1e-3), **kwargs)
