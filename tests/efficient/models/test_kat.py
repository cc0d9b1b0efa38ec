"""KAT / GR-KAN: parameter counts from a closed form, the identity-initialised block computed by
hand, gradients, bf16, sharding, the NNX bridge, config errors and the presets next to
vit/fashion_mnist."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.kat import KAT, KATConfig
from efficient.models.vit import ViT, ViTConfig
from efficient.nn import GRKAN, GroupRational
from efficient.nn.kan import fc_gain
from efficient.sharding import MeshConfig, batch_sharding, logical_to_sharding, make_mesh
from pallas_kernels.rational import PRESETS, VARIANCE_GAINS, group_rational_reference
from tests.efficient.models._checks import (
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)


def _kat_parameters(cfg: KATConfig) -> int:
    """Closed form: timm's ViT (class token, learned pos-emb, qkv bias) + per block two rationals,
    each a numerator [1 or G, 6] and a denominator [G, 4]."""
    d, f, p, g = cfg.features, cfg.mlp_dim, cfg.patch_size, cfg.num_groups
    patch = p * p * cfg.in_channels * d + d
    tokens = d + (cfg.num_patches + 1) * d
    attention = 4 * (d * d + d)
    mlp = (d * f + f) + (f * d + d)
    rationals = 2 * ((1 if cfg.shared_numerator else g) * 6 + g * 4)
    block = attention + mlp + rationals + 2 * (2 * d)
    return patch + tokens + cfg.num_layers * block + 2 * d + d * cfg.num_classes + cfg.num_classes


def _count(model, shape) -> int:
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    assert set(shapes) == {"params"}
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))


# KAT-T's count is the one the authors' validate.py prints ("param count: 5718328", kat
# README); the README table rounds all three: 5.7M / 22.1M / 86.6M. Each is the DeiT/ViT count
# (5,717,416 / 22,050,664 / 86,567,656) + 12 blocks x 2 rationals x 38 coefficients.
@pytest.mark.parametrize(
    ("preset", "count", "paper_m"),
    [("tiny", 5_718_328, 5.7), ("small", 22_051_576, 22.1), ("base", 86_568_568, 86.6)],
)
def test_parameter_counts(preset, count, paper_m):
    cfg = getattr(KATConfig, preset)()
    assert cfg.num_groups == 8 and cfg.patch_size == 16 and cfg.image_size == 224
    assert _kat_parameters(cfg) == count
    assert round(count / 1e6, 1) == paper_m
    assert _count(KAT(cfg), (1, 224, 224, 3)) == count
    per_group = dataclasses.replace(cfg, shared_numerator=False)
    assert _count(KAT(per_group), (1, 224, 224, 3)) == _kat_parameters(per_group)


def test_kat_is_the_vit_plus_rationals():
    # Same tree and shapes as the ViT of the same size once act1/act2 are removed: KAT reuses
    # the ViT code and changes only the MLP.
    x = jnp.zeros((1, 28, 28, 1))
    kat = jax.eval_shape(
        lambda: KAT(KATConfig.fashion_mnist()).init(jax.random.key(0), x, train=False)
    )
    vit_cfg = dataclasses.replace(
        ViTConfig.deit_tiny(), image_size=28, patch_size=7, in_channels=1, num_classes=10
    )
    vit = jax.eval_shape(lambda: ViT(vit_cfg).init(jax.random.key(0), x, train=False))
    kat, vit = nn.meta.unbox(kat)["params"], nn.meta.unbox(vit)["params"]
    for i in range(12):
        rationals = {k: kat[f"blocks_{i}"]["mlp"].pop(k) for k in ("act1", "act2")}
        assert jax.tree.map(lambda s: s.shape, rationals) == {
            name: {"numerator": (1, 6), "denominator": (8, 4)} for name in ("act1", "act2")
        }
    assert jax.tree.map(lambda s: s.shape, kat) == jax.tree.map(lambda s: s.shape, vit)


def _f32(values):
    return np.asarray(values, np.float32)


def _init_grkan(features=32, mlp_dim=64, seed=0, **kwargs):
    module = GRKAN(mlp_dim, **kwargs)
    x = jax.random.normal(jax.random.key(seed), (2, 5, features))
    variables = jax.jit(module.init)(jax.random.key(1), x)
    return module, variables, x


def test_grkan_at_init_is_fc2_swish_fc1_computed_by_hand():
    module, variables, x = _init_grkan()
    p = nn.meta.unbox(variables)["params"]
    # The coefficients are the presets: identity before fc1, swish before fc2.
    for name, preset in (("act1", "identity"), ("act2", "swish")):
        np.testing.assert_array_equal(p[name]["numerator"], _f32([PRESETS[preset].numerator]))
        np.testing.assert_array_equal(
            p[name]["denominator"], _f32(np.tile(PRESETS[preset].denominator, (8, 1)))
        )
    got = jax.jit(module.apply)(variables, x)

    def dense(layer, v):
        return jnp.einsum("btd,df->btf", v, p[layer]["kernel"]) + p[layer]["bias"][None, None]

    swish = p["act2"]
    hidden = dense("fc1", x)  # act1 = identity: fc1 sees x itself
    want = dense("fc2", group_rational_reference(hidden, swish["numerator"], swish["denominator"]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # ... and the swish preset is swish: against x * sigmoid(x) (fit error 1.2e-6 on [-3, 3]).
    assert float(jnp.max(jnp.abs(hidden))) < 3.0
    np.testing.assert_allclose(got, dense("fc2", jax.nn.silu(hidden)), rtol=1e-4, atol=1e-5)


def test_group_rational_module_axes_dtypes_and_per_group_numerator():
    x = jax.random.normal(jax.random.key(0), (3, 16))
    module = GroupRational(num_groups=4, preset="tanh", shared_numerator=False)
    boxed = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    assert boxed["numerator"].names == (None, None)  # replicated: see efficient/nn/kan.py
    assert boxed["numerator"].value.shape == (4, 6) and boxed["denominator"].value.shape == (4, 4)
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_allclose(module.apply(variables, x), jnp.tanh(x), atol=1e-4)
    bf16 = GroupRational(num_groups=4, preset="tanh", param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    variables = bf16.init(jax.random.key(0), x)
    assert variables["params"]["denominator"].value.dtype == jnp.bfloat16
    y = bf16.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    # bf16 coefficients (a3 = 0.0963 -> 0.0962...) and a bf16 output: ~1e-2 of tanh.
    np.testing.assert_allclose(y.astype(jnp.float32), jnp.tanh(x), atol=2e-2)


def test_variance_preserving_fc_init():
    module, variables, _ = _init_grkan(features=192, mlp_dim=768, fc_init="variance_preserving")
    p = nn.meta.unbox(variables)["params"]
    # kaiming_normal_(fan_in) with gain 1 after the identity and sqrt(2.8178) after swish.
    np.testing.assert_allclose(np.std(p["fc1"]["kernel"]), 1 / np.sqrt(192), rtol=0.02)
    want = np.sqrt(VARIANCE_GAINS["swish"] / 768)
    np.testing.assert_allclose(np.std(p["fc2"]["kernel"]), want, rtol=0.02)
    # Normal draws, not truncated ones of the same std: 4.55% lie beyond 2 std (147,456 draws
    # each: the fraction within ~0.0005).
    for kernel, std in ((p["fc1"]["kernel"], 1 / np.sqrt(192)), (p["fc2"]["kernel"], want)):
        np.testing.assert_allclose(np.mean(np.abs(kernel) > 2 * std), 0.0455, atol=0.003)
    _, variables, _ = _init_grkan(features=192, mlp_dim=768)
    fc2 = variables["params"]["fc2"]["kernel"].value
    assert np.std(fc2) < 0.02 and np.max(np.abs(fc2)) <= 0.04  # trunc N(0, 0.02) at 2 std


def _random_variables(cfg, shape, seed=0):
    """Random ViT weights (numpy: fast on CPU) and the rationals at their init presets."""
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: KAT(cfg).init(jax.random.key(0), jnp.zeros(shape), train=False))
    )
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        names = [getattr(k, "key", None) for k in path]
        if names[-1] in ("numerator", "denominator"):
            preset = PRESETS[cfg.act1_init if "act1" in names else cfg.act2_init]
            row = getattr(preset, names[-1])
            return jnp.asarray(np.broadcast_to(row, s.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def test_forward_shapes_implementations_and_bf16():
    cfg = KATConfig.smoke()
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = _random_variables(cfg, x.shape)
    f32 = jax.jit(lambda v: KAT(cfg).apply(v, x, train=False))(variables)
    assert f32.shape == (2, 10) and f32.dtype == jnp.float32
    # The implementation reaches group_rational: the Pallas kernels (interpret mode) agree.
    interpret = dataclasses.replace(cfg, implementation="interpret")
    got = jax.jit(lambda v: KAT(interpret).apply(v, x, train=False))(variables)
    np.testing.assert_allclose(got, f32, rtol=1e-5, atol=1e-5)
    bf16_cfg = dataclasses.replace(cfg, dtype=jnp.bfloat16)
    bf16 = jax.jit(lambda v: KAT(bf16_cfg).apply(v, x, train=False))(variables)
    assert bf16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.05, err  # bf16 (8 mantissa bits) through 2 blocks, as the ViT test


def test_gradients_finite_and_reach_the_rationals():
    cfg = dataclasses.replace(KATConfig.smoke(), drop_path_rate=0.1)
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    variables = _random_variables(cfg, x.shape)

    def loss(params):
        logits = KAT(cfg).apply(
            {"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)}
        )
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    for i in range(cfg.num_layers):
        for act in ("act1", "act2"):
            for coeffs in ("numerator", "denominator"):
                # Identity's b = 0 still gets a gradient: sign(0) = +1 as in the CUDA kernels.
                assert float(jnp.max(jnp.abs(grads[f"blocks_{i}"]["mlp"][act][coeffs]))) > 0


@pytest.mark.parametrize("implementation", ["auto", "xla+interpret"])
def test_sharded_forward_equals_unsharded(implementation):
    """On a (data, fsdp, tensor) = (2, 2, 2) mesh, the XLA path and the kernels (which run per
    shard: the second rational's input is split over `tensor` on its channels) alike; with the
    kernels the gradients too (the coefficient sums all-reduced over the batch shards)."""
    cfg = dataclasses.replace(KATConfig.smoke(), implementation=implementation)
    model = KAT(cfg)
    x = jax.random.normal(jax.random.key(4), (4, 32, 32, 3))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert_logically_annotated(abstract)
    variables = _random_variables(cfg, x.shape)
    want = model.apply(variables, x, train=False)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(variables, logical_to_sharding(abstract, mesh))
    mlp, P = sharded["params"]["blocks_0"]["mlp"], jax.sharding.PartitionSpec
    assert mlp["fc1"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert mlp["fc2"]["kernel"].sharding.spec == P("tensor", "fsdp")
    # The rational coefficients (a numerator [1, 6], denominators [G, 4]) are tiny: replicated.
    assert mlp["act1"]["numerator"].sharding.spec == P(None, None)
    assert mlp["act2"]["denominator"].sharding.spec == P(None, None)
    attention = sharded["params"]["blocks_0"]["attention"]
    assert attention["query"]["kernel"].sharding.spec == P("fsdp", "tensor", None)
    with jax.set_mesh(mesh):
        run = jax.jit(lambda v, x: model.apply(v, x, train=False))
        got = run(sharded, jax.device_put(x, batch_sharding(mesh)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    if implementation == "auto":
        return

    def loss(params, x):
        return jnp.mean(model.apply({"params": params}, x, train=False) ** 2)

    want = jax.jit(jax.grad(loss))(variables["params"], x)
    with jax.set_mesh(mesh):
        got = jax.jit(jax.grad(loss))(sharded["params"], jax.device_put(x, batch_sharding(mesh)))
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6, err_msg=str(path)
        )


def test_nnx_bridge_matches_linen():
    x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
    variables = assert_nnx_bridge_matches_linen(KAT(KATConfig.smoke()), x, train=False)
    np.testing.assert_array_equal(
        variables["params"]["blocks_1"]["mlp"]["act2"]["numerator"],
        _f32([PRESETS["swish"].numerator]),
    )


def test_config_dtype_and_numpy_groups():
    smoke = KATConfig.smoke()
    with pytest.raises(ValueError, match="dtype=.*float16.*expected float32 or bfloat16"):
        dataclasses.replace(smoke, dtype=jnp.float16)
    assert dataclasses.replace(smoke, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    numpy_groups = dataclasses.replace(smoke, num_groups=np.int64(4))
    assert numpy_groups == dataclasses.replace(smoke, num_groups=4)
    assert type(numpy_groups.num_groups) is int
    with pytest.raises(ValueError, match="num_groups=True"):
        dataclasses.replace(smoke, num_groups=True)


def test_config_errors():
    smoke = KATConfig.smoke()
    with pytest.raises(ValueError, match="num_groups=5 must divide features=32"):
        dataclasses.replace(smoke, num_groups=5, num_heads=1)
    with pytest.raises(ValueError, match="num_groups=16 must divide mlp_dim=40"):
        dataclasses.replace(smoke, num_groups=16, mlp_dim=40)
    with pytest.raises(ValueError, match="num_groups=0"):
        dataclasses.replace(smoke, num_groups=0)
    with pytest.raises(ValueError, match="act2_init='gelu2'"):
        dataclasses.replace(smoke, act2_init="gelu2")
    with pytest.raises(ValueError, match="fc_init='kaiming'"):
        dataclasses.replace(smoke, fc_init="kaiming")
    with pytest.raises(ValueError, match="implementation='cuda'"):
        dataclasses.replace(smoke, implementation="cuda")
    with pytest.raises(ValueError, match="patch_size=5"):  # the ViT checks still run
        dataclasses.replace(smoke, patch_size=5)
    for bad in ["gleu", ["gelu"]]:  # a list: the same error, not a TypeError
        with pytest.raises(ValueError, match=r"preset=.*one of \['gelu'"):
            fc_gain(bad)
    with pytest.raises(ValueError, match="images must be"):
        jax.eval_shape(
            lambda: KAT(smoke).init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)), train=False)
        )


def test_presets_match_vit_fashion_mnist():
    from experiments import kat, vit
    from experiments.image_classification import build_model
    from experiments.registry import presets

    registered = presets()
    kat_run, vit_run = (
        registered["kat/fashion_mnist"].config,
        registered["vit/fashion_mnist"].config,
    )
    assert kat_run.data == vit_run.data and kat_run.train == vit_run.train
    assert kat_run.label_smoothing == vit_run.label_smoothing
    assert kat.fashion_mnist(3).train == vit.fashion_mnist(3).train
    vit_fields = {f.name for f in dataclasses.fields(ViTConfig)}
    for name in vit_fields:
        assert getattr(kat_run.model, name) == getattr(vit_run.model, name), name
    assert type(build_model(kat_run.model)) is KAT and type(build_model(vit_run.model)) is ViT
    smoke = registered["kat/smoke"].config
    assert isinstance(smoke.model, KATConfig) and smoke.model.in_channels == 1
    registered["kat/smoke"].check(smoke)


def test_config_reaches_every_grkan(monkeypatch):
    """KATConfig's GR-KAN fields reach each block: `implementation` the op itself (a spy on the
    `group_rational` that efficient.nn.kan calls), `act2_init` the second rational's coefficients,
    `shared_numerator` their shape, and `fc_init="variance_preserving"` the Dense kernels (KAT
    §4.3, kaiming_normal_ fan_in: std sqrt(gain / fan_in), gain 1 after the identity and the
    authors' calculate_gain value after gelu)."""
    import efficient.nn.kan as kan

    real, seen = kan.group_rational, []

    def spy(x, numerator, denominator, *, implementation="auto", **kwargs):
        seen.append(implementation)
        return real(x, numerator, denominator, implementation="xla", **kwargs)  # fast on CPU

    monkeypatch.setattr(kan, "group_rational", spy)
    cfg = dataclasses.replace(
        KATConfig.smoke(),
        implementation="interpret",
        act2_init="gelu",
        shared_numerator=False,
        fc_init="variance_preserving",
    )
    x = jnp.zeros((1, 32, 32, 3))
    params = nn.meta.unbox(jax.jit(lambda: KAT(cfg).init(jax.random.key(0), x, train=False))())
    assert seen == ["interpret"] * (2 * cfg.num_layers)
    d, f, g = cfg.features, cfg.mlp_dim, cfg.num_groups  # 32, 64, 8
    fc1, fc2 = [], []
    for i in range(cfg.num_layers):
        mlp = params["params"][f"blocks_{i}"]["mlp"]
        for name, preset in (("act1", "identity"), ("act2", "gelu")):
            np.testing.assert_array_equal(
                mlp[name]["numerator"], _f32(np.tile(PRESETS[preset].numerator, (g, 1)))
            )
            np.testing.assert_array_equal(
                mlp[name]["denominator"], _f32(np.tile(PRESETS[preset].denominator, (g, 1)))
            )
        fc1.append(np.asarray(mlp["fc1"]["kernel"]))
        fc2.append(np.asarray(mlp["fc2"]["kernel"]))
    # 2 x 2,048 draws each: the sample std within ~3% (trunc N(0, 0.02) would be ~0.018).
    np.testing.assert_allclose(np.std(fc1), 1 / np.sqrt(d), rtol=0.06)
    np.testing.assert_allclose(np.std(fc2), np.sqrt(2.3567850379928976 / f), rtol=0.06)
