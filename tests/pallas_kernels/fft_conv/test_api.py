"""fft_conv's argument validation and dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fft_conv import BlockSizes, api, fft_conv, fft_conv_reference
from tests.pallas_kernels.fft_conv.common import assert_close, inputs
from tests.pallas_kernels.hlo import largest_all_gather


def _uk(length=100, filter_len=100, dtype=jnp.float32):
    u, k, _, _ = inputs(0, 1, 2, length, filter_len, dtype)
    return u, k


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fft_size": 300}, "fft_size=300: must be a power of two"),
        ({"fft_size": 128}, "fft_size=128"),
        ({"fft_size": 2**21}, "fft_size=2097152"),
        ({"partial_taps": 0}, r"partial_taps=0: must be an int in \[1, Lk=100\]"),
        ({"partial_taps": 101}, "partial_taps=101"),
        ({"kept_frequencies": 48}, "kept_frequencies=48: must be a multiple of 32"),
        ({"kept_frequencies": 512}, r"kept_frequencies=512: must be in \[32, N=256\]"),
        ({"fft_size": 65536, "implementation": "pallas"}, "'pallas': compiled .* need a GPU"),
        ({"fft_size": 65536, "implementation": "interpret"}, "use implementation='xla'"),
    ],
)
def test_bad_options(kwargs, match):
    u, k = _uk()
    with pytest.raises(ValueError, match=match):
        fft_conv(u, k, **kwargs)


def test_fft_size_smaller_than_input():
    u, k = _uk(length=300)
    with pytest.raises(ValueError, match=r"fft_size=256: must be .* >= L=300"):
        fft_conv(u, k, fft_size=256)
    u, k = _uk(filter_len=600)
    with pytest.raises(ValueError, match=r"fft_size=512: .* >= Lk=600"):
        fft_conv(u, k, fft_size=512)


def test_default_size_too_large():
    u, k = _uk(length=2**20)
    with pytest.raises(ValueError, match="exceeds the supported maximum 1048576"):
        fft_conv(u, k)


def test_bad_dtypes():
    u, k = _uk()
    with pytest.raises(ValueError, match="k.dtype=bfloat16: k must be float32"):
        fft_conv(u, k.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="u"):
        fft_conv(u.astype(jnp.int32), k)
    with pytest.raises(ValueError, match="pregate .* must have u's shape"):
        fft_conv(u, k, pregate=u.astype(jnp.bfloat16))


def test_bad_shapes():
    u, k = _uk()
    with pytest.raises(ValueError):
        fft_conv(u[0], k)
    with pytest.raises(ValueError):
        fft_conv(u, k[:1])
    with pytest.raises(ValueError):
        fft_conv(u, k, postgate=u[..., :50])


def test_bad_implementation():
    u, k = _uk()
    with pytest.raises(ValueError, match="implementation"):
        fft_conv(u, k, implementation="cuda")  # type: ignore[arg-type]
    # Pallas' own error on CPU named neither the argument nor the alternatives.
    with pytest.raises(ValueError, match="implementation='pallas': compiled .*'interpret'"):
        fft_conv(u, k, implementation="pallas")
    with pytest.raises(ValueError, match="fft_size"):
        fft_conv(u, k, fft_size=256.0)  # type: ignore[arg-type]
    # Not returned unchanged for the caller to treat as a kernel path.
    with pytest.raises(ValueError, match="implementation='auot': one of 'auto', 'pallas'"):
        api.resolve_implementation("auot", 1024)


def test_conv_config_refuses_an_unknown_implementation(no_typecheck):
    # Anything but "xla" used to run the Pallas kernels.
    for bad in ("XLA", "interpet", None):
        with pytest.raises(ValueError, match=r"ConvConfig.implementation=.*\['interpret', 'pal"):
            api.vjp.ConvConfig(fft_size=256, seq_len=8, filter_len=8, implementation=bad)


def test_default_fft_size_is_causal_next_power_of_two():
    u, k = _uk(length=300, filter_len=250)  # L + Lk - 1 = 549 -> N = 1024
    y = jax.jit(fft_conv)(u, k)
    assert_close(y, fft_conv_reference(u, k, fft_size=1024))
    u, k = _uk(length=20, filter_len=20)  # -> the minimum N = 256
    assert_close(fft_conv(u, k), fft_conv_reference(u, k, fft_size=256))


def test_auto_is_xla_on_cpu(monkeypatch):
    assert jax.default_backend() == "cpu"
    # On CPU the XLA path is jnp.fft at every size (it was faster; api._JNP_FFT_SIZES).
    assert api.resolve_implementation("auto", 1024) == "jnp_fft"
    assert api.resolve_implementation("interpret", 1024) == "interpret"
    monkeypatch.setattr(api, "_JNP_FFT_SIZES", {})
    assert api.resolve_implementation("auto", 1024) == "xla"
    u, k = _uk()
    np.testing.assert_array_equal(
        np.asarray(fft_conv(u, k)), np.asarray(fft_conv(u, k, implementation="xla"))
    )


def test_xla_may_pick_jnp_fft(monkeypatch):
    monkeypatch.setattr(api, "_JNP_FFT_SIZES", {"cpu": frozenset({256})})
    assert api.resolve_implementation("xla", 256) == "jnp_fft"
    assert api.resolve_implementation("xla", 512) == "xla"
    u, k = _uk()
    assert_close(fft_conv(u, k), fft_conv_reference(u, k, fft_size=256))


@pytest.mark.parametrize(
    ("backend", "expected"), [("gpu", "jnp_fft"), ("tpu", "pallas"), ("cpu", "jnp_fft")]
)
def test_auto_follows_the_measurements(monkeypatch, backend, expected):
    # GPU: cuFFT beat both the Triton kernels and the Monarch XLA path on an H100 (README.md).
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert api.resolve_implementation("auto", 4096) == expected
    assert api.resolve_implementation("pallas", 4096) == "pallas"


def test_block_sizes_fields_take_numpy_ints_and_refuse_other_types():
    with pytest.raises(ValueError, match=r"BlockSizes.dot=\['bf16'\]: must be one of"):
        BlockSizes(dot=["bf16"])  # a list: the same error, not a TypeError
    # numpy integers are stored as ints: the same static argument as the int-built tiling
    numpy_built = BlockSizes(block_h=np.int64(4), max_radix=np.int32(128), heads_per_dot=np.int8(2))
    assert numpy_built == BlockSizes(block_h=4, max_radix=128, heads_per_dot=2)
    assert hash(numpy_built) == hash(BlockSizes(block_h=4, max_radix=128, heads_per_dot=2))
    assert type(numpy_built.max_radix) is int
    for bad in (4.0, True, "4"):
        with pytest.raises(ValueError, match="BlockSizes.block_h must be a positive int"):
            BlockSizes(block_h=bad)


def test_block_sizes_parse_and_errors():
    assert BlockSizes.parse("h4b8w8") == BlockSizes(block_h=4, block_b=8, num_warps=8)
    assert BlockSizes.parse("s2") == BlockSizes(num_stages=2)
    assert BlockSizes.parse("r128m4-bf16") == BlockSizes(max_radix=128, heads_per_dot=4, dot="bf16")
    for spec, match in [
        ("", "expected letters h"),
        ("h4x", "expected letters h"),
        ("h4q2", r"unknown letters \['q'\]"),
        ("h0", "BlockSizes.block_h must be a positive int, got 0"),
        ("m0", "BlockSizes.heads_per_dot must be a positive int, got 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            BlockSizes.parse(spec)
    with pytest.raises(ValueError, match="BlockSizes.block_b must be a positive int"):
        BlockSizes(block_b=-1)
    assert BlockSizes.parse("r128-tf32x3") == BlockSizes(max_radix=128, dot="tf32x3")
    assert BlockSizes.parse("-bf16") == BlockSizes(dot="bf16")
    with pytest.raises(ValueError, match="BlockSizes.max_radix must be one of 32, 64, 128, 256"):
        BlockSizes.parse("r100")
    with pytest.raises(ValueError, match=r"BlockSizes.dot='fp8': must be one of \['bf16', "):
        BlockSizes.parse("h4-fp8")
    for spec, match in [
        ("h4h8", r"letters \['h'\] given more than once"),
        ("h4-", "then optionally -<dot>"),
    ]:
        with pytest.raises(ValueError, match=match):
            BlockSizes.parse(spec)
    # Every field takes a numpy int alike, stored as an int (max_radix used to keep it).
    for field in ("num_warps", "max_radix"):
        assert type(getattr(BlockSizes(**{field: np.int64(64)}), field)) is int


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_block_sizes_argument(implementation):
    """A spec string is parsed; anything else that is not a BlockSizes is an error on every path."""
    u, k = _uk()
    want = fft_conv(u, k, implementation=implementation)
    got = fft_conv(u, k, implementation=implementation, block_sizes="h1b1")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match=r"block_sizes=\{.*\}: expected None, a .*BlockSizes"):
        fft_conv(u, k, implementation=implementation, block_sizes={"block_h": 4})
    with pytest.raises(ValueError, match="block sizes spec 'h4x'"):
        fft_conv(u, k, implementation=implementation, block_sizes="h4x")


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_backward_block_sizes_argument(implementation):
    """Checked on every path like block_sizes: its forms, and the plan it must share."""
    u, k = _uk()  # causal L = Lk = 100: N = 256 (16 x 16 at every max_radix)
    want = fft_conv(u, k, implementation=implementation)
    got = fft_conv(u, k, implementation=implementation, backward_block_sizes=BlockSizes(block_h=1))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match=r"backward_block_sizes=7: expected None, a .*BlockSizes"):
        fft_conv(u, k, implementation=implementation, backward_block_sizes=7)
    with pytest.raises(ValueError, match="block sizes spec 'h4x'"):
        fft_conv(u, k, implementation=implementation, backward_block_sizes="h4x")
    u, k = _uk(length=2048, filter_len=2048)  # N = 4096: 16^3 at r32, 64 x 64 at r128
    with pytest.raises(
        ValueError,
        match=r"backward_block_sizes.max_radix=128 plans N=4096 as 64 x 64, "
        r"block_sizes.max_radix=32 as 16 x 16 x 16: both passes need the same plan",
    ):
        fft_conv(u, k, implementation=implementation, backward_block_sizes="r128")


def test_numpy_integer_options():
    """Sizes computed with numpy are accepted (and mean what the same Python ints mean)."""
    u, k = _uk()
    for kwargs in [
        {"fft_size": 512},
        {"partial_taps": 5},
        {"fft_size": 1024, "kept_frequencies": 64},
    ]:
        as_numpy = {name: np.int64(value) for name, value in kwargs.items()}
        want = fft_conv(u, k, implementation="xla", **kwargs)
        got = fft_conv(u, k, implementation="xla", **as_numpy)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_non_integer_sizes():
    u, k = _uk()
    for bad in (True, 512.0, "512"):
        with pytest.raises(ValueError, match=f"fft_size={bad!r}: must be a power of two"):
            fft_conv(u, k, fft_size=bad)


def test_not_arrays_and_empty_filter():
    u, k = _uk()
    with pytest.raises(ValueError, match="u: expected a jax or numpy array, got list"):
        fft_conv(u.tolist(), k)
    with pytest.raises(ValueError, match="postgate: expected a jax or numpy array, got float"):
        fft_conv(u, k, postgate=2.0)
    with pytest.raises(ValueError, match=r"k \(2, 0\): the filter needs at least one tap"):
        fft_conv(u, k[:, :0])


@pytest.mark.parametrize(
    ("fft_size", "spec", "refused"),
    [
        (4096, "h1w8-bf16", True),  # 16 x 16 x 16: wrong on an H200
        (4096, "h2m2w8-bf16x3", True),
        (256, "-bf16", True),  # 16 x 16: 16-wide bf16 dots, unchecked
        (32768, "-bf16", True),  # 32 x 32 x 32: order 3, unchecked
        (4096, "r128h1w4-bf16", False),  # 64 x 64: right on the H200
        (1024, "h8m8w8-bf16", False),  # 32 x 32: right on the H200
        (4096, "h2m2w8-tf32", False),  # 16 x 16 x 16 with tf32: right
    ],
)
def test_gpu_refuses_bf16_dots_where_they_were_wrong(fft_size, spec, refused):
    from pallas_kernels import platform

    u = jax.ShapeDtypeStruct((2, 8, fft_size // 2), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((8, fft_size // 2), jnp.float32)

    def loss(u, k):
        y = fft_conv(u, k, fft_size=fft_size, implementation="pallas", block_sizes=spec)
        return y.astype(jnp.float32).sum()

    with platform.compiling_for("gpu"):  # traced for a GPU (the check runs while tracing)
        if refused:
            with pytest.raises(ValueError, match="bf16 dots were right on GPU only in order-2"):
                jax.eval_shape(jax.grad(loss), u, k)
        else:
            assert jax.eval_shape(jax.grad(loss), u, k).shape == u.shape


def test_tf32_needs_a_gpu():
    u, k = _uk()
    with pytest.raises(ValueError, match="BlockSizes.dot='tf32x3' needs a GPU"):
        fft_conv(u, k, implementation="interpret", block_sizes=BlockSizes(dot="tf32x3"))


@pytest.mark.parametrize("shape", [(0, 2, 100), (2, 0, 100), (2, 2, 0)])
@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_empty_input(shape, implementation):
    """An empty batch, head or time axis: [] out and zero filter gradients (no kernel launch)."""
    u = jnp.zeros(shape, jnp.float32)
    k = jnp.ones((shape[1], 7), jnp.float32)

    def loss(u, k):
        return fft_conv(u, k, implementation=implementation).sum()

    assert fft_conv(u, k, implementation=implementation).shape == shape
    du, dk = jax.grad(loss, argnums=(0, 1))(u, k)
    assert du.shape == shape
    np.testing.assert_array_equal(np.asarray(dk), np.zeros(k.shape, np.float32))


def _value_and_grads(implementation):
    """jit of the value and the four gradients of a loss of the gated convolution's output."""

    def loss(u, k, pre, post):
        y = fft_conv(u, k, pregate=pre, postgate=post, implementation=implementation)
        return jnp.sum(y * jnp.cos(y))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        (("data",), (2, 8, 48)),  # data parallel
        (("data", "tensor"), (2, 4, 48)),  # and the heads
        ((None, ("data", "tensor")), (8, 1, 48)),  # heads only
    ],
)
def test_kernels_run_per_shard_under_a_sharded_jit(spec, local):
    """Each device runs the forward and backward kernels on its batch rows and heads (no
    u-sized all-gather), du keeps u's sharding, and the values and all four gradients (dk summed
    over the batch shards) equal the XLA path's."""
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    u, k, pre, post = inputs(5, 8, 8, 48, 20, gated=True)
    sharding = jax.NamedSharding(mesh, jax.P(*spec))
    u, pre, post = (jax.device_put(a, sharding) for a in (u, pre, post))

    xla = _value_and_grads("xla")(u, k, pre, post)
    compiled = _value_and_grads("interpret").lower(u, k, pre, post).compile()
    kernel = compiled(u, k, pre, post)
    assert largest_all_gather(compiled) < np.prod(local)
    du = kernel[1][0]
    assert du.sharding.shard_shape(du.shape) == local
    for got, want in zip(jax.tree.leaves(kernel), jax.tree.leaves(xla), strict=True):
        assert_close(got, want)


@pytest.mark.parametrize(
    ("spec", "filter_spec"),
    [(("data",), None), (("data", "tensor"), None), (("data", "tensor"), "tensor")],
)
@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_every_path_runs_under_an_explicit_mesh(spec, filter_spec, implementation):
    """With the shardings in the types (AxisType.Explicit: the kernels used to fail outside
    Manual axes), the value and all four gradients equal the unsharded XLA path's, du is typed as
    u and dk as k (heads split or not), and the kernels gather no u-sized block."""
    if implementation == "xla" and "tensor" in spec and jax.__version_info__ < (0, 12):
        pytest.skip("XLA:CPU of jax 0.11 fails this program's FFTs (fft_thunk layout RET_CHECK)")
    mesh = jax.make_mesh(
        (4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    # B = 64: a device's block of u (3,072 elements or more) is larger than the filter
    # spectrum's cotangent (2,048), which is gathered when k is replicated and the heads split.
    u, k, pre, post = inputs(6, 64, 8, 48, 20, gated=True)

    want = _value_and_grads("xla")(u, k, pre, post)
    with jax.set_mesh(mesh):
        u, pre, post = (jax.device_put(a, jax.P(*spec)) for a in (u, pre, post))
        k = jax.device_put(k, jax.P(filter_spec))
        compiled = _value_and_grads(implementation).lower(u, k, pre, post).compile()
        got = compiled(u, k, pre, post)
        for grad, primal in zip(got[1], (u, k, pre, post), strict=True):
            assert jax.typeof(grad).sharding.spec == jax.typeof(primal).sharding.spec
    if implementation != "xla":
        assert largest_all_gather(compiled) < np.prod(u.sharding.shard_shape(u.shape))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(g, w)


@pytest.mark.parametrize(("implementation", "check_vma"), [("xla", True), ("interpret", False)])
def test_inside_a_shard_map(implementation, check_vma):
    """Called per device inside a user's `jax.shard_map` (u split over B and H, k over H): the
    value and all four gradients equal the unsharded ones, dk summed over the batch devices.
    (The interpreter cannot run under check_vma=True, a jax limitation; compiled TPU kernels do:
    tests/pallas_kernels/test_aot.py.)"""
    if implementation == "xla" and jax.__version_info__ < (0, 12):
        pytest.skip("XLA:CPU of jax 0.11 fails this program's FFTs (fft_thunk layout RET_CHECK)")
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    u, k, pre, post = inputs(7, 8, 8, 48, 20, gated=True)
    rows = jax.P("data", "tensor")

    def op(u, k, pre, post):
        return fft_conv(u, k, pregate=pre, postgate=post, implementation=implementation)

    inner = jax.shard_map(
        op,
        mesh=mesh,
        in_specs=(rows, jax.P("tensor"), rows, rows),
        out_specs=rows,
        check_vma=check_vma,
    )

    def loss(f):
        return lambda *a: jnp.sum(f(*a) * jnp.cos(f(*a)))

    got = jax.jit(jax.value_and_grad(loss(inner), argnums=(0, 1, 2, 3)))(u, k, pre, post)
    want = jax.value_and_grad(loss(op), argnums=(0, 1, 2, 3))(u, k, pre, post)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(g, w)


def test_non_arrays_masked_arrays_and_traced_sizes_are_refused():
    """Objects that only look like arrays, numpy masked arrays (their mask would be dropped) and
    a traced fft_size each get an error naming the argument."""
    u, k = _uk()
    with pytest.raises(ValueError, match="u: expected a jax or numpy array, got ShapeDtypeStruct"):
        fft_conv(jax.ShapeDtypeStruct(u.shape, u.dtype), k)
    masked = np.ma.masked_array(np.asarray(u), mask=np.zeros(u.shape, bool))
    with pytest.raises(ValueError, match="u: expected a jax or numpy array, got MaskedArray"):
        fft_conv(masked, k, implementation="xla")
    with pytest.raises(ValueError, match="fft_size: must be a static Python or numpy int"):
        jax.jit(lambda n: fft_conv(u, k, fft_size=n))(512)


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_numpy_inputs_give_the_jax_result(implementation):
    """numpy arrays work wherever jax arrays do (under the tests' jaxtyping hook too, whose
    annotations inside the op name jax arrays)."""
    u, k = _uk()
    gate = u * 0.5
    want = fft_conv(u, k, postgate=gate, implementation=implementation)
    got = fft_conv(
        np.asarray(u), np.asarray(k), postgate=np.asarray(gate), implementation=implementation
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
