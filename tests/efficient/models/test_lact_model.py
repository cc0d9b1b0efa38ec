"""LaCT LM: parameter counts (760M / 3B inspected, never materialised), the layer against float64
numpy, receptive field by perturbation, initial fast weights for T <= chunk, cached decoding,
gradients, bf16, lowering at 760M, sharding, NNX, config errors."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.lact import LaCT, LaCTConfig, LaCTLayer, sliding_window_attention
from efficient.nn import attention_mask, dot_product_attention
from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_cached_decode_matches_full_forward,
    assert_greedy_generation_matches_argmax_loop,
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE = LaCTConfig.smoke()


def _tokens(B=2, T=12, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, 256, dtype=jnp.int32)


def _init(config, tokens=None):
    tokens = _tokens() if tokens is None else tokens
    model = LaCT(config)
    return model, nn.unbox(model.init(jax.random.key(1), tokens)["params"])


def _count(config) -> int:
    shapes = jax.eval_shape(
        lambda: LaCT(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))


# ---------------------------------------------------------------------------------------------
# Parameter counts


def _hand_count(D, layers, nh, F, V, rank=32):
    """The LM code's modules, counted one by one (layer_lact_swiglu.py, modeling_lact.py)."""
    dk = D // nh
    per_layer = (
        3 * D * D  # qkv Linear(D, 3D), no bias
        + D * D  # o_proj, no bias
        + 2 * D * 2  # qk_scale, qk_offset [D, 2]
        + D * 3 * nh + 3 * nh  # lr_proj Linear(D, 3 nh) with bias
        + D * nh + nh  # ttt_scale_proj Linear(D, nh) with bias
        + D * nh + nh  # momentum_proj Linear(D, nh) with bias
        + dk  # ttt_norm RMSNorm(dk)
        + 2 * nh * (dk * rank + rank * dk)  # w0, w2 LowRankFastWeight (w_left, w_right)
        + nh * dk * dk  # w1 [nh, dk, dk]
        + 3 * D * F  # GatedMLP gate/up/down, no bias
        + 2 * D  # attn_norm, mlp_norm
    )  # fmt: skip
    return V * D + layers * per_layer + D + D * V  # embeddings, final norm, untied lm_head


@pytest.mark.parametrize(
    ("preset", "want"),
    [(LaCTConfig.lm_760m, 797_625_312), (LaCTConfig.lm_3b, 2_982_516_192)],
    ids=["760m", "3b"],
)
def test_paper_presets_parameter_count_without_allocating(preset, want):
    config = preset()
    width, mlp_dim = config.features, config.mlp_dim
    # fla's GatedMLP: F = 256 * ceil(int(D * 4 * 2 / 3) / 256).
    assert mlp_dim == 256 * math.ceil(int(width * 4 * 2 / 3) / 256)
    assert _hand_count(width, 24, 4, mlp_dim, 32_000) == want
    assert config.num_params() == want
    assert _count(config) == want
    # The paper's state size: 0.75 D² fast-weight entries per layer with 4 TTT heads.
    assert config.state_size == 3 * width * width // 4


def test_cpu_small_matches_the_transformer_kjv_size():
    from experiments.transformer import kjv_model

    config = LaCTConfig.cpu_small()
    transformer = kjv_model()
    assert (config.features, config.num_layers, config.num_heads) == (
        transformer.features,
        transformer.num_layers,
        transformer.num_heads,
    )
    assert config.tie_embeddings and config.vocab_size == 256
    assert _count(config) == config.num_params() == 3_470_120
    assert abs(config.num_params() / transformer.num_params() - 1) < 0.002


@pytest.mark.parametrize(
    "overrides",
    [{}, {"fast_weight_rank": None}, {"momentum": False, "tie_embeddings": True},
     {"fast_hidden_dim": 48}],
    ids=["smoke", "full-rank", "no-momentum-tied", "hidden-48"],
)  # fmt: skip
def test_num_params_matches_init(overrides):
    config = dataclasses.replace(SMOKE, **overrides)
    assert _count(config) == config.num_params()


# ---------------------------------------------------------------------------------------------
# float64 numpy reference of one layer, written from the formulas


def _silu(z):
    return z / (1.0 + np.exp(-z))


def _rope64(a, theta):
    """[B, T, H, K] rotate-half RoPE at positions 0..T-1."""
    T, K = a.shape[1], a.shape[-1]
    inv = theta ** (-np.arange(K // 2) * 2.0 / K)
    angles = np.arange(T)[:, None] * inv[None, :]  # [T, K/2]
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    a1, a2 = a[..., : K // 2], a[..., K // 2 :]
    return np.concatenate([a1 * cos - a2 * sin, a2 * cos + a1 * sin], axis=-1)


def _layer64(p, c: LaCTConfig, x):
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(x)
    B, T, D = x.shape
    H, K, nh, dk, w, C = (
        c.num_heads, c.head_dim, c.num_lact_heads, c.lact_head_dim, c.sliding_window, c.chunk_size
    )  # fmt: skip
    q, k, v = (np.einsum("btd,dhk->bthk", x, f(p[n]["kernel"])) for n in ("query", "key", "value"))

    qa, ka = _rope64(q, c.rope_theta), _rope64(k, c.rope_theta)
    logits = np.einsum("bthk,bshk->bhts", qa, ka) / np.sqrt(K)
    t, s = np.arange(T)[:, None], np.arange(T)[None, :]
    logits = np.where((s <= t) & (t - s < w), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = np.einsum("bhts,bshk->bthk", probs, v)

    def l2(a):
        return a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-5)

    scale, offset = f(p["qk_scale"]), f(p["qk_offset"])
    fq = l2(_silu(q * scale[0] + offset[0]).reshape(B, T, nh, dk))
    fk = l2(_silu(k * scale[1] + offset[1]).reshape(B, T, nh, dk))
    fq = _rope64(fq.reshape(B, T, H, K), c.rope_theta).reshape(B, T, nh, dk)
    fk = _rope64(fk.reshape(B, T, H, K), c.rope_theta).reshape(B, T, nh, dk)
    fv = _silu(v).reshape(B, T, nh, dk)

    def dense(name):
        return np.einsum("btd,d...->bt...", x, f(p[name]["kernel"])) + f(p[name]["bias"])

    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    lr = softplus(dense("lr") + c.base_lr + np.log(-np.expm1(-c.base_lr)))  # [B, T, nh, 3]
    beta = 1.0 / (1.0 + np.exp(-dense("momentum")))  # [B, T, nh]
    eye = 0.5 * np.eye(c.resolved_fast_hidden_dim, dk)
    w0 = f(p["w0_left"]) @ f(p["w0_right"]) + eye
    w2 = f(p["w2_left"]) @ f(p["w2_right"]) + eye
    w1 = f(p["w1"])

    out = np.zeros((B, T, nh, dk))
    for b in range(B):
        for h in range(nh):
            W = [w0[h].copy(), w1[h].copy(), w2[h].copy()]
            norms = [np.linalg.norm(m, axis=1, keepdims=True) for m in W]
            M = [np.zeros_like(m) for m in W]
            for lo in range(0, T, C):
                hi = min(lo + C, T)
                qc, kc, vc = fq[b, lo:hi, h], fk[b, lo:hi, h], fv[b, lo:hi, h]
                out[b, lo:hi, h] = (_silu(qc @ W[0].T) * (qc @ W[2].T)) @ W[1].T
                if hi == T:  # the last chunk only applies
                    break
                eta = lr[b, lo:hi, h]
                gate, up = kc @ W[0].T, kc @ W[2].T
                sig = 1.0 / (1.0 + np.exp(-gate))
                back = vc @ W[1]
                grads = [
                    (eta[:, 0:1] * back * up * sig * (1 + gate * (1 - sig))).T @ kc,
                    (eta[:, 1:2] * vc).T @ (_silu(gate) * up),
                    (eta[:, 2:3] * back * _silu(gate)).T @ kc,
                ]
                mean_beta = beta[b, lo:hi, h].mean()
                for j in range(3):
                    M[j] = mean_beta * M[j] + grads[j]
                    W[j] = W[j] + M[j]
                    W[j] = W[j] / (np.linalg.norm(W[j], axis=1, keepdims=True) + 1e-5) * norms[j]
    rms = np.sqrt(np.mean(out**2, axis=-1, keepdims=True) + c.ttt_norm_eps)
    gate = _silu(dense("gate"))[..., None]  # [B, T, nh, 1]
    ttt = (out / rms * f(p["ttt_norm"]["scale"]) * gate).reshape(B, T, H, K)
    return np.einsum("bthk,hkd->btd", attended + ttt, f(p["out"]["kernel"]))


@pytest.mark.parametrize("T", [40, 48])  # a remainder; a last full chunk (apply only)
def test_layer_against_float64_reference(T):
    # base_lr 0.2 (not 1e-3) so that the updates move the fast weights visibly; random biases
    # and offsets so that every path carries signal.
    config = dataclasses.replace(SMOKE, base_lr=0.2)
    layer = LaCTLayer(config)
    x = jax.random.normal(jax.random.key(0), (2, T, config.features))
    params = nn.unbox(layer.init(jax.random.key(1), x)["params"])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(
        tree, [a + 0.1 * jax.random.normal(kk, a.shape) for a, kk in zip(leaves, keys, strict=True)]
    )
    got = jax.jit(lambda p: layer.apply({"params": p}, x))(params)
    want = _layer64(params, config, x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize(("T", "window"), [(37, 8), (16, 8), (5, 8), (24, 1)])
def test_blocked_sliding_window_equals_the_masked_form(T, window):
    q, k, v = (
        jax.random.normal(kk, (2, T, 4, 16)) for kk in jax.random.split(jax.random.key(0), 3)
    )
    slots = jnp.broadcast_to(jnp.arange(T), (2, T))
    mask = attention_mask(slots, slots, causal=True, sliding_window=window)
    want = jax.jit(lambda *a: dot_product_attention(*a, mask=mask))(q, k, v)
    got = jax.jit(lambda *a: sliding_window_attention(*a, window=window))(q, k, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_initial_fast_weights_follow_the_lm_code():
    """One 760M layer (10M parameters): the LM code's init (layer_lact_swiglu.py,
    modeling_lact.py `_init_weights`)."""
    config = LaCTConfig.lm_760m()
    x = jnp.zeros((1, 4, config.features), jnp.bfloat16)
    p = nn.unbox(LaCTLayer(config).init(jax.random.key(0), x)["params"])
    rank, dk = 32, 384
    assert p["w0_left"].shape == (4, dk, rank) and p["w0_right"].shape == (4, rank, dk)
    for name, std in [
        ("w0_left", 0.5 / math.sqrt(rank)),
        ("w2_right", 0.5 / math.sqrt(dk)),
        ("w1", 1.0 / math.sqrt(dk)),
    ]:
        np.testing.assert_allclose(float(jnp.std(p[name])), std, rtol=0.03)
    np.testing.assert_allclose(float(jnp.std(p["query"]["kernel"])), 0.02, rtol=0.01)
    np.testing.assert_array_equal(np.asarray(p["qk_scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(p["qk_offset"]), 0.0)
    for name in ("lr", "momentum", "gate"):
        np.testing.assert_array_equal(np.asarray(p[name]["bias"]), 0.0)


# ---------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize("T", [5, 16, 41])
def test_shapes_and_finite_logits(T):
    model, params = _init(SMOKE)
    logits = jax.jit(lambda p, t: model.apply({"params": p}, t))(params, _tokens(T=T))
    assert logits.shape == (2, T, 256) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_receptive_field_by_perturbation():
    """Token t reaches s >= t through L layers of window w (s - t <= L (w - 1)) and, through the
    fast weights, every later chunk; nothing else — in particular nothing before t."""
    L, w, C, T = 2, 3, 8, 40
    config = dataclasses.replace(SMOKE, num_layers=L, sliding_window=w, chunk_size=C, base_lr=0.5)
    model, params = _init(config)
    apply = jax.jit(lambda t: model.apply({"params": params}, t))
    tokens = _tokens(T=T)
    logits = apply(tokens)
    for t in (1, 9, 20):
        changed = apply(tokens.at[:, t].set((tokens[:, t] + 1) % 256))
        diff = np.asarray(jnp.max(jnp.abs(changed - logits), axis=(0, 2)))  # [T]
        s = np.arange(T)
        reach = (s >= t) & ((s - t <= L * (w - 1)) | (s // C > t // C))
        assert np.all(diff[~reach] == 0.0), (t, diff)
        assert np.all(diff[reach] > 1e-6), (t, diff)


def test_short_sequences_use_the_initial_fast_weights():
    """T <= chunk: the last chunk only applies, so the model equals its frozen-fast-weight twin;
    beyond one chunk the two agree before position C and differ from C on."""
    C = SMOKE.chunk_size
    model, params = _init(SMOKE)
    frozen = LaCT(dataclasses.replace(SMOKE, update_fast_weights=False))
    for T in (7, C):
        tokens = _tokens(T=T)
        np.testing.assert_allclose(
            np.asarray(model.apply({"params": params}, tokens)),
            np.asarray(frozen.apply({"params": params}, tokens)),
            rtol=1e-6,
            atol=1e-6,
        )
    tokens = _tokens(T=2 * C + 3)
    a = model.apply({"params": params}, tokens)
    b = frozen.apply({"params": params}, tokens)
    diff = np.asarray(jnp.max(jnp.abs(a - b), axis=(0, 2)))
    assert np.all(diff[:C] == 0.0)
    assert np.all(diff[C:] > 0.0)


def test_cached_decode_matches_full_forward():
    # Without Muon: its bfloat16 Newton-Schulz turns last-bit differences between the prefill's
    # and the full forward's projections into ~1e-2 changes (as the LM code would).
    model, params = _init(SMOKE)
    assert_cached_decode_matches_full_forward(
        model, params, _tokens(T=41), prefill=20, cache_len=48
    )


def test_greedy_generation_matches_uncached_argmax_loop():
    model, params = _init(SMOKE)
    assert_greedy_generation_matches_argmax_loop(model, params, _tokens(T=13), 7)  # crosses C = 16


@pytest.mark.parametrize("muon", [False, True], ids=["momentum", "muon"])
def test_jit_grad_is_finite_reaches_every_parameter_and_remat_agrees(muon):
    # T = 56 = 3 chunks + 8: three updates, so momentum (which acts from the second) matters.
    config = dataclasses.replace(SMOKE, muon=muon)
    tokens = _tokens(T=56)
    model, params = _init(config, tokens)

    def loss(m):
        return lambda p: jnp.mean(jax.nn.log_softmax(m.apply({"params": p}, tokens))[..., 0])

    grads = jax.jit(jax.grad(loss(model)))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.max(jnp.abs(g))) > 0.0, path
    if not muon:  # Muon's bfloat16 steps amplify the last-bit differences remat may introduce
        remat = LaCT(dataclasses.replace(config, remat=True))
        again = jax.jit(jax.grad(loss(remat)))(params)
        for x, y in zip(jax.tree.leaves(grads), jax.tree.leaves(again), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_bf16_compute_runs_close_to_f32():
    tokens = _tokens(T=40)
    model, params = _init(SMOKE, tokens)
    f32 = jax.jit(lambda p: model.apply({"params": p}, tokens))(params)
    bf16_model = LaCT(dataclasses.replace(SMOKE, dtype=jnp.bfloat16))

    def bf16_logits(p):
        return bf16_model.apply({"params": p}, tokens)

    bf16 = jax.jit(bf16_logits)(params)
    assert bf16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.05, err
    grads = jax.jit(jax.grad(lambda p: bf16_logits(p).astype(jnp.float32).sum()))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_760m_lowers_on_shape_structs_without_allocating():
    """The paper's 760M at T = 4096 (two chunks: one update, then apply-only): abstract
    parameters from `jax.eval_shape`, lowered (not compiled) for the loss and its gradient."""
    config = LaCTConfig.lm_760m()
    model = LaCT(config)
    tokens = jax.ShapeDtypeStruct((1, 4096), jnp.int32)
    params = nn.unbox(jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens))

    def loss(p, t):
        return jnp.mean(model.apply(p, t).astype(jnp.float32))

    lowered = jax.jit(jax.value_and_grad(loss)).lower(params, tokens)
    assert "stablehlo.while" in lowered.as_text()  # the chunk scan
    out = jax.eval_shape(lambda p, t: model.apply(p, t), params, tokens)
    assert out.shape == (1, 4096, 32_000) and out.dtype == jnp.bfloat16


def test_sharded_forward_equals_unsharded():
    model = LaCT(SMOKE)
    tokens = _tokens(B=4, T=40)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), tokens))
    assert_logically_annotated(abstract)
    params = nn.unbox(model.init(jax.random.key(1), tokens))
    want = model.apply(params, tokens)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, logical_to_sharding(abstract, mesh))
    layer = sharded["params"]["layer_0"]["lact"]
    assert layer["query"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor", None
    )
    assert layer["w1"].sharding.spec == jax.sharding.PartitionSpec("tensor", None, None)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda v: model.apply(v, tokens))(sharded)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    assert_nnx_bridge_matches_linen(LaCT(SMOKE), _tokens(T=20))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_heads": 5}, "num_heads"),
        ({"num_lact_heads": 3}, "num_lact_heads"),
        ({"num_heads": 64}, "even"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"fast_weight_rank": 0}, "fast_weight_rank"),
        ({"base_lr": 0.0}, "base_lr"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SMOKE, **overrides)
