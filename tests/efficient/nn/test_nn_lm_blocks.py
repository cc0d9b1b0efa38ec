"""RMSNorm, GatedMlp (SwiGLU) and CausalConv1d against float64 numpy; causality; bf16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn import CausalConv1d, GatedMlp, RMSNorm


def _random_params(layer, *shape, seed=0):
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: layer.init(jax.random.key(0), jnp.zeros(shape)))["params"]
    )
    return jax.tree.map(lambda s: rng.normal(size=s.shape), shapes)


def _f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def test_rms_norm_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 8)) * 3 + 1
    layer = RMSNorm(epsilon=1e-5)
    params = _random_params(layer, *x.shape)
    got = jax.jit(layer.apply)({"params": _f32(params)}, _f32(x))
    want = x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-5) * params["scale"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_rms_norm_bf16_keeps_dtype_and_is_accurate():
    x = jax.random.normal(jax.random.key(0), (4, 64)) * 10
    layer = RMSNorm()
    variables = layer.init(jax.random.key(1), x)
    y32 = layer.apply(variables, x)
    y16 = layer.apply(variables, x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=2e-2, atol=2e-2)


def test_gated_mlp_is_swiglu():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4))
    layer = GatedMlp(mlp_dim=6)
    params = _random_params(layer, *x.shape)
    assert set(params) == {"gate", "up", "down"} and "bias" not in params["gate"]
    got = jax.jit(layer.apply)({"params": _f32(params)}, _f32(x))
    gate, up = x @ params["gate"]["kernel"], x @ params["up"]["kernel"]
    want = (gate / (1 + np.exp(-gate)) * up) @ params["down"]["kernel"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("width", [1, 4])
def test_causal_conv1d_matches_loop(width):
    rng = np.random.default_rng(width)
    x = rng.normal(size=(2, 7, 3))
    layer = CausalConv1d(kernel_size=width)
    params = _random_params(layer, *x.shape)
    got = jax.jit(layer.apply)({"params": _f32(params)}, _f32(x))
    kernel, bias = params["kernel"], params["bias"]
    want = np.zeros_like(x)
    for t in range(7):
        for j in range(width):
            s = t - width + 1 + j
            if s >= 0:
                want[:, t] += x[:, s] * kernel[j]
    want += bias
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_causal_conv1d_is_causal_and_runs_in_bf16():
    layer = CausalConv1d(kernel_size=4, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 9, 5))
    variables = layer.init(jax.random.key(1), x)
    y = layer.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    y2 = layer.apply(variables, x.at[:, 5].add(1.0))
    changed = np.asarray(jnp.any(y2 != y, axis=(0, 2)))
    np.testing.assert_array_equal(changed, [False] * 5 + [True] * 4)
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConv1d(kernel_size=0).init(jax.random.key(0), x)
