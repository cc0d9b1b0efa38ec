"""Slow-Fast MLLM: the token pipeline against numpy loops, the hybrid layer against a float64
numpy layer, the exactness properties of the paper's design (alpha = 0, masks, text-only
samples, visual positions), the released configs' token counts, linear cross-attention cost,
sharding, NNX, errors."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.bench.harness import cost_stats
from efficient.models.slowfast_mllm import (
    SlowFastConfig,
    SlowFastDecoder,
    SlowFastMLLM,
    TokenPipelineConfig,
    fast_tokens,
    load_llm_params,
    sample_fast_frames,
    slow_tokens,
)
from efficient.models.slowfast_mllm.model import HybridAttention
from efficient.models.transformer import Transformer
from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE = SlowFastConfig.smoke()


def _tokens(B=2, L=10, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, L), 0, 256, dtype=jnp.int32)


def _frames(config=SMOKE, B=2, seed=1):
    v = config.vision
    shape = (B, config.tokens.num_frames, v.image_size, v.image_size, v.in_channels)
    return jax.random.normal(jax.random.key(seed), shape)


def _with_alpha(params, value):
    """Set every hybrid layer's alpha (and leave the rest)."""

    def set_alpha(path, x):
        return jnp.full_like(x, value) if path[-1].key == "alpha" else x

    return jax.tree_util.tree_map_with_path(set_alpha, params)


# ---------------------------------------------------------------------------- token pipeline


def _np_fast_tokens(x: np.ndarray, t: TokenPipelineConfig) -> np.ndarray:
    """The released split_slow_fast_tokens, one sample at a time, as loops over frames."""
    out = []
    for sample in x:  # [F, g, g, D]
        step = t.temporal_sampling_stride * t.temporal_pool
        if len(sample) % step:
            pad = np.zeros((step - len(sample) % step, *sample.shape[1:]), sample.dtype)
            sample = np.concatenate([sample, pad])
        if t.temporal_sampling_stride > 1:
            idx = sample_fast_frames(len(sample), t.temporal_sampling_stride, t.min_fast_frames)
            sample = sample[idx]
        p = t.temporal_pool
        if p > 1:
            n = len(sample)
            if n // p >= t.min_fast_frames:
                sample = np.stack([sample[i * p : (i + 1) * p].mean(0) for i in range(n // p)])
            else:
                m = min(n, t.min_fast_frames)
                sample = np.stack(
                    [sample[(i * n) // m : -(-((i + 1) * n) // m)].mean(0) for i in range(m)]
                )
        k = t.spatial_pool
        F, g, _, D = sample.shape
        pooled = np.zeros((F, g // k, g // k, D))
        for i in range(g // k):
            for j in range(g // k):
                pooled[:, i, j] = sample[:, i * k : (i + 1) * k, j * k : (j + 1) * k].mean((1, 2))
        out.append(pooled.reshape(-1, D))
    return np.stack(out)


@pytest.mark.parametrize(
    "tokens",
    [
        TokenPipelineConfig.frames64(),
        TokenPipelineConfig.frames96(),
        TokenPipelineConfig.frames128(),
        TokenPipelineConfig.frames16(),
        # zero padding (F = 20 is not a multiple of 2 x 4) and the adaptive-pool fallback
        TokenPipelineConfig(num_frames=20, temporal_sampling_stride=2, temporal_pool=4),
        # spatial pooling of the fast tokens; 5 frames with pool 2: padded to 6
        TokenPipelineConfig(num_frames=5, temporal_pool=2, spatial_pool=2, min_fast_frames=2),
    ],
    ids=["64f", "96f", "128f", "16f", "pad+adaptive", "spatial"],
)
def test_fast_tokens_match_numpy(tokens):
    x = np.random.default_rng(0).standard_normal((2, tokens.num_frames, 4, 4, 3))
    got = fast_tokens(jnp.asarray(x, jnp.float32), tokens)
    want = _np_fast_tokens(x, tokens)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_sample_fast_frames_is_the_released_rule():
    assert sample_fast_frames(128, 2, 16) == list(range(0, 128, 2))
    assert sample_fast_frames(20, 2, 16) == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18]
    assert sample_fast_frames(10, 2, 16) == list(range(10))  # fewer than the minimum: all


def test_released_configs_token_counts():
    """81 tokens per frame, 16 fast frames = 1296 fast tokens; 5184 / 7776 / 10368 slow."""
    for frames, slow in ((64, 5184), (96, 7776), (128, 10368)):
        c = SlowFastConfig.qwen2_7b(frames)
        assert c.tokens_per_frame == 81
        assert c.num_fast_frames == 16
        assert c.num_fast_tokens == 1296
        assert c.num_slow_tokens == slow
        assert c.hybrid_layers == (0, 8, 16, 24)
        maps = jax.ShapeDtypeStruct((1, frames, 9, 9, 8), jnp.float32)
        assert jax.eval_shape(lambda m, c=c: fast_tokens(m, c.tokens), maps).shape == (1, 1296, 8)
        slow_shape = jax.eval_shape(slow_tokens, maps)[0].shape
        assert slow_shape == (1, slow, 8)
    # The "all frames in the LLM input" alternative: 128 x 81.
    c = SlowFastConfig.qwen2_7b(128, tokens=TokenPipelineConfig.all_fast(128))
    assert c.num_fast_tokens == 10368


def test_slow_tokens_mask_padding_frames():
    maps = jnp.arange(2 * 3 * 2 * 2 * 1, dtype=jnp.float32).reshape(2, 3, 2, 2, 1)
    slow, mask = slow_tokens(maps, jnp.array([[True, True, False], [True, True, True]]))
    assert slow.shape == (2, 12, 1)
    np.testing.assert_array_equal(np.asarray(slow[0, 4:8, 0]), [4, 5, 6, 7])  # frame-major
    np.testing.assert_array_equal(np.asarray(mask[0]), [True] * 8 + [False] * 4)
    assert bool(mask[1].all())


# ---------------------------------------------------------------------------- hybrid layer


def _np_rope(x, positions, theta):
    K = x.shape[-1]
    inv = theta ** (-np.arange(K // 2) * 2.0 / K)
    ang = positions[:, :, None, None] * inv
    x1, x2 = x[..., : K // 2], x[..., K // 2 :]
    return np.concatenate(
        [x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1
    )


def _np_attend(q, k, v, mask):
    """q [B, T, H, K], k/v [B, S, G, K] (GQA), mask [B, T, S] -> [B, T, H, K], float64."""
    H, G = q.shape[2], k.shape[2]
    k, v = np.repeat(k, H // G, axis=2), np.repeat(v, H // G, axis=2)
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", w, v)


def _np_hybrid_attention(p, x, slow, slow_mask, query_mask, c):
    """The released hybrid attention (text-only-vanilla, whole-dynamic-tanh-warmup), float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    B, T, _ = x.shape
    pos = np.broadcast_to(np.arange(T), (B, T))
    q = _np_rope(np.einsum("btd,dhk->bthk", x, p["query"]["kernel"]), pos, c.rope_theta)
    k = _np_rope(np.einsum("btd,dhk->bthk", x, p["key"]["kernel"]), pos, c.rope_theta)
    v = np.einsum("btd,dhk->bthk", x, p["value"]["kernel"])
    causal = np.broadcast_to(np.tril(np.ones((T, T), bool)), (B, T, T))
    a = _np_attend(q, k, v, causal)
    ks = np.einsum("bsd,dhk->bshk", slow, p["cross_key"]["kernel"]) + p["cross_key"]["bias"]
    vs = np.einsum("bsd,dhk->bshk", slow, p["cross_value"]["kernel"]) + p["cross_value"]["bias"]
    ca = _np_attend(q, ks, vs, np.broadcast_to(slow_mask[:, None, :], (B, T, slow.shape[1])))
    g = np.tanh(a.reshape(B, T, -1) @ p["gate"]["kernel"] + p["gate"]["bias"]) * np.tanh(p["alpha"])
    reads = query_mask & slow_mask.any(-1, keepdims=True)
    a = a + np.where(reads[:, :, None, None], g[..., None] * ca, 0.0)
    return np.einsum("bthk,hkd->btd", a, p["out"]["kernel"])


def test_hybrid_attention_matches_float64_numpy():
    c = SMOKE.llm
    B, T, S, D = 2, 7, 9, c.features
    rng = np.random.default_rng(0)
    x, slow = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    slow_mask = np.ones((B, S), bool)
    slow_mask[1, 5:] = False  # padding
    query_mask = np.array([[False] * 3 + [True] * 4, [False] * 2 + [True] * 5])
    layer = HybridAttention(c)
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(slow, jnp.float32))
    kw = dict(
        positions=jnp.broadcast_to(jnp.arange(T), (B, T)),
        slow_mask=jnp.asarray(slow_mask),
        query_mask=jnp.asarray(query_mask),
    )
    params = nn.unbox(layer.init(jax.random.key(0), *args, **kw))["params"]
    params = _with_alpha(params, 0.7)
    # Random cross KV and gate (init copies K/V), so the test sees them used.
    keys = iter(jax.random.split(jax.random.key(1), 8))
    for name in ("cross_key", "cross_value", "gate"):
        params[name] = jax.tree.map(
            lambda a: 0.3 * jax.random.normal(next(keys), a.shape), params[name]
        )
    want = _np_hybrid_attention(params, x, slow, slow_mask, query_mask, c)
    # cross_from = 2: the queries of positions 0, 1 (not text in either sample) are skipped.
    for cross_from in (0, 2):
        with jax.default_matmul_precision("highest"):
            got = layer.apply({"params": params}, *args, **kw, cross_from=cross_from)
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="cross_from=7"):
        layer.apply({"params": params}, *args, **kw, cross_from=7)


def _decoder_params(config=SMOKE, seed=0):
    tokens = _tokens()
    return nn.unbox(SlowFastDecoder(config).init(jax.random.key(seed), tokens))["params"]


def test_cross_kv_starts_as_the_layer_own_kv():
    params = nn.unbox(SlowFastMLLM(SMOKE).init(jax.random.key(0), _frames(), _tokens()))["params"][
        "llm"
    ]
    for i in SMOKE.hybrid_layers:
        att = params[f"layer_{i}"]["attention"]
        np.testing.assert_array_equal(att["cross_key"]["kernel"], att["key"]["kernel"])
        np.testing.assert_array_equal(att["cross_value"]["kernel"], att["value"]["kernel"])
        assert float(att["alpha"]) == 0.0
    # A Qwen2-style LLM with qkv biases: the biases are copied too.
    config = dataclasses.replace(SMOKE, llm=dataclasses.replace(SMOKE.llm, qkv_bias=True))
    params = _decoder_params(config)
    att = params["layer_0"]["attention"]
    att_bias = jax.random.normal(jax.random.key(3), att["key"]["bias"].shape)
    tv = nn.unbox(Transformer(config.llm).init(jax.random.key(4), _tokens()))["params"]
    tv["layer_0"]["attention"]["key"]["bias"] = att_bias
    loaded = load_llm_params(params, tv, config)
    np.testing.assert_array_equal(loaded["layer_0"]["attention"]["cross_key"]["bias"], att_bias)


def test_alpha_zero_equals_the_base_llm_exactly():
    """A trained LLM loaded into the hybrid decoder: at alpha = 0 the logits are bit-identical,
    with or without slow tokens."""
    tokens = _tokens()
    llm = nn.unbox(Transformer(SMOKE.llm).init(jax.random.key(5), tokens))["params"]
    params = load_llm_params(_decoder_params(), llm, SMOKE)
    want = np.asarray(Transformer(SMOKE.llm).apply({"params": llm}, tokens))
    decoder = SlowFastDecoder(SMOKE)
    slow = jax.random.normal(jax.random.key(6), (2, 11, SMOKE.llm.features))
    for kwargs in ({}, {"slow": slow}):
        got = np.asarray(decoder.apply({"params": params}, tokens, **kwargs))
        np.testing.assert_array_equal(got, want)


def test_alpha_zero_mllm_equals_fast_only_baseline():
    frames, tokens = _frames(), _tokens()
    params = nn.unbox(SlowFastMLLM(SMOKE).init(jax.random.key(0), frames, tokens))["params"]
    fast_only = dataclasses.replace(SMOKE, hybrid=False)
    shared = nn.unbox(SlowFastMLLM(fast_only).init(jax.random.key(0), frames, tokens))["params"]
    shared = jax.tree.map(lambda a: a + 0.0, shared)
    for i in SMOKE.hybrid_layers:  # the fast-only model's weights in the hybrid model
        for name, value in shared["llm"][f"layer_{i}"]["attention"].items():
            params["llm"][f"layer_{i}"]["attention"][name] = value
    for key in shared["llm"]:
        if key not in {f"layer_{i}" for i in SMOKE.hybrid_layers}:
            params["llm"][key] = shared["llm"][key]
    params["frames"] = shared["frames"]
    got = SlowFastMLLM(SMOKE).apply({"params": params}, frames, tokens)
    want = SlowFastMLLM(fast_only).apply({"params": shared}, frames, tokens)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # ... and with alpha != 0 the slow tokens do change the answer.
    moved = SlowFastMLLM(SMOKE).apply({"params": _with_alpha(params, 0.5)}, frames, tokens)
    assert float(jnp.max(jnp.abs(moved - want))) > 1e-4


def _mllm_params(seed=0, alpha=0.8):
    params = nn.unbox(SlowFastMLLM(SMOKE).init(jax.random.key(seed), _frames(), _tokens()))
    return _with_alpha(params["params"], alpha)


def test_padded_slow_tokens_change_nothing():
    decoder, params = SlowFastDecoder(SMOKE), _with_alpha(_decoder_params(), 0.9)
    tokens = _tokens()
    slow = jax.random.normal(jax.random.key(7), (2, 6, SMOKE.llm.features))
    junk = 100.0 * jax.random.normal(jax.random.key(8), (2, 5, SMOKE.llm.features))
    mask = jnp.concatenate([jnp.ones((2, 6), bool), jnp.zeros((2, 5), bool)], 1)
    want = decoder.apply({"params": params}, tokens, slow=slow)
    got = decoder.apply(
        {"params": params}, tokens, slow=jnp.concatenate([slow, junk], 1), slow_mask=mask
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_visual_positions_receive_no_cross_attention():
    c = SMOKE.llm
    B, T, S = 2, 8, 5
    x = jax.random.normal(jax.random.key(0), (B, T, c.features))
    slow = jax.random.normal(jax.random.key(1), (B, S, c.features))
    kw = dict(positions=jnp.broadcast_to(jnp.arange(T), (B, T)), slow_mask=jnp.ones((B, S), bool))
    layer = HybridAttention(c)
    text = jnp.arange(T)[None, :].repeat(B, 0) >= 3  # positions 0..2 visual, 3.. text
    params = nn.unbox(layer.init(jax.random.key(2), x, slow, query_mask=text, **kw))
    params = {"params": _with_alpha(params["params"], 0.9)}
    with_cross = layer.apply(params, x, slow, query_mask=text, **kw)
    without = layer.apply(params, x, slow, query_mask=jnp.zeros((B, T), bool), **kw)
    np.testing.assert_array_equal(np.asarray(with_cross[:, :3]), np.asarray(without[:, :3]))
    # Every text position is moved (exactly zero change would mean it read nothing).
    assert bool(jnp.all(jnp.max(jnp.abs(with_cross[:, 3:] - without[:, 3:]), -1) > 0))
    # ... and the visual positions are blind to the slow tokens' values.
    other = layer.apply(params, x, 2.0 * slow, query_mask=text, **kw)
    np.testing.assert_array_equal(np.asarray(other[:, :3]), np.asarray(with_cross[:, :3]))


def test_text_only_sample_ignores_slow_tokens():
    """A sample whose slow tokens are all padding (no video) gets exactly the no-slow output,
    also inside a batch where the other sample has a video."""
    decoder, params = SlowFastDecoder(SMOKE), _with_alpha(_decoder_params(), 0.9)
    tokens = _tokens()
    slow = jax.random.normal(jax.random.key(9), (2, 6, SMOKE.llm.features))
    mask = jnp.array([[True] * 6, [False] * 6])
    got = decoder.apply({"params": params}, tokens, slow=slow, slow_mask=mask)
    alone = decoder.apply({"params": params}, tokens[1:])
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(alone[0]), rtol=1e-6, atol=1e-6)
    with_video = decoder.apply({"params": params}, tokens[:1], slow=slow[:1])
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(with_video[0]), rtol=1e-6, atol=1e-6)


def test_gradients_reach_alpha_first_then_the_cross_attention():
    """At alpha = 0 only alpha gets a gradient from the slow path (tanh(0) = 0 blocks the rest);
    once alpha != 0, the cross KV and the gate learn too."""
    frames, tokens = _frames(), _tokens()
    model = SlowFastMLLM(SMOKE)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, frames, tokens) ** 2)

    for alpha, cross_moves in ((0.0, False), (0.5, True)):
        grads = jax.grad(loss)(_mllm_params(alpha=alpha))["llm"]["layer_0"]["attention"]
        assert float(jnp.abs(grads["alpha"])) > 0
        for name in ("cross_key", "cross_value", "gate"):
            size = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[name]))
            assert (size > 0) == cross_moves, (alpha, name, size)


def test_cross_attention_cost_is_linear_in_slow_tokens():
    """XLA's FLOP count of the decoder grows by the same amount for each added block of slow
    tokens (the KV projection and the attention are both linear in S)."""
    decoder = SlowFastDecoder(SMOKE)
    params = _decoder_params()
    tokens = _tokens(L=16)

    def flops(S):
        slow = jax.ShapeDtypeStruct((2, S, SMOKE.llm.features), jnp.float32)
        fn = jax.jit(lambda p, t, s: decoder.apply({"params": p}, t, slow=s))
        return cost_stats(fn.lower(params, tokens, slow).compile())[0]

    f = [flops(S) for S in (64, 128, 256, 512)]
    steps = np.diff(f) / np.diff([64, 128, 256, 512])  # FLOPs per slow token
    assert steps[0] > 0
    np.testing.assert_allclose(steps, steps[0], rtol=0.02)


# ---------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    model, params = SlowFastMLLM(SMOKE), _mllm_params()
    frames, tokens = _frames(), _tokens()
    with pytest.raises(ValueError, match="F=8"):
        model.apply({"params": params}, frames[:, :6], tokens)
    with pytest.raises(ValueError, match=r"frames must be \[B, F, 16, 16, 1\]"):
        model.apply({"params": params}, frames[:, :, :12, :12], tokens)
    with pytest.raises(ValueError, match="frame_mask must be"):
        model.apply({"params": params}, frames, tokens, frame_mask=jnp.ones((2, 7), bool))
    with pytest.raises(ValueError, match="token_types must be"):
        model.apply({"params": params}, frames, tokens, jnp.ones((2, 9), jnp.int32))
    decoder = SlowFastDecoder(SMOKE)
    slow = jnp.zeros((2, 4, SMOKE.llm.features))
    with pytest.raises(ValueError, match="slow_mask must match"):
        decoder.apply(
            {"params": _decoder_params()}, tokens, slow=slow, slow_mask=jnp.ones((2, 5), bool)
        )
    with pytest.raises(ValueError, match="frame_pooling=3 must divide feature_grid=4"):
        SlowFastConfig.smoke(tokens=TokenPipelineConfig(num_frames=8, frame_pooling=3))
    with pytest.raises(ValueError, match="frames=32"):
        SlowFastConfig.qwen2_7b(32)
    with pytest.raises(ValueError, match="temporal_pool=0"):
        TokenPipelineConfig(temporal_pool=0)
    with pytest.raises(ValueError, match="cross_attn_min_layer=2"):
        SlowFastConfig.smoke(cross_attn_min_layer=2)
    with pytest.raises(ValueError, match="tokens.spatial_pool=4 must divide"):
        SlowFastConfig.smoke(tokens=TokenPipelineConfig(num_frames=8, spatial_pool=4))


# ---------------------------------------------------------------------------- sizes, scale


def test_parameter_counts():
    c = SlowFastConfig.qwen2_7b(128)
    # 4 layers x (KV 2 x (3584 x 512 + 512) + gate 3585 + alpha 1)
    assert c.num_cross_attention_params() == 4 * (2 * (3584 * 512 + 512) + 3585 + 1)
    assert c.num_projector_params() == 3072 * 3584 + 3584 + 3584 * 3584 + 3584
    shapes = jax.eval_shape(
        lambda: SlowFastMLLM(SMOKE).init(jax.random.key(0), _frames(), _tokens())
    )
    params = nn.unbox(shapes)["params"]
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))  # noqa: E731
    llm = count(params["llm"])
    assert llm == SMOKE.llm.num_params() + SMOKE.num_cross_attention_params()
    projector = count({k: v for k, v in params["frames"].items() if k.startswith("projector")})
    assert projector == SMOKE.num_projector_params()


def test_sharded_forward_equals_unsharded():
    model = SlowFastMLLM(SMOKE)
    frames, tokens = _frames(B=4), _tokens(B=4)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), frames, tokens))
    assert_logically_annotated(abstract)
    params = nn.unbox(model.init(jax.random.key(1), frames, tokens))
    params = {"params": _with_alpha(params["params"], 0.5)}
    want = model.apply(params, frames, tokens)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, logical_to_sharding(abstract, mesh))
    att = sharded["params"]["llm"]["layer_0"]["attention"]
    P = jax.sharding.PartitionSpec
    assert att["cross_key"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert att["query"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda v: model.apply(v, frames, tokens))(sharded)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    assert_nnx_bridge_matches_linen(SlowFastMLLM(SMOKE), _frames(), _tokens())


def test_bf16_forward_is_finite_and_close():
    config = dataclasses.replace(
        SMOKE,
        llm=dataclasses.replace(SMOKE.llm, dtype=jnp.bfloat16),
        dtype=jnp.bfloat16,
    )
    frames, tokens = _frames(), _tokens()
    params = _mllm_params()
    want = SlowFastMLLM(SMOKE).apply({"params": params}, frames, tokens)
    got = SlowFastMLLM(config).apply({"params": params}, frames, tokens)
    assert got.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(got)))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=0.1)


def test_frozen_vision_gets_no_gradient():
    frames, tokens = _frames(), _tokens()
    params = _mllm_params(alpha=0.5)
    for freeze in (False, True):
        model = SlowFastMLLM(dataclasses.replace(SMOKE, freeze_vision=freeze))
        grads = jax.grad(lambda p, m=model: jnp.mean(m.apply({"params": p}, frames, tokens) ** 2))(
            params
        )["frames"]
        vision = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["vision"]))
        projector = float(jnp.max(jnp.abs(grads["projector_fc1"]["kernel"])))
        assert (vision == 0.0) == freeze and projector > 0


def test_alpha_init_sets_every_hybrid_gate():
    config = dataclasses.replace(SMOKE, alpha_init=1.0)
    params = nn.unbox(SlowFastMLLM(config).init(jax.random.key(0), _frames(), _tokens()))
    for i in config.hybrid_layers:
        assert float(params["params"]["llm"][f"layer_{i}"]["attention"]["alpha"]) == 1.0
    default = nn.unbox(SlowFastMLLM(SMOKE).init(jax.random.key(0), _frames(), _tokens()))
    for i in SMOKE.hybrid_layers:
        assert float(default["params"]["llm"][f"layer_{i}"]["attention"]["alpha"]) == 0.0
