"""Hyena: parameter counts, filters and the operator against float64 numpy, causality, cached
decoding, bf16, gradients, sharding, NNX, config errors."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.hyena import (
    Hyena,
    HyenaConfig,
    HyenaOperator,
    ImplicitFilter,
    exponential_decay,
    positional_features,
)
from efficient.models.transformer import TransformerConfig
from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh
from tests.efficient.models._checks import (
    assert_cached_decode_matches_full_forward,
    assert_greedy_generation_matches_argmax_loop,
    assert_logically_annotated,
    assert_nnx_bridge_matches_linen,
)

SMOKE = HyenaConfig.smoke()


def _tokens(B=2, T=12, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, 256, dtype=jnp.int32)


def _init(config, tokens=None):
    tokens = _tokens() if tokens is None else tokens
    model = Hyena(config)
    return model, nn.unbox(model.init(jax.random.key(1), tokens)["params"])


def _count(config) -> int:
    shapes = jax.eval_shape(
        lambda: Hyena(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))


# ---------------------------------------------------------------------------------------------
# float64 numpy references, written from the formulas (not from the module's code)


def _features64(max_len, emb_dim):
    bands = (emb_dim - 1) // 2
    s = np.arange(max_len)[:, None]
    f = np.linspace(1e-4, bands - 1, bands)[None, :]
    z = np.exp(-1j * f * 2 * np.pi * s / max_len)  # Safari: exp(-i f w), w = 2 pi s / L
    return np.concatenate([s / (max_len - 1), z.real, z.imag], axis=1)


def _filter64(params, config, channels, length):
    """decay(t) · MLP(features(t)), float64, [length, channels]."""
    z = _features64(config.max_len, config.emb_dim)[:length]
    freq = np.asarray(params["frequency"], np.float64)

    def dense(p, x):
        y = x @ np.asarray(p["kernel"], np.float64)
        return y + np.asarray(p["bias"], np.float64) if "bias" in p else y

    h = np.sin(freq * dense(params["dense_0"], z))
    for i in range(config.filter_layers):
        h = np.sin(freq * dense(params[f"dense_{i + 1}"], h))
    h = dense(params["out"], h)
    # Safari's ExponentialModulation: rates linear from ln(target) / slow to ln(target) / fast.
    log_target = np.log(config.decay_target)
    rates = -np.linspace(
        log_target / config.slow_decay_pct, log_target / config.fast_decay_pct, channels
    )
    t = np.arange(config.max_len)[:length, None] / (config.max_len - 1)
    return h * np.exp(-t * rates[None, :])


def _operator64(params, config, x):
    """The Hyena operator in float64 with a direct causal convolution sum."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f64(x)
    B, T, D = x.shape
    N, W = config.order, config.short_filter_size
    p = x @ f64(params["in_proj"]["kernel"]) + f64(params["in_proj"]["bias"])  # [B, T, (N+1)D]
    padded = np.concatenate([np.zeros((B, W - 1, p.shape[-1])), p], axis=1)
    kernel = f64(params["short_filter"]["kernel"])
    q = sum(padded[:, j : j + T] * kernel[j] for j in range(W))
    q = q + f64(params["short_filter"]["bias"])
    streams = q.reshape(B, T, D, N + 1)  # column d (N + 1) + n is stream n of channel d
    h = _filter64(params["filter"], config, N * D, T).reshape(T, D, N)
    skip = f64(params["skip"]).reshape(D, N)
    z = streams[..., 0]
    for n in range(N):
        conv = np.zeros_like(z)
        for t in range(T):
            for s in range(t + 1):
                conv[:, t] += h[t - s, :, n] * z[:, s]
        z = streams[..., n + 1] * (conv + skip[:, n] * z)
    return z @ f64(params["out_proj"]["kernel"]) + f64(params["out_proj"]["bias"])


# ---------------------------------------------------------------------------------------------


def test_kjv_matches_the_transformer_kjv_size():
    hyena, transformer = (
        HyenaConfig.kjv(),
        TransformerConfig(
            vocab_size=256,
            features=256,
            num_layers=4,
            num_heads=4,
            mlp_dim=768,
            tie_embeddings=True,
        ),
    )
    assert transformer.num_params() == 3_475_712
    assert hyena.num_params() == 3_667_456 == _count(hyena)
    D, N, M, E = 256, 2, 64, 33
    # Per layer: attention 4 D^2 -> in/out projections (N + 1) D^2 + D^2 (= 4 D^2 at N = 2) with
    # biases, short conv, the filter MLP, its shared frequency and the skip terms.
    extra = (3 * D + D) + 4 * 3 * D + ((E + 1) * M + 2 * (M + 1) * M + M * N * D + M + N * D)
    assert hyena.num_params() - transformer.num_params() == 4 * extra


@pytest.mark.parametrize(
    "config",
    [
        SMOKE,
        dataclasses.replace(SMOKE, order=3, use_bias=False, filter_layers=0),
        HyenaConfig.kjv(),
    ],
    ids=["smoke", "order3-nobias", "kjv"],
)
def test_num_params_matches_init(config):
    assert _count(config) == config.num_params()


def test_short_filter_starts_from_torch_conv1d_default():
    # Safari keeps torch's nn.Conv1d default for the short filter: weight and bias both
    # U(-1/sqrt(W), 1/sqrt(W)) with fan_in = W (depthwise). kjv's 1,536 channels of width 3
    # give 4,608 taps: the std of U(-b, b) is b / sqrt(3) within ~2%.
    config = HyenaConfig.kjv()
    _, params = _init(config)
    conv = params["layer_0"]["hyena"]["short_filter"]
    kernel, bias = conv["kernel"], conv["bias"]
    W = config.short_filter_size
    bound = 1 / math.sqrt(W)
    for name, value in (("kernel", kernel), ("bias", bias)):
        value = np.asarray(value)
        assert np.abs(value).max() <= bound, name
        np.testing.assert_allclose(value.std(), bound / math.sqrt(3), rtol=0.05, err_msg=name)
        np.testing.assert_allclose(value.mean(), 0, atol=0.02, err_msg=name)


def test_positional_features_against_the_complex_exponential():
    got = positional_features(16, 7)
    assert got.shape == (16, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, _features64(16, 7), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[:, 0], np.linspace(0, 1, 16), atol=1e-7)  # t runs 0..1


def test_decay_window_shape_and_endpoints():
    fast, slow, target = 0.3, 1.5, 1e-2
    w = exponential_decay(11, 5, fast_decay_pct=fast, slow_decay_pct=slow, decay_target=target)
    assert w.shape == (11, 5)
    np.testing.assert_allclose(w[0], 1.0)  # no decay at t = 0
    # t = s / 10: the fastest channel reaches the target at t = 0.3 (s = 3), the slowest at
    # t = 1.5, so at t = 1 it is target^(1 / 1.5).
    np.testing.assert_allclose(w[3, -1], target, rtol=1e-6)
    np.testing.assert_allclose(w[10, 0], target ** (1 / slow), rtol=1e-6)
    assert np.all(np.diff(w, axis=0) < 0) and np.all(np.diff(w[1:], axis=1) < 0)
    rates = np.linspace(-math.log(target) / slow, -math.log(target) / fast, 5)
    np.testing.assert_allclose(w, np.exp(-np.linspace(0, 1, 11)[:, None] * rates), rtol=1e-6)


def test_implicit_filter_against_numpy_and_prefix_property():
    config = dataclasses.replace(SMOKE, max_len=32, filter_layers=1)
    module = ImplicitFilter(
        channels=6, filter_order=config.filter_order, filter_layers=config.filter_layers,
        emb_dim=config.emb_dim, frequency=config.filter_frequency, max_len=config.max_len,
        fast_decay_pct=config.fast_decay_pct, slow_decay_pct=config.slow_decay_pct,
        decay_target=config.decay_target, kernel_init=jax.nn.initializers.normal(0.5),
    )  # fmt: skip
    params = nn.unbox(module.init(jax.random.key(3), 32)["params"])
    full = np.asarray(module.apply({"params": params}, 32))
    np.testing.assert_allclose(full, _filter64(params, config, 6, 32), rtol=1e-4, atol=1e-5)
    # A shorter filter is the first taps of the same function (filters do not stretch with T).
    # (Equal up to float32 rounding: XLA's matmul may block 9 rows differently from 32.)
    short = np.asarray(module.apply({"params": params}, 9))
    np.testing.assert_allclose(short, full[:9], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="length=33"):
        module.apply({"params": params}, 33)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_operator_against_float64_direct_convolution(order):
    config = dataclasses.replace(SMOKE, order=order, max_len=64, init_std=0.3)
    x = jax.random.normal(jax.random.key(4), (2, 10, 8))
    op = HyenaOperator(dataclasses.replace(config, fft_implementation="xla"))
    params = nn.unbox(op.init(jax.random.key(5), x)["params"])
    # Non-zero biases so that every term is exercised.
    params = jax.tree.map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.key(p.size), p.shape), params
    )
    got = jax.jit(lambda p: op.apply({"params": p}, x))(params)
    want = _operator64(params, config, x)
    # fp32 composed (two projections, an FFT of size 256, a gate): the 1e-4 tier.
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_causality_by_perturbation():
    model, params = _init(SMOKE)
    tokens = _tokens(T=20)
    apply = jax.jit(lambda t: model.apply({"params": params}, t))
    logits = apply(tokens)
    assert logits.shape == (2, 20, 256)
    for t in (0, 7, 19):
        changed = apply(tokens.at[:, t].set((tokens[:, t] + 1) % 256))
        diff = np.asarray(jnp.any(jnp.abs(changed - logits) > 1e-6, axis=(0, 2)))
        assert not diff[:t].any()
        assert diff[t:].all()


def test_pallas_kernel_in_interpret_mode_matches_the_xla_path():
    config = HyenaConfig.smoke(features=16, num_layers=1, mlp_dim=32)
    tokens = _tokens(B=1)
    model, params = _init(config, tokens)
    got = {
        impl: Hyena(dataclasses.replace(config, fft_implementation=impl)).apply(
            {"params": params}, tokens
        )
        for impl in ("interpret", "xla")
    }
    np.testing.assert_allclose(
        np.asarray(got["interpret"]), np.asarray(got["xla"]), rtol=1e-5, atol=1e-5
    )


def test_saved_fft_residuals_give_the_same_gradients():
    """fft_save_residuals reaches fft_conv (the kernels' backward then reads the forward's
    spectrum): the loss gradients equal those of the recomputing backward."""
    config = HyenaConfig.smoke(
        features=16, num_layers=1, mlp_dim=32, fft_implementation="interpret"
    )
    tokens = _tokens(B=1)
    _, params = _init(config, tokens)

    def grads(save):
        model = Hyena(dataclasses.replace(config, fft_save_residuals=save))
        loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, tokens)))  # noqa: E731
        return jax.grad(loss)(params)

    saved, recomputed = grads(True), grads(False)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(recomputed), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)

    def kernel_dots(save):  # the option reached the kernels: fewer matmuls in the backward
        jaxpr = jax.make_jaxpr(functools.partial(grads, save))().jaxpr
        text = str(jaxpr)
        return text.count("dot_general")

    assert kernel_dots(True) < kernel_dots(False)


def test_cached_decode_matches_full_forward():
    model, params = _init(SMOKE)
    assert_cached_decode_matches_full_forward(model, params, _tokens(T=11), prefill=6)


def test_greedy_generation_matches_uncached_argmax_loop():
    model, params = _init(SMOKE)
    assert_greedy_generation_matches_argmax_loop(model, params, _tokens(T=5), 6)


def test_bf16_compute_runs_close_to_f32():
    model, params = _init(SMOKE)
    tokens = _tokens()
    f32 = model.apply({"params": params}, tokens)
    bf16_model = Hyena(dataclasses.replace(SMOKE, dtype=jnp.bfloat16))
    bf16 = bf16_model.apply({"params": params}, tokens)
    assert bf16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(bf16.astype(jnp.float32) - f32)) / jnp.max(jnp.abs(f32)))
    assert err < 0.05, err
    grads = jax.jit(
        jax.grad(lambda p: bf16_model.apply({"params": p}, tokens).astype(jnp.float32).sum())
    )(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_jit_grad_is_finite_reaches_every_parameter_and_remat_agrees():
    model, params = _init(SMOKE)
    remat = Hyena(dataclasses.replace(SMOKE, remat=True))
    tokens = _tokens()

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, tokens) ** 2)

    a = jax.jit(jax.grad(loss(model)))(params)
    b = jax.jit(jax.grad(loss(remat)))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(a):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.max(jnp.abs(g))) > 0, path  # filter MLP, frequency, skip included
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fft_implementation", ["auto", "interpret"])
def test_sharded_forward_equals_unsharded(fft_implementation):
    """On a (2, 2, 2) mesh, with the XLA path and with the kernels (run per shard on the batch
    and the channels)."""
    model = Hyena(dataclasses.replace(SMOKE, fft_implementation=fft_implementation))
    tokens = _tokens(B=4)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(1), tokens))
    assert_logically_annotated(abstract)
    params = nn.unbox(model.init(jax.random.key(1), tokens))
    want = model.apply(params, tokens)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, logical_to_sharding(abstract, mesh))
    layer = sharded["params"]["layer_0"]["hyena"]
    P = jax.sharding.PartitionSpec
    assert layer["in_proj"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert layer["filter"]["out"]["kernel"].sharding.spec == P(None, "tensor")
    assert layer["out_proj"]["kernel"].sharding.spec == P("tensor", "fsdp")
    with jax.set_mesh(mesh):
        got = jax.jit(lambda v: model.apply(v, tokens))(sharded)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_nnx_bridge_matches_linen():
    assert_nnx_bridge_matches_linen(Hyena(SMOKE), _tokens())


def test_call_errors():
    model, params = _init(SMOKE)
    with pytest.raises(ValueError, match="positions"):
        model.apply({"params": params}, _tokens(), positions=jnp.zeros((2, 12), jnp.int32))
    with pytest.raises(ValueError, match="max_len=256"):
        model.apply({"params": params}, _tokens(B=1, T=257))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"emb_dim": 4}, "emb_dim"),
        ({"emb_dim": 1}, "emb_dim"),
        ({"order": 0}, "order"),
        ({"short_filter_size": 0}, "short_filter_size"),
        ({"filter_layers": -1}, "filter_layers"),
        ({"fast_decay_pct": 0.0}, "fast_decay_pct"),
        ({"decay_target": 1.0}, "decay_target"),
        ({"max_len": 2**20}, "max_len"),
        ({"num_layers": 0}, "num_layers"),
        ({"dtype": jnp.float64}, "dtype=.*float64.*expected one of float32, bfloat16, float16"),
        ({"dtype": "int8"}, "dtype='int8'"),
        ({"param_dtype": jnp.int8}, "param_dtype=.*int8.*expected a floating dtype"),
        ({"filter_frequency": float("nan")}, "filter_frequency=nan"),
        ({"init_std": 0.0}, "init_std=0.0"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SMOKE, **overrides)


def test_flags_and_numpy_integers():
    for name in ("use_bias", "remat", "fft_save_residuals", "tie_embeddings"):
        for bad in ("yes", 1, None):
            with pytest.raises(ValueError, match=f"{name}={bad!r}: expected True or False"):
                dataclasses.replace(SMOKE, **{name: bad})
    assert dataclasses.replace(SMOKE, filter_layers=np.int64(2)).filter_layers == 2


def test_every_fft_conv_dtype_is_accepted():
    for dtype in (jnp.float32, jnp.bfloat16, "float16"):
        assert dataclasses.replace(SMOKE, dtype=dtype).dtype == dtype


def test_unknown_fft_implementation_is_rejected():
    with pytest.raises(ValueError, match="fft_implementation"):
        dataclasses.replace(SMOKE, fft_implementation="cuda")
