"""dot_product_attention and MultiHeadAttention against float64 numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficient.nn import MultiHeadAttention, dot_product_attention


def _attention_numpy(q, k, v, mask=None):
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", weights, v)


def test_dot_product_attention_matches_numpy_with_mask():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, n, 3, 4)) for n in (5, 7, 7))
    mask = rng.random((2, 1, 5, 7)) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    got = jax.jit(lambda q, k, v, m: dot_product_attention(q, k, v, mask=m))(
        f32(q), f32(k), f32(v), jnp.asarray(mask)
    )
    np.testing.assert_allclose(
        np.asarray(got), _attention_numpy(q, k, v, mask), rtol=1e-5, atol=1e-5
    )


def test_multi_head_attention_matches_numpy_and_axis_names():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 8))
    context = rng.normal(size=(2, 4, 10))
    layer = MultiHeadAttention(num_heads=2, head_dim=3, features=5)
    shapes = jax.eval_shape(
        lambda: layer.init(jax.random.key(0), jnp.zeros(x.shape), jnp.zeros(context.shape))
    )["params"]
    assert shapes["query"]["kernel"].names == ("embed", "heads", "head_dim")
    assert shapes["out"]["kernel"].names == ("heads", "head_dim", "embed")
    params = jax.tree.map(lambda s: rng.normal(size=s.shape), nn.meta.unbox(shapes))
    got = jax.jit(layer.apply)(
        {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)},
        jnp.asarray(x, jnp.float32),
        jnp.asarray(context, jnp.float32),
    )

    def project(name, inputs):
        return np.einsum("btd,dhk->bthk", inputs, params[name]["kernel"]) + params[name]["bias"]

    o = _attention_numpy(project("query", x), project("key", context), project("value", context))
    want = np.einsum("bthk,hkf->btf", o, params["out"]["kernel"]) + params["out"]["bias"]
    assert got.shape == (2, 6, 5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_multi_head_attention_bf16():
    layer = MultiHeadAttention(num_heads=2, head_dim=4, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    variables = layer.init(jax.random.key(1), x)
    y = layer.apply(variables, x)
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 5, 8)
    assert bool(jnp.all(jnp.isfinite(y)))
