"""BatchNorm / GroupNorm / LayerNorm against float64 numpy, and bf16 under strict promotion."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn import BatchNorm, GroupNorm, LayerNorm


def _normalise(x, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


@pytest.mark.parametrize("groups", [1, 2])
def test_group_norm_matches_numpy(groups):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 6)) * 3 + 1
    layer = GroupNorm(num_groups=groups)
    variables = layer.init(jax.random.key(0), jnp.zeros(x.shape))
    scale, bias = rng.normal(size=6), rng.normal(size=6)
    variables = {
        "params": {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    }
    got = layer.apply(variables, jnp.asarray(x, jnp.float32))
    xg = x.reshape(2, 3, 5, groups, 6 // groups)
    want = _normalise(xg, (1, 2, 4), 1e-5).reshape(x.shape) * scale + bias
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_group_norm_rejects_indivisible_groups():
    with pytest.raises(ValueError, match="num_groups=4"):
        GroupNorm(num_groups=4).init(jax.random.key(0), jnp.zeros((1, 2, 2, 6)))


def test_layer_norm_matches_numpy():
    x = np.random.default_rng(1).normal(size=(3, 4, 8))
    layer = LayerNorm(epsilon=1e-6)
    variables = layer.init(jax.random.key(0), jnp.zeros(x.shape))
    got = layer.apply(variables, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), _normalise(x, (2,), 1e-6), rtol=1e-5, atol=1e-5)


def test_batch_norm_train_and_running_stats_follow_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 3, 5)) * 2 + 0.5
    layer = BatchNorm()
    variables = layer.init(jax.random.key(0), jnp.zeros(x.shape), use_running_average=False)
    assert variables["params"]["scale"].names == ("norm",)
    assert variables["batch_stats"]["var"].names == ("norm",)
    y, updates = layer.apply(
        variables, jnp.asarray(x, jnp.float32), use_running_average=False, mutable=["batch_stats"]
    )
    assert updates["batch_stats"]["mean"].names == ("norm",)  # the update keeps the box
    updates = nn.unbox(updates)
    np.testing.assert_allclose(np.asarray(y), _normalise(x, (0, 1, 2), 1e-5), rtol=1e-5, atol=1e-5)
    n = x.size // 5
    # torch: running = (1 - 0.1) running + 0.1 batch, with the unbiased batch variance.
    want_mean = 0.1 * x.mean(axis=(0, 1, 2))
    want_var = 0.9 + 0.1 * x.var(axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), want_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), want_var, rtol=1e-5)
    # Eval mode normalises with the running statistics.
    stats = {"params": variables["params"], **updates}
    y_eval = layer.apply(stats, jnp.asarray(x, jnp.float32), use_running_average=True)
    want_eval = (x - want_mean) / np.sqrt(want_var + 1e-5)
    np.testing.assert_allclose(np.asarray(y_eval), want_eval, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BatchNorm(use_running_average=True, dtype=jnp.bfloat16),
        lambda: GroupNorm(dtype=jnp.bfloat16),
        lambda: LayerNorm(),
    ],
)
def test_norms_run_in_bf16_under_strict_promotion(make):
    # conftest sets jax_numpy_dtype_promotion="strict": Flax's own norms fail this with bf16.
    layer = make()
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4)).astype(jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    y = layer.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(y)))
