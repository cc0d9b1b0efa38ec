"""Mlp (exact GELU), DropPath, PatchEmbed, FusedMBConv/MBConv structure."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn import DropPath, FusedMBConv, MBConv, Mlp, PatchEmbed


def test_mlp_uses_exact_gelu():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4)) * 2
    layer = Mlp(mlp_dim=6)
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: layer.init(jax.random.key(0), jnp.zeros(x.shape)))
    )
    p = jax.tree.map(lambda s: rng.normal(size=s.shape), shapes["params"])
    got = layer.apply(
        {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)},
        jnp.asarray(x, jnp.float32),
    )
    h = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    erf = np.vectorize(math.erf)
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))  # torch.nn.GELU(): the erf form, not tanh
    want = h @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_examples():
    x = jnp.ones((64, 3, 2))
    layer = DropPath(rate=0.25)
    assert layer.apply({}, x, deterministic=True) is x
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    per_example = np.asarray(y).reshape(64, -1)
    # Each example is either dropped (all 0) or kept and rescaled by 1 / (1 - rate).
    assert np.all(per_example.min(1) == per_example.max(1))
    kept = per_example[:, 0] != 0
    np.testing.assert_allclose(per_example[kept], 1 / 0.75, rtol=1e-6)
    assert 0 < kept.sum() < 64


def test_patch_embed_is_a_per_patch_linear_map():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 8, 12, 3))
    layer = PatchEmbed(features=5, patch_size=4)
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: layer.init(jax.random.key(0), jnp.zeros(images.shape)))
    )
    p = jax.tree.map(lambda s: rng.normal(size=s.shape), shapes["params"])
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    got = layer.apply({"params": params}, jnp.asarray(images, jnp.float32))
    patches = images.reshape(2, 2, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 48)
    want = patches @ p["proj"]["kernel"].reshape(48, 5) + p["proj"]["bias"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="patch_size=4"):
        layer.init(jax.random.key(0), jnp.zeros((1, 6, 8, 3)))
    # An empty batch gives an empty [0, T, D] (the reshape used -1: ZeroDivisionError at B = 0).
    empty = layer.apply({"params": params}, jnp.zeros((0, 8, 12, 3), jnp.float32))
    assert empty.shape == (0, 6, 5)


def test_mbconv_blocks_structure():
    x = jnp.zeros((1, 8, 8, 4))
    fused = nn.meta.unbox(
        jax.eval_shape(
            lambda: FusedMBConv(6, expand_ratio=4.0, strides=2, use_bias=(True, False)).init(
                jax.random.key(0), x, train=False
            )
        )
    )
    assert fused["params"]["spatial_conv"]["conv"]["kernel"].shape == (3, 3, 4, 16)
    assert "bias" in fused["params"]["spatial_conv"]["conv"]
    assert fused["params"]["point_conv"]["conv"]["kernel"].shape == (1, 1, 16, 6)
    mb = nn.meta.unbox(
        jax.eval_shape(lambda: MBConv(4, expand_ratio=4.0).init(jax.random.key(0), x, train=False))
    )
    # Expand and depthwise convs: bias, no norm; projection: BN, no bias.
    assert set(mb["params"]["inverted_conv"]) == {"conv"}
    assert mb["params"]["depth_conv"]["conv"]["kernel"].shape == (3, 3, 1, 16)
    assert set(mb["batch_stats"]) == {"point_conv"}
