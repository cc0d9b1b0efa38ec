"""SASRec: a float64 numpy forward written from RecBole's code, causality, the key-padding mask,
timestamps ignored, parameter counts, dropout, sharding, the NNX bridge, bad inputs."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.sasrec import SASRec, SASRecConfig
from efficient.sharding import MeshConfig, batch_sharding, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE = SASRecConfig.smoke()  # L 16, D 16, 2 heads of 8, F 32


@pytest.fixture
def x64():
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        yield


def _batch(config=SMOKE, lengths=(16, 9, 1), seed=0, T=None):
    rng = np.random.default_rng(seed)
    B, T = len(lengths), T or config.max_len
    n = np.asarray(lengths)
    real = np.arange(T)[None, :] < n[:, None]
    items = np.where(real, rng.integers(1, config.num_items + 1, (B, T)), 0)
    ts = np.where(real, np.sort(rng.uniform(0.0, 1.0, (B, T)), axis=1), 0.0)
    return jnp.asarray(items, jnp.int32), jnp.asarray(ts, jnp.float32), jnp.asarray(n, jnp.int32)


MODEL = SASRec(SMOKE)
PARAMS = nn.unbox(MODEL.init(jax.random.key(1), *_batch())["params"])
SCORES = jax.jit(lambda p, *b: MODEL.apply({"params": p}, *b))
ENCODE = jax.jit(lambda p, *b: MODEL.apply({"params": p}, *b, method=SASRec.encode))


def _perturbed(params, seed=2, scale=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * rng.normal(size=p.shape).astype(p.dtype), params)


# --- numpy float64 reference, written from RecBole 1.2.1 sasrec.py and layers.py ------------


def _ln(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _heads(x, p):  # DenseGeneral(D -> [H, K])
    return np.einsum("btd,dhk->bhtk", x, p["kernel"]) + p["bias"][None, :, None, :]


def _forward(params, items, lengths, config):
    c = config
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    items, lengths = np.asarray(items), np.asarray(lengths)
    B, T = items.shape
    table = params["item_embedding"]["embedding"]
    x = table[items] + params["position_embedding"]["embedding"][:T]
    x = _ln(x, params["embed_norm"], c.norm_eps)
    # get_attention_mask: item_seq != 0, then tril; 0 where allowed, -10000 elsewhere.
    allowed = np.tril(np.broadcast_to((items != 0)[:, None, None, :], (B, 1, T, T)))
    additive = np.where(allowed, 0.0, -10000.0)
    for i in range(c.num_layers):
        p = params[f"layers_{i}"]
        a = p["attention"]
        q, k, v = (_heads(x, a[name]) for name in ("query", "key", "value"))  # [B, H, T, K]
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(c.head_dim) + additive
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = probs @ v  # [B, H, T, K]
        out = np.einsum("bhtk,hkd->btd", ctx, a["out"]["kernel"]) + a["out"]["bias"]
        x = _ln(out + x, p["attention_norm"], c.norm_eps)
        h = _dense(x, p["mlp"]["fc1"])
        h = h * 0.5 * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))  # RecBole's gelu
        x = _ln(_dense(h, p["mlp"]["fc2"]) + x, p["mlp_norm"], c.norm_eps)
    h = x[np.arange(B), lengths - 1]  # gather_indexes(output, item_seq_len - 1)
    return h @ table.T, x


def test_forward_matches_numpy_reference(x64):
    config = dataclasses.replace(SMOKE, dtype=jnp.float64, param_dtype=jnp.float64)
    model = SASRec(config)
    batch = _batch(lengths=(16, 6))
    params = _perturbed(nn.unbox(model.init(jax.random.key(0), *batch)["params"]))
    hidden, scores = jax.jit(
        lambda p: (
            model.apply({"params": p}, *batch, method=SASRec.encode),
            model.apply({"params": p}, *batch),
        )
    )(params)
    want_scores, want_hidden = _forward(params, batch[0], batch[2], config)
    # Every position, padded ones included: RecBole's -10000 and our float32-minimum logits
    # both give masked keys a weight of exactly 0 (every query has a real key: position 0).
    # float32 tolerance although the model runs in float64: the shared attention computes its
    # logits and softmax in float32 whatever the dtype (efficient.nn.dot_product_attention).
    np.testing.assert_allclose(np.asarray(hidden), want_hidden, rtol=1e-5, atol=1e-5)
    assert scores.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scores), want_scores, rtol=1e-6, atol=1e-5)


def test_causal_and_timestamps_ignored():
    items, ts, lengths = _batch(lengths=(16, 16))
    hidden = ENCODE(PARAMS, items, ts, lengths)
    for j in (0, 7, 15):
        moved = items.at[:, j].set(items[:, j] % SMOKE.num_items + 1)
        changed = np.asarray(
            jnp.any(jnp.abs(ENCODE(PARAMS, moved, ts, lengths) - hidden) > 1e-6, axis=(0, 2))
        )
        assert not changed[:j].any() and changed[j:].all()
    np.testing.assert_array_equal(
        np.asarray(ENCODE(PARAMS, items, ts[:, ::-1] * 7.0, lengths)), np.asarray(hidden)
    )


def test_key_padding_mask():
    """A padded query attends to the real keys only: its output depends on its own (padding)
    input but not on what other padded slots hold; the scores depend on neither."""
    items, ts, lengths = _batch(lengths=(5, 11))
    hidden = ENCODE(PARAMS, items, ts, lengths)
    t = 13  # padded in both rows
    junk = jnp.where(jnp.arange(16)[None, :] >= lengths[:, None], 9, items).at[:, t].set(0)
    moved = ENCODE(PARAMS, junk, ts, lengths)
    np.testing.assert_allclose(np.asarray(moved[:, t]), np.asarray(hidden[:, t]), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(SCORES(PARAMS, junk, ts, lengths)),
        np.asarray(SCORES(PARAMS, items, ts, lengths)),
        atol=1e-6,
    )
    # Without the key mask (every position called real) the padded query sees those slots.
    full = jnp.full_like(lengths, 16)
    unmasked = ENCODE(PARAMS, junk, ts, full)[:, t] - ENCODE(PARAMS, items, ts, full)[:, t]
    assert float(jnp.min(jnp.max(jnp.abs(unmasked), axis=-1))) > 1e-3


def test_output_shape_dtype_dropout_and_short_batches():
    apply = jax.jit(
        lambda batch, train, key: MODEL.apply(
            {"params": PARAMS}, *batch, train=train, rngs={"dropout": key}
        ),
        static_argnums=1,
    )
    batch = _batch(lengths=(16, 3, 0))
    scores = apply(batch, False, jax.random.key(0))
    assert scores.shape == (3, SMOKE.num_items + 1) and scores.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(scores)))
    a, b = apply(batch, True, jax.random.key(0)), apply(batch, True, jax.random.key(1))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3
    np.testing.assert_array_equal(np.asarray(apply(batch, True, jax.random.key(0))), a)
    # T < max_len uses the first T position embeddings: the same as the long batch's prefix.
    short = _batch(lengths=(6, 3), T=8)
    long = tuple(jnp.pad(x, ((0, 0), (0, 8))) if x.ndim == 2 else x for x in short)
    np.testing.assert_allclose(
        np.asarray(SCORES(PARAMS, *short)), np.asarray(SCORES(PARAMS, *long)), atol=1e-6
    )


def test_parameter_counts():
    # ml100k by hand: 1,350 item rows + 50 positions of 64; per layer q, k, v, out (64 + 1) x 64,
    # FFN 65 x 256 + 257 x 64, two LayerNorms.
    layer = 4 * 65 * 64 + 65 * 256 + 257 * 64 + 4 * 64
    want = (1350 + 50) * 64 + 2 * 64 + 2 * layer
    assert want == 189_696
    for config, count in ((SASRecConfig.ml100k(), want), (SMOKE, SMOKE.num_params())):
        assert config.num_params() == count
        shapes = jax.eval_shape(lambda c=config: SASRec(c).init(jax.random.key(0), *_batch(c)))
        assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes))) == count
    baseline = SASRecConfig.ml100k()  # TiM4Rec's baseline/SASRec/config.yaml
    assert (baseline.num_heads, baseline.mlp_dim, baseline.dropout_rate) == (8, 256, 0.2)


def test_sharded_forward_equals_unsharded():
    batch = _batch(lengths=(16, 9, 1, 5))
    abstract = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), *batch))
    assert_logically_annotated(abstract)
    params = _perturbed(PARAMS)
    want = SCORES(params, *batch)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, logical_to_sharding(abstract["params"], mesh))
    layer, P = sharded["layers_0"], jax.sharding.PartitionSpec
    assert layer["attention"]["query"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert layer["attention"]["out"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert layer["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert layer["mlp"]["fc2"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert sharded["position_embedding"]["embedding"].sharding.spec == P(None, "fsdp")
    # 33 item rows (padding + 32) do not divide the tensor axis: only the width is split.
    assert sharded["item_embedding"]["embedding"].sharding.spec == P(None, "fsdp")
    with jax.set_mesh(mesh):
        got = SCORES(sharded, *jax.device_put(batch, batch_sharding(mesh)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    assert_nnx_bridge_matches_linen(SASRec(SMOKE), *_batch())


def _bad_batches():
    items, ts, lengths = _batch()
    long = _batch(dataclasses.replace(SMOKE, max_len=17))
    return [
        (long, "max_len=16"),
        ((items.astype(jnp.float32), ts, lengths), "items"),
        ((items, ts[:, :15], lengths), "timestamps"),
        ((items, ts, lengths[:2]), "lengths"),
        # Values, in an eager call: an id past the table, a negative one, a length past T.
        ((items.at[0, 3].set(SMOKE.num_items + 1), ts, lengths), "items: .* outside 0.."),
        ((items.at[1, 0].set(-3), ts, lengths), "items: -3 at"),
        ((items, ts, lengths.at[0].set(17)), "lengths: 17 at"),
    ]


@pytest.mark.parametrize(("case", "match"), _bad_batches())
def test_bad_inputs(case, match):
    with pytest.raises(ValueError, match=match):
        MODEL.apply({"params": PARAMS}, *case)


def test_timestamps_are_not_read():
    """SASRec reads no timestamps: their values (out of order here) are not checked."""
    items, ts, lengths = _batch()
    want = MODEL.apply({"params": PARAMS}, items, ts, lengths)
    got = MODEL.apply({"params": PARAMS}, items, ts[:, ::-1], lengths)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_heads": 3}, "num_heads=3"),
        ({"num_items": 0}, "num_items"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"norm_eps": 0.0}, "norm_eps"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SMOKE, **overrides)


def test_init_follows_recbole():
    """RecBole's `_init_weights`: every Linear and Embedding N(0, initializer_range) (plain, not
    truncated), biases 0, LayerNorm weight 1 and bias 0."""
    config = SASRecConfig.ml100k()  # 64 wide: >= 3,200 draws per tensor, std within ~2%
    variables = SASRec(config).init(jax.random.key(3), *_batch(config, lengths=(5,)))
    params = nn.unbox(variables["params"])
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kinds = {"kernel": 0, "embedding": 0, "bias": 0, "scale": 0}
    for path, leaf in leaves:
        name, where, x = path[-1].key, jax.tree_util.keystr(path), np.asarray(leaf, np.float64)
        norm = any("norm" in str(getattr(k, "key", "")) for k in path)
        kinds[name] += 1
        if name == "scale":
            np.testing.assert_array_equal(x, 1.0, err_msg=where)
        elif name == "bias":
            np.testing.assert_array_equal(x, 0.0, err_msg=where)
        else:
            assert not norm, where
            std = x.std()
            assert abs(std / config.init_std - 1.0) < 0.1, (where, std)
            assert abs(x.mean()) < 0.1 * config.init_std, (where, x.mean())
            # N(0, s) puts ~4.55% beyond 2s; a 2s-truncated normal puts none there.
            tail = np.mean(np.abs(x) > 2.0 * config.init_std)
            assert 0.03 < tail < 0.06, (where, tail)
    # 2 embeddings; per layer q, k, v, out, fc1, fc2 (with biases); LayerNorms: 1 + 2 per layer.
    assert kinds == {"kernel": 12, "embedding": 2, "bias": 12 + 5, "scale": 5}


def test_dropout_placement_follows_recbole():
    """RecBole: Dropout(LayerNorm(item + position)) once; per TransformerLayer hidden dropout on
    the attention output and on the FFN output ([B, T, D], hidden_dropout_prob) and attn_dropout
    on the attention probabilities ([B, H, T, T], attn_dropout_prob)."""
    config = dataclasses.replace(SMOKE, dropout_rate=0.2, attention_dropout_rate=0.3)
    batch = _batch(config, lengths=(16, 9, 1))
    B, T, D, H = 3, config.max_len, config.features, config.num_heads
    module_calls = []

    def spy(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            module_calls.append((context.module.rate, args[0].shape, kwargs["deterministic"]))
        return next_fun(*args, **kwargs)

    masks = []
    bernoulli = jax.random.bernoulli

    def bernoulli_spy(key, p=0.5, shape=None, *args, **kwargs):
        masks.append((float(p), tuple(shape)))
        return bernoulli(key, p, shape, *args, **kwargs)

    model = SASRec(config)
    with nn.intercept_methods(spy):
        # Traced only (eval_shape): the spies see every call; evaluation: all deterministic.
        jax.eval_shape(lambda: model.apply({"params": PARAMS}, *batch))
    assert [d for _, _, d in module_calls] == [True] * (1 + 2 * config.num_layers)
    module_calls.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jax.random, "bernoulli", bernoulli_spy)
        with nn.intercept_methods(spy):
            rngs = {"dropout": jax.random.key(0)}
            jax.eval_shape(lambda: model.apply({"params": PARAMS}, *batch, train=True, rngs=rngs))
    want = [(0.2, (B, T, D), False)] * (1 + 2 * config.num_layers)
    assert [(pytest.approx(r), s, d) for r, s, d in module_calls] == want
    hidden = [(p, s) for p, s in masks if len(s) == 3]  # keep probability, shape
    probs = [(p, s) for p, s in masks if len(s) != 3]
    assert hidden == [(pytest.approx(0.8), (B, T, D))] * (1 + 2 * config.num_layers)
    assert len(probs) == config.num_layers
    for p, shape in probs:  # [B, G, H/G, T, S]: every query head's probabilities over the keys
        assert p == pytest.approx(1.0 - 0.3)
        assert int(np.prod(shape)) == B * H * T * T and shape[0] == B and shape[-2:] == (T, T)
