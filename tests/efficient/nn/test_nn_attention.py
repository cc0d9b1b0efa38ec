"""Attention against float64 numpy; masks, RoPE, GQA and the KV cache by their invariants."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn import MultiHeadAttention, attention_mask, dot_product_attention, rope


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


def _f32(a):
    return jnp.asarray(a, jnp.float32)


def _gqa_numpy(q, k, v, mask=None, cap=None):
    """float64 GQA: repeat each KV head for its H / G query heads, then plain attention."""
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if cap is not None:
        logits = cap * np.tanh(logits / cap)
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", weights, v)


@pytest.mark.parametrize("kv_heads", [1, 2, 6])
@pytest.mark.parametrize("cap", [None, 2.0])
def test_grouped_query_attention_matches_repeated_kv(kv_heads, cap):
    rng = np.random.default_rng(kv_heads)
    q = rng.normal(size=(2, 5, 6, 4)) * 2
    k, v = (rng.normal(size=(2, 7, kv_heads, 4)) * 2 for _ in range(2))
    mask = rng.random((2, 6, 5, 7)) > 0.3
    mask[..., 0] = True
    got = jax.jit(lambda *a: dot_product_attention(*a[:3], mask=a[3], logit_soft_cap=cap))(
        _f32(q), _f32(k), _f32(v), jnp.asarray(mask)
    )
    want = _gqa_numpy(q, k, v, mask, cap)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_gqa_with_g_equal_h_is_multi_head_attention():
    """G = H takes the same path as the original per-head attention (no regrouping)."""
    rng = np.random.default_rng(3)
    q, k, v = (_f32(rng.normal(size=(2, n, 4, 8))) for n in (5, 6, 6))
    got = dot_product_attention(q, k, v)
    want = _attention_numpy(*(np.asarray(a, np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_jax_implementation_matches_einsum():
    rng = np.random.default_rng(4)
    q = _f32(rng.normal(size=(2, 5, 4, 8)))
    k, v = (_f32(rng.normal(size=(2, 5, 2, 8))) for _ in range(2))
    mask = attention_mask(*(jnp.broadcast_to(jnp.arange(5), (2, 5)),) * 2, causal=True)
    a = dot_product_attention(q, k, v, mask=mask)
    b = dot_product_attention(q, k, v, mask=mask, implementation="jax")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logit_soft_cap"):
        dot_product_attention(q, k, v, logit_soft_cap=1.0, implementation="jax")


def test_dot_product_attention_rejects_bad_groups():
    q = jnp.zeros((1, 2, 6, 4))
    with pytest.raises(ValueError, match="must divide"):
        dot_product_attention(q, jnp.zeros((1, 2, 4, 4)), jnp.zeros((1, 2, 4, 4)))


def test_rope_relative_position_property():
    """<rope(q, m), rope(k, n)> depends on m - n only; and rope preserves norms."""
    rng = np.random.default_rng(5)
    q, k = (_f32(rng.normal(size=(1, 1, 1, 16))) for _ in range(2))

    def score(m, n):
        rq = rope(q, jnp.full((1, 1), m, jnp.int32), theta=10_000.0)
        rk = rope(k, jnp.full((1, 1), n, jnp.int32), theta=10_000.0)
        return float(jnp.sum(rq * rk))

    for m, n in [(3, 1), (10, 8), (1002, 1000)]:
        np.testing.assert_allclose(score(m, n), score(2, 0), rtol=1e-4, atol=1e-4)
    assert abs(score(5, 0) - score(2, 0)) > 1e-3  # and it does depend on the offset
    x = rope(q, jnp.full((1, 1), 77, jnp.int32), theta=10_000.0)
    np.testing.assert_allclose(float(jnp.linalg.norm(x)), float(jnp.linalg.norm(q)), rtol=1e-5)


def test_rope_matches_numpy_rotate_half():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 2, 8))
    pos = np.array([[0, 5, 9], [1, 2, 300]])
    half = 4
    inv = 1e6 ** (-np.arange(half) * 2.0 / 8)
    ang = pos[..., None, None] * inv  # [B, T, 1, K/2]
    x1, x2 = x[..., :half], x[..., half:]
    want = np.concatenate(
        [x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1
    )
    got = rope(_f32(x), jnp.asarray(pos, jnp.int32), theta=1e6)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _self_attention(**kwargs):
    layer = MultiHeadAttention(
        num_heads=4, head_dim=8, num_kv_heads=2, rope_theta=10_000.0, causal=True, **kwargs
    )
    x = jax.random.normal(jax.random.key(0), (2, 10, 16))
    return layer, layer.init(jax.random.key(1), x), x


def _influence(layer, variables, x, t):
    """Which output positions change when input token t changes."""
    y = layer.apply(variables, x)
    x2 = x.at[:, t].add(1.0)
    y2 = layer.apply(variables, x2)
    return np.asarray(jnp.any(jnp.abs(y2 - y) > 1e-6, axis=(0, 2)))


def test_causal_self_attention_by_perturbation():
    layer, variables, x = _self_attention()
    for t in (0, 4, 9):
        changed = _influence(layer, variables, x, t)
        assert not changed[:t].any()
        assert changed[t:].all()


def test_sliding_window_hides_old_tokens():
    window = 3
    layer, variables, x = _self_attention(sliding_window=window)
    changed = _influence(layer, variables, x, 2)
    expected = np.zeros(10, bool)
    expected[2 : 2 + window] = True  # seen by queries 2, 3, 4 only
    np.testing.assert_array_equal(changed, expected)


def test_cross_attention_padding_has_no_effect():
    layer = MultiHeadAttention(num_heads=4, head_dim=8, num_kv_heads=2)
    rng = np.random.default_rng(7)
    x, context = _f32(rng.normal(size=(2, 5, 16))), _f32(rng.normal(size=(2, 6, 12)))
    kv_mask = jnp.asarray([[True] * 6, [True] * 3 + [False] * 3])
    variables = layer.init(jax.random.key(0), x, context, kv_mask=kv_mask)
    y = layer.apply(variables, x, context, kv_mask=kv_mask)
    noisy = context.at[1, 3:].set(100.0)
    y2 = layer.apply(variables, x, noisy, kv_mask=kv_mask)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    # and the padded row equals attending to its real tokens alone
    alone = layer.apply(variables, x[1:], context[1:, :3])
    np.testing.assert_allclose(np.asarray(y[1:]), np.asarray(alone), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [None, 4])
def test_kv_cache_decode_matches_full_forward(window):
    layer, variables, x = _self_attention(sliding_window=window)
    full = layer.apply(variables, x)
    init = layer.init(jax.random.key(1), jnp.zeros((2, 12, 16)), decode=True)
    cache = jax.tree.map(jnp.zeros_like, init["cache"])
    outs = []
    for chunk in (slice(0, 4), slice(4, 5), slice(5, 7), *[slice(t, t + 1) for t in range(7, 10)]):
        y, mutated = layer.apply(
            {**variables, "cache": cache}, x[:, chunk], decode=True, mutable=["cache"]
        )
        cache = mutated["cache"]
        outs.append(y)
    assert int(cache["cache_index"]) == 10
    got = jnp.concatenate(outs, axis=1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_attention_config_errors():
    layer = MultiHeadAttention(num_heads=4, head_dim=8, num_kv_heads=3)
    with pytest.raises(ValueError, match="num_kv_heads"):
        layer.init(jax.random.key(0), jnp.zeros((1, 2, 8)))
    layer = MultiHeadAttention(num_heads=4, head_dim=8)
    with pytest.raises(ValueError, match="decode"):
        layer.init(jax.random.key(0), jnp.zeros((1, 2, 8)), jnp.zeros((1, 3, 8)), decode=True)


def test_attention_dropout_drops_probabilities_only_in_training(key):
    kq, kk, kv, kd = jax.random.split(key, 4)
    q = jax.random.normal(kq, (2, 5, 2, 8))
    k = jax.random.normal(kk, (2, 7, 2, 8))
    v = jax.random.normal(kv, (2, 7, 2, 8))
    plain = dot_product_attention(q, k, v)
    np.testing.assert_array_equal(plain, dot_product_attention(q, k, v, dropout_rate=0.5))
    # With v = one-hot rows the output is the (dropped, rescaled) probability rows themselves.
    eye = jnp.broadcast_to(jnp.eye(7, 8), (2, 2, 7, 8)).transpose(0, 2, 1, 3)
    probs = dot_product_attention(q, k, eye)[..., :7]
    dropped = dot_product_attention(q, k, eye, dropout_rate=0.5, dropout_rng=kd)[..., :7]
    zero = np.asarray(dropped) == 0
    assert 0.3 < zero.mean() < 0.7
    np.testing.assert_allclose(np.asarray(dropped)[~zero], 2 * np.asarray(probs)[~zero], rtol=1e-5)
    with pytest.raises(ValueError, match="dropout_rate"):
        dot_product_attention(q, k, v, dropout_rate=1.0, dropout_rng=kd)

    layer = MultiHeadAttention(num_heads=2, head_dim=8, dropout_rate=0.3)
    x = jax.random.normal(kq, (2, 5, 16))
    params = layer.init(key, x)
    eval_out = layer.apply(params, x)
    np.testing.assert_array_equal(eval_out, layer.apply(params, x, deterministic=True))
    train_out = layer.apply(params, x, deterministic=False, rngs={"dropout": kd})
    assert not np.allclose(train_out, eval_out)
