"""Optax conformance shared by DiLoCo and NoLoCo: dtypes, stable state, schedules, extra args."""

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficient.optim import diloco, noloco
from tests.efficient.optim._replicas import run, stacked

OPTIMIZERS = {
    "diloco": lambda inner, **kw: diloco(inner, sync_period=2, **kw),
    "noloco": lambda inner, **kw: noloco(inner, sync_period=2, **kw),
}
N = 2


def _params(key, dtype):
    kw, kb = jax.random.split(key)
    tree = {"w": jax.random.normal(kw, (3, 2), dtype), "b": jax.random.normal(kb, (2,), dtype)}
    return stacked(tree, N)


def _grads(key, steps, dtype):
    kw, kb = jax.random.split(key)
    return {"w": jax.random.normal(kw, (steps, N, 3, 2), dtype),
            "b": jax.random.normal(kb, (steps, N, 2), dtype)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_dtypes_are_kept(key, name, dtype):
    tx = OPTIMIZERS[name](optax.adam(1e-2))
    params = _params(key, dtype)
    traj, state, updates = run(tx, params, _grads(jax.random.fold_in(key, 1), 4, dtype))
    for tree in (traj, updates, state.slow_params, state.momentum):
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype == dtype
            assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
    assert not np.array_equal(np.asarray(traj["b"][-1], np.float32), params["b"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_structure_is_stable_under_jit(key, name):
    tx = OPTIMIZERS[name](optax.adam(optax.cosine_decay_schedule(1e-2, 10)))
    params = _params(key, jnp.float32)
    init = jax.vmap(tx.init)(params)
    _, states, _ = run(tx, params, _grads(jax.random.fold_in(key, 1), 5, jnp.float32))
    last = jax.tree.map(lambda x: x[-1], states)  # after 2 syncs and one ordinary step
    assert jax.tree.structure(last) == jax.tree.structure(init)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(init), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert type(last).__name__ == {"diloco": "DiLoCoState", "noloco": "NoLoCoState"}[name]


def _scale_by_extra_arg() -> optax.GradientTransformationExtraArgs:
    """An inner optimizer that needs an extra keyword argument: u = -scale * g."""

    def update(updates, state, params=None, *, scale):
        del params
        return jax.tree.map(lambda g: -scale * g, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_extra_arguments_reach_the_inner_optimizer(key, name):
    tx = OPTIMIZERS[name](_scale_by_extra_arg(), outer_learning_rate=1.0, outer_momentum=0.0)
    params = _params(key, jnp.float32)
    grads = _grads(jax.random.fold_in(key, 1), 1, jnp.float32)
    traj, _, _ = run(tx, params, grads, scale=jnp.float32(0.5))
    np.testing.assert_allclose(traj["b"][0], params["b"] - 0.5 * grads["b"][0], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_needs_params(name):
    tx = OPTIMIZERS[name](
        optax.sgd(0.1), axis_name=None, **({"group_size": 1} if name == "noloco" else {})
    )
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="needs `params`"):
        tx.update(params, tx.init(params))


@pytest.mark.parametrize("module", ["efficient.optim.diloco", "efficient.optim.noloco"])
def test_docstring_examples_run(module):
    # importlib: `efficient.optim.noloco` the attribute is the function, not the module.
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
