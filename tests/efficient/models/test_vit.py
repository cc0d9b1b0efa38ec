"""ViT/DeiT: parameter counts from a closed-form formula, shapes, bf16, sharding, config errors."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.vit import ViT, ViTConfig
from efficient.sharding import MeshConfig, batch_sharding, logical_to_sharding, make_mesh
from tests.efficient.models._checks import assert_logically_annotated


def _vit_parameters(cfg: ViTConfig) -> int:
    """Closed-form count of timm's VisionTransformer (class token, learned pos-emb, qkv bias)."""
    d, f, p = cfg.features, cfg.mlp_dim, cfg.patch_size
    patch = p * p * cfg.in_channels * d + d
    tokens = d + (cfg.num_patches + 1) * d  # class token + position embedding
    attention = 3 * (d * d + d) + (d * d + d)  # q, k, v, out (with biases)
    mlp = (d * f + f) + (f * d + d)
    block = attention + mlp + 2 * (2 * d)  # two LayerNorms
    return patch + tokens + cfg.num_layers * block + 2 * d + d * cfg.num_classes + cfg.num_classes


# DeiT Table 1 says 5M / 22M; timm's deit_tiny/small_patch16_224 have 5,717,416 / 22,050,664
# (5.717M / 22.051M rounded, 22.050M truncated).
@pytest.mark.parametrize(
    ("preset", "count"), [("deit_tiny", 5_717_416), ("deit_small", 22_050_664)]
)
def test_parameter_counts(preset, count):
    cfg = getattr(ViTConfig, preset)()
    expected = _vit_parameters(cfg)
    assert expected == count
    shapes = jax.eval_shape(
        lambda: ViT(cfg).init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
    )
    assert set(shapes) == {"params"}
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes))) == expected


def _random_params(cfg, shape, seed=0):
    shapes = jax.eval_shape(lambda: ViT(cfg).init(jax.random.key(0), jnp.zeros(shape), train=False))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32), nn.meta.unbox(shapes)
    ), shapes


def test_shapes_axis_names_and_bf16():
    cfg = ViTConfig.smoke()
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables, boxed = _random_params(cfg, x.shape)
    p = boxed["params"]
    assert p["pos_embed"].value.shape == (1, 17, 32)
    assert p["blocks_0"]["attention"]["query"]["kernel"].names == ("embed", "heads", "head_dim")
    assert p["head"]["kernel"].names == ("embed", "classes")
    f32 = jax.jit(lambda v: ViT(cfg).apply(v, x, train=False))(variables)
    assert f32.shape == (2, 10) and f32.dtype == jnp.float32
    bf16_cfg = dataclasses.replace(cfg, dtype=jnp.bfloat16)
    bf16 = jax.jit(lambda v: ViT(bf16_cfg).apply(v, x, train=False))(variables)
    assert bf16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.05, err  # bf16 (8 mantissa bits) through 2 blocks


def test_class_token_output_is_permutation_invariant_in_the_patches_without_pos_embed():
    # Self-attention is permutation-equivariant: with a zero position embedding, shuffling the
    # patches leaves the class-token logits unchanged. Checks the token plumbing, not values.
    cfg = dataclasses.replace(ViTConfig.smoke(), image_size=16, patch_size=8, in_channels=1)
    variables, _ = _random_params(cfg, (1, 16, 16, 1))
    variables["params"]["pos_embed"] = jnp.zeros_like(variables["params"]["pos_embed"])
    x = jax.random.normal(jax.random.key(2), (1, 16, 16, 1))
    swapped = jnp.concatenate([x[:, 8:], x[:, :8]], axis=1)  # swap the two rows of patches
    run = jax.jit(lambda v, x: ViT(cfg).apply(v, x, train=False))
    np.testing.assert_allclose(run(variables, x), run(variables, swapped), rtol=1e-5, atol=1e-5)


def test_fashion_mnist_shape_and_drop_path():
    cfg = dataclasses.replace(
        ViTConfig.smoke(), image_size=28, patch_size=7, in_channels=1, drop_path_rate=0.5
    )
    variables, _ = _random_params(cfg, (4, 28, 28, 1))
    x = jax.random.normal(jax.random.key(3), (4, 28, 28, 1))
    run = jax.jit(lambda v, key: ViT(cfg).apply(v, x, train=True, rngs={"dropout": key}))
    a, b = run(variables, jax.random.key(0)), run(variables, jax.random.key(1))
    assert a.shape == (4, 10)
    assert not np.allclose(a, b)


def test_sharded_forward_equals_unsharded():
    cfg = ViTConfig.smoke()
    model = ViT(cfg)
    x = jax.random.normal(jax.random.key(4), (4, 32, 32, 3))
    variables, abstract = _random_params(cfg, x.shape)
    assert_logically_annotated(abstract)
    want = model.apply(variables, x, train=False)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(variables, logical_to_sharding(abstract, mesh))
    p, P = sharded["params"], jax.sharding.PartitionSpec
    block = p["blocks_0"]
    assert block["attention"]["query"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    assert block["attention"]["out"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert block["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert block["mlp"]["fc2"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert p["patch_embed"]["proj"]["kernel"].sharding.spec == P(None, None, None, "fsdp")
    assert p["pos_embed"].sharding.spec == P(None, None, "fsdp")
    assert p["head"]["kernel"].sharding.spec == P("fsdp", None)
    with jax.set_mesh(mesh):
        run = jax.jit(lambda v, x: model.apply(v, x, train=False))
        got = run(sharded, jax.device_put(x, batch_sharding(mesh)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="patch_size=5"):
        dataclasses.replace(ViTConfig.smoke(), patch_size=5)
    with pytest.raises(ValueError, match="num_heads=5"):
        dataclasses.replace(ViTConfig.smoke(), num_heads=5)
    with pytest.raises(ValueError, match="images must be"):
        jax.eval_shape(
            lambda: ViT(ViTConfig.smoke()).init(
                jax.random.key(0), jnp.zeros((1, 28, 28, 3)), train=False
            )
        )
