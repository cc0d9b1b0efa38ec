"""Transformer: parameter counts, causality, cached decoding, generation, bf16, sharding, NNX."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.transformer import (
    Transformer,
    TransformerConfig,
    generate,
    sample_logits,
)
from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_cached_decode_matches_full_forward,
    assert_greedy_generation_matches_argmax_loop,
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE = TransformerConfig.smoke()


def _tokens(B=2, T=12, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, 256, dtype=jnp.int32)


def _init(config, tokens=None):
    tokens = _tokens() if tokens is None else tokens
    model = Transformer(config)
    return model, nn.unbox(model.init(jax.random.key(1), tokens)["params"])


def _count(config) -> int:
    shapes = jax.eval_shape(
        lambda: Transformer(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))


def test_qwen2_7b_parameter_count_without_allocating():
    # 7,615,616,512: the parameter count of the released Qwen2-7B checkpoint.
    config = TransformerConfig.qwen2_7b()
    assert config.num_params() == 7_615_616_512
    assert _count(config) == 7_615_616_512


def test_llama_style_100m_parameter_count():
    config = TransformerConfig.llama_style_100m()
    d, f, layers, vocab = 768, 3072, 12, 128_256
    non_embedding = layers * (4 * d * d + 3 * d * f + 2 * d) + d  # attention, SwiGLU, norms
    assert non_embedding == 113_265_408  # the "100M"
    assert config.num_non_embedding_params() == non_embedding
    assert _count(config) == non_embedding + 2 * vocab * d


@pytest.mark.parametrize("config", [SMOKE, TransformerConfig.cpu_10m()], ids=["smoke", "10m"])
def test_small_presets_count(config):
    assert _count(config) == config.num_params()


def test_causality_by_perturbation():
    model, params = _init(SMOKE)
    tokens = _tokens()
    logits = model.apply({"params": params}, tokens)
    assert logits.shape == (2, 12, 256)
    for t in (0, 5, 11):
        changed = model.apply({"params": params}, tokens.at[:, t].set((tokens[:, t] + 1) % 256))
        diff = np.asarray(jnp.any(jnp.abs(changed - logits) > 1e-6, axis=(0, 2)))
        assert not diff[:t].any()
        assert diff[t:].all()


def test_sliding_window_receptive_field():
    """With L layers of window w a token reaches L * (w - 1) positions ahead, no further."""
    config = dataclasses.replace(SMOKE, sliding_window=3)
    model, params = _init(config)
    tokens = _tokens(T=10)
    logits = model.apply({"params": params}, tokens)
    changed = model.apply({"params": params}, tokens.at[:, 1].set((tokens[:, 1] + 1) % 256))
    diff = np.asarray(jnp.any(jnp.abs(changed - logits) > 1e-6, axis=(0, 2)))
    reach = config.num_layers * (3 - 1)
    np.testing.assert_array_equal(diff, [1 <= t <= 1 + reach for t in range(10)])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"sliding_window": 4, "logit_soft_cap": 20.0}, {"qkv_bias": True, "tie_embeddings": True}],
    ids=["plain", "window-softcap", "bias-tied"],
)
def test_cached_decode_matches_full_forward(overrides):
    model, params = _init(dataclasses.replace(SMOKE, **overrides))
    assert_cached_decode_matches_full_forward(model, params, _tokens(T=11), prefill=6)


def test_greedy_generation_matches_uncached_argmax_loop():
    model, params = _init(SMOKE)
    assert_greedy_generation_matches_argmax_loop(model, params, _tokens(T=5), 7)


def test_sampling_top_k_and_temperature():
    logits = jnp.log(jnp.asarray([[0.1, 0.2, 0.3, 0.4]] * 2000))
    keys = jax.random.split(jax.random.key(0), 1)
    top2 = sample_logits(logits, keys[0], temperature=1.0, top_k=2)
    assert set(np.unique(np.asarray(top2))) == {2, 3}
    # P(3 | top-2) = 0.4 / 0.7
    np.testing.assert_allclose(np.mean(np.asarray(top2) == 3), 0.4 / 0.7, atol=0.04)
    top1 = sample_logits(logits, keys[0], temperature=1.0, top_k=1)
    assert np.all(np.asarray(top1) == 3)
    cold = sample_logits(logits, keys[0], temperature=0.05, top_k=None)
    assert np.mean(np.asarray(cold) == 3) > 0.95
    model, params = _init(SMOKE)
    sampled = generate(
        model, params, _tokens(T=3), jax.random.key(2), max_new_tokens=4, temperature=0.8
    )
    assert sampled.shape == (2, 7) and sampled.dtype == jnp.int32
    with pytest.raises(ValueError, match="temperature"):
        generate(model, params, _tokens(T=3), jax.random.key(2), max_new_tokens=4, temperature=-1.0)


def test_bf16_compute_runs_close_to_f32():
    model, params = _init(SMOKE)
    tokens = _tokens()
    f32 = model.apply({"params": params}, tokens)
    bf16_model = Transformer(dataclasses.replace(SMOKE, dtype=jnp.bfloat16))
    bf16 = bf16_model.apply({"params": params}, tokens)
    assert bf16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.05, err
    grads = jax.grad(lambda p: bf16_model.apply({"params": p}, tokens).astype(jnp.float32).sum())(
        params
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_remat_gives_the_same_gradients():
    model, params = _init(SMOKE)
    remat = Transformer(dataclasses.replace(SMOKE, remat=True))
    tokens = _tokens()

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, tokens) ** 2)

    a, b = jax.grad(loss(model))(params), jax.grad(loss(remat))(params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_sharded_forward_equals_unsharded():
    config = dataclasses.replace(SMOKE, num_kv_heads=4)
    model = Transformer(config)
    tokens = _tokens(B=4)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), tokens))
    assert_logically_annotated(abstract)
    params = nn.unbox(model.init(jax.random.key(1), tokens))
    want = model.apply(params, tokens)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, logical_to_sharding(abstract, mesh))
    kernel = sharded["params"]["layer_0"]["attention"]["query"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    mlp = sharded["params"]["layer_0"]["mlp"]["down"]["kernel"]
    assert mlp.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    with jax.set_mesh(mesh):
        got = jax.jit(lambda v: model.apply(v, tokens))(sharded)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    assert_nnx_bridge_matches_linen(Transformer(SMOKE), _tokens())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"features": 65}, "num_heads"),
        ({"head_dim": 7}, "even"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"logit_soft_cap": -1.0}, "logit_soft_cap"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SMOKE, **overrides)
