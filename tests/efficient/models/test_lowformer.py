"""LowFormer: parameter counts, stage shapes, Lowtention vs float64 numpy, BN folding, NNX, bf16."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.lowformer import (
    LowFormer,
    LowFormerConfig,
    Lowtention,
    attention_heads,
    fold_batch_norm,
)
from efficient.models.lowformer.model import drop_path_rates, upsample_geometry
from efficient.nn import lax_convolutions
from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE_INPUT = (2, 32, 32, 3)


def _abstract(model, shape, **kwargs):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False, **kwargs)
    )


def _random_variables(abstract, seed=0):
    """Random values for an abstract variable tree (numpy: no RNG compilation, fast on CPU).

    Kernels ~ N(0, 1/fan_in); norm scales ~ U(0.5, 1.5); biases ~ N(0, 0.1); running means
    ~ N(0, 0.3), running variances ~ U(0.5, 2): every BatchNorm is a non-trivial affine map.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        shape = leaf.shape
        if name == "var":
            value = rng.uniform(0.5, 2.0, shape)
        elif name == "mean":
            value = rng.normal(0, 0.3, shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) <= 1:
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(abstract))


def _images(shape=SMOKE_INPUT, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.fixture(scope="module")
def smoke_variables():
    return _random_variables(_abstract(LowFormer(LowFormerConfig.smoke()), SMOKE_INPUT))


@pytest.fixture(scope="module")
def smoke_logits(smoke_variables):
    model = LowFormer(LowFormerConfig.smoke())
    return jax.jit(lambda v: model.apply(v, _images(), train=False))(smoke_variables)


# One LowFormer block per attention stage, nothing else: for the tests whose cost is compilation.
TINY = dataclasses.replace(LowFormerConfig.smoke(), depths=(0, 0, 0, 1, 1))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.mark.parametrize(
    ("preset", "millions"),
    [("b0", 14.100), ("b1", 17.936), ("b15", 33.982), ("b3", 57.087)],
)
def test_parameter_counts(preset, millions):
    # The README/Table 1 figures (14.1M, 17.9M, 33.9M, 57.1M) are torch `parameters()`: trainable
    # tensors only, no BatchNorm running statistics. The 3-decimal figures are a recount of the
    # official architecture (reference notes §B); with running stats B0 would be 14.115M.
    variables = _abstract(LowFormer(getattr(LowFormerConfig, preset)()), (1, 224, 224, 3))
    assert round(_count(variables["params"]) / 1e6, 3) == millions
    assert _count(variables["batch_stats"]) > 0


@pytest.mark.parametrize(
    ("size", "spatial"),
    [(224, (112, 56, 28, 14, 7)), (225, (113, 57, 29, 15, 8)), (97, (49, 25, 13, 7, 4))],
)
def test_stage_shapes(size, spatial):
    config = LowFormerConfig.b0()
    model = LowFormer(config)
    variables = _abstract(model, (1, size, size, 3))
    features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, method=LowFormer.features),
        variables,
        jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32),
    )
    assert [f.shape for f in features] == [
        (2, s, s, w) for s, w in zip(spatial, config.widths, strict=True)
    ]


def test_fashion_mnist_preset_shapes_and_cost():
    config = LowFormerConfig.fashion_mnist()
    model = LowFormer(config)
    x = jnp.zeros((4, 28, 28, 1))
    variables = _abstract(model, x.shape)
    features = jax.eval_shape(
        lambda v: model.apply(v, x, train=False, method=LowFormer.features), variables
    )
    assert [f.shape[1] for f in features] == [28, 14, 7, 4, 2]
    # lax_convolutions: XLA counts the CPU im2col route as extra FLOPs; count the architecture's.
    with lax_convolutions():
        lowered = jax.jit(lambda v: model.apply(v, x, train=False)).lower(variables)
    macs_per_image = lowered.compile().cost_analysis()["flops"] / 2 / x.shape[0]
    assert 19e6 <= macs_per_image <= 21e6, macs_per_image  # 20.0 MMACs: README, fashion_mnist()


@pytest.mark.parametrize(
    ("width", "heads"),
    [(128, (2, 32)), (160, (2, 40)), (256, (4, 32)), (320, (5, 32)), (512, (8, 32))],
)
def test_attention_heads_per_width(width, heads):
    assert attention_heads(width) == heads


def test_drop_path_rates_follow_official_walk():
    # B0: stages 1-2 have no residual blocks (depth 1), stages 3-4 have 3 + 4 LowFormer blocks of
    # 3 branches: 21 branches, the ramp ends at 0.05. Official walk order per block is
    # (local, attention, mlp); stored as (attention, mlp, local).
    rates = drop_path_rates(LowFormerConfig.b0())
    assert [len(r) for r in rates] == [0, 0, 9, 12]
    step = 0.05 / 21
    np.testing.assert_allclose(rates[2][:3], (2 * step, 3 * step, 1 * step))
    np.testing.assert_allclose(rates[3][-3:], (20 * step, 21 * step, 19 * step))
    # B3 skips the first two branches (stage 1's only residual block and stage 2's first).
    b3 = drop_path_rates(LowFormerConfig.b3())
    assert b3[0] == (0.0,) and b3[1][0] == 0.0 and b3[1][1] > 0.0
    assert max(max(r) for r in b3) == pytest.approx(0.1)


@pytest.mark.parametrize(("strides", "size"), [(2, 4), (2, 7), (1, 5)])
def test_upsample_geometry(strides, size):
    # ConvTranspose(kernel k, stride s, pad p) maps h -> (h-1)s - 2p + k: s=2 doubles, s=1 keeps.
    k, p = upsample_geometry(strides)
    assert (size - 1) * strides - 2 * p + k == strides * size


def _lowtention_numpy(x, p, stats, heads, head_dim, s):
    """Float64 re-implementation of the official ConvAttention (fuseconv=True), NHWC."""
    batch, height, width, channels = x.shape
    k = 5 if s > 1 else 3
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = (height + 2 * pad - k) // s + 1, (width + 2 * pad - k) // s + 1
    dw = p["conv_proj"]["conv"]["kernel"][:, :, 0, :]  # [k, k, C]
    y = np.zeros((batch, h, w, channels))
    for i in range(h):
        for j in range(w):
            y[:, i, j] = np.einsum("buvc,uvc->bc", xp[:, i * s : i * s + k, j * s : j * s + k], dw)
    bn, st = p["conv_proj"]["bn"], stats["conv_proj"]["bn"]
    y = (y - st["mean"]) / np.sqrt(st["var"] + 1e-5) * bn["scale"] + bn["bias"]
    qkv = np.einsum("bijc,cnqd->bqnijd", y, p["qkv"]).reshape(batch, 3, heads, h * w, head_dim)
    q, kk, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, H, T, K]
    logits = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    o = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, h, w, heads * head_dim)
    ku, pu = (2 * s, s // 2) if s > 1 else (3, 1)
    kernel = p["upsample_kernel"].reshape(ku, ku, heads * head_dim, channels)
    full = np.zeros((batch, (h - 1) * s + ku, (w - 1) * s + ku, channels))
    for i in range(h):
        for j in range(w):
            full[:, i * s : i * s + ku, j * s : j * s + ku] += np.einsum(
                "bc,uvco->buvo", o[:, i, j], kernel
            )
    out = full[:, pu : full.shape[1] - pu, pu : full.shape[2] - pu]
    return out[:, :height, :width] + p["upsample_bias"]


@pytest.mark.parametrize(("strides", "height", "width"), [(2, 7, 5), (2, 6, 6), (1, 4, 3)])
def test_lowtention_matches_numpy(strides, height, width):
    heads, head_dim, channels = 2, 3, 6
    layer = Lowtention(heads, head_dim, strides)
    shape = (2, height, width, channels)
    variables = _random_variables(_abstract(layer, shape), seed=strides + height)
    x = np.random.default_rng(3).normal(size=shape)
    got = jax.jit(lambda v, x: layer.apply(v, x, train=False))(
        variables, jnp.asarray(x, jnp.float32)
    )
    as64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
    want = _lowtention_numpy(
        x, as64(variables["params"]), as64(variables["batch_stats"]), heads, head_dim, strides
    )
    assert got.shape == shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_fold_batch_norm_matches_unfolded(smoke_variables, smoke_logits):
    config = LowFormerConfig.smoke()
    folded_config = dataclasses.replace(config, fold_bn=True)
    x = _images()
    folded = jax.jit(fold_batch_norm)(smoke_variables)
    # Same tree as a freshly built folded model: every conv that had a BatchNorm has a bias.
    expected = nn.meta.unbox(_abstract(LowFormer(folded_config), SMOKE_INPUT))
    assert jax.tree.structure(folded) == jax.tree.structure(expected)
    assert jax.tree.map(jnp.shape, folded) == jax.tree.map(jnp.shape, expected)

    def logits(cfg, v):
        return jax.jit(lambda v: LowFormer(cfg).apply(v, x, train=False))(v)

    want, got = smoke_logits, logits(folded_config, folded)
    assert float(jnp.std(want)) > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_rejects_missing_stats(smoke_variables):
    with pytest.raises(ValueError, match="batch_stats"):
        fold_batch_norm({"params": smoke_variables["params"]})


def test_train_mode_updates_stats_and_draws_drop_path(smoke_variables):
    model = LowFormer(dataclasses.replace(LowFormerConfig.smoke(), drop_path_rate=0.5))
    x = _images()
    forward = jax.jit(
        lambda v, key: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
    )
    logits_a, updates = forward(smoke_variables, jax.random.key(0))
    logits_b, _ = forward(smoke_variables, jax.random.key(1))
    old = smoke_variables["batch_stats"]["stem"]["conv"]["bn"]["mean"]
    assert not np.allclose(updates["batch_stats"]["stem"]["conv"]["bn"]["mean"], old)
    assert not np.allclose(logits_a, logits_b)  # different drop-path draws


def test_gradients_are_finite_and_reach_every_stage():
    model = LowFormer(TINY)
    variables = _random_variables(_abstract(model, SMOKE_INPUT))
    x = _images()

    def loss(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.mean(logits**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert set(grads) == {"stem", "stages_2", "stages_3", "head"}  # stages 1-2: depth 0
    for name, tree in grads.items():
        assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(tree)), name


def test_odd_input_runs():
    model = LowFormer(LowFormerConfig.smoke())
    shape = (1, 33, 31, 3)
    variables = _random_variables(_abstract(model, shape))
    features = jax.jit(lambda v, x: model.apply(v, x, train=False, method=LowFormer.features))(
        variables, _images(shape)
    )
    assert [f.shape[1:3] for f in features] == [(17, 16), (17, 16), (9, 8), (5, 4), (5, 4)]
    assert all(bool(jnp.all(jnp.isfinite(f))) for f in features)


def test_rejects_wrong_channels():
    with pytest.raises(ValueError, match="images must be"):
        _abstract(LowFormer(LowFormerConfig.smoke()), (1, 32, 32, 1))


def test_config_validation():
    with pytest.raises(ValueError, match="widths"):
        dataclasses.replace(LowFormerConfig.b0(), widths=(16, 32, 64, 128, 0))
    with pytest.raises(ValueError, match="drop_path_rate"):
        dataclasses.replace(LowFormerConfig.b0(), drop_path_rate=1.0)


def test_bf16_compute(smoke_variables, smoke_logits):
    x, f32 = _images(), smoke_logits
    bf16_config = dataclasses.replace(LowFormerConfig.smoke(), dtype=jnp.bfloat16)
    bf16 = jax.jit(lambda v: LowFormer(bf16_config).apply(v, x, train=False))(smoke_variables)
    assert bf16.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(bf16)))
    # bf16 keeps 8 mantissa bits; over ~20 layers the logits drift by a few percent of their scale.
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.1, err


def test_logical_axis_names_and_sharded_forward(smoke_variables, smoke_logits):
    model = LowFormer(LowFormerConfig.smoke())
    abstract = _abstract(model, SMOKE_INPUT)
    assert_logically_annotated(abstract)  # parameters and BatchNorm running statistics

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    shardings = logical_to_sharding(abstract, mesh)
    sharded = jax.device_put(smoke_variables, shardings)
    assert any(
        len(a.sharding.device_set) > 1 and not a.sharding.is_fully_replicated
        for a in jax.tree.leaves(sharded)
    )
    stage, P = sharded["params"]["stages_3"], jax.sharding.PartitionSpec
    assert stage["blocks_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
    conv = stage["downsample"]["spatial_conv"]["conv"]["kernel"]
    assert conv.sharding.spec == P(None, None, "fsdp", "tensor")
    # [D, H, 3, K] with a single head at this size: the head axis does not divide, so replicated.
    assert stage["blocks_0"]["attention"]["qkv"].sharding.spec == P("fsdp", None, None, None)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda v: model.apply(v, _images(), train=False))(sharded)
    np.testing.assert_allclose(np.asarray(got), np.asarray(smoke_logits), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    variables = assert_nnx_bridge_matches_linen(LowFormer(TINY), _images(), train=False)
    assert set(variables) == {"params", "batch_stats"}
