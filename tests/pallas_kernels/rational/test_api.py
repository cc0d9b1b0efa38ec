"""group_rational's validation and dispatch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.rational import BlockSizes, api, group_rational
from tests.pallas_kernels.hlo import largest_all_gather
from tests.pallas_kernels.rational.common import inputs


def _args(shape=(4, 16), groups=4):
    x, _, num, den = inputs(0, shape, groups)
    return x, num, den


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x": jnp.zeros((4, 10))}, r"x.shape\[-1\]=10: D must be a positive multiple of .* G=4"),
        ({"x": jnp.zeros((4, 16), jnp.float16)}, "x.dtype=float16: supported are float32 and"),
        ({"numerator": jnp.zeros((1, 5))}, r"numerator.shape=\(1, 5\): must be \[1, 6\]"),
        ({"numerator": jnp.zeros((3, 6))}, r"numerator.shape=\(3, 6\).*\[G=4, 6\]"),
        ({"denominator": jnp.zeros((4, 3))}, r"denominator.shape=\(4, 3\): must be \[G, 4\]"),
        ({"denominator": jnp.zeros((4,))}, r"denominator.shape=\(4,\)"),
        ({"numerator": jnp.zeros((1, 6), jnp.bfloat16)}, "numerator.dtype=bfloat16: .*float32"),
        ({"implementation": "cuda"}, "implementation='cuda': one of"),
        # Pallas' own error on CPU named neither the argument nor the alternatives.
        ({"implementation": "pallas"}, "implementation='pallas': compiled Pallas kernels need a"),
        ({"implementation": "xla+pallas"}, "implementation='xla\\+pallas': .*use 'interpret'"),
    ],
)
def test_bad_arguments(change, match):
    x, num, den = _args()
    kwargs = {"x": x, "numerator": num, "denominator": den, "implementation": "auto"} | change
    with pytest.raises(ValueError, match=match):
        api.check_arguments(**kwargs)
    with pytest.raises(ValueError):
        group_rational(
            kwargs["x"],
            kwargs["numerator"],
            kwargs["denominator"],
            implementation=kwargs["implementation"],
        )


def test_unknown_implementations_are_refused(no_typecheck):
    # Not returned unchanged, nor run as the Pallas kernels (anything but "xla" was).
    with pytest.raises(ValueError, match="implementation='auot': one of 'auto', 'pallas'"):
        api.resolve_implementation("auot")
    for field, bad in (("implementation", "XLA"), ("implementation", None), ("backward", "jnp")):
        with pytest.raises(ValueError, match=rf"RationalConfig.{field}=.*\['interpret', 'pal"):
            api.vjp.RationalConfig(**{field: bad})


def test_auto_is_xla_on_cpu():
    assert jax.default_backend() == "cpu"
    assert api.resolve_implementation("auto") == "xla"
    x, num, den = _args()
    auto = jax.jit(group_rational)(x, num, den)
    xla = jax.jit(functools.partial(group_rational, implementation="xla"))(x, num, den)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(xla))


@pytest.mark.parametrize(
    ("backend", "devices", "expected"),
    [
        ("gpu", 1, "xla+pallas"),
        ("gpu", 8, "xla+pallas"),
        ("tpu", 4, "pallas"),
        ("cpu", 1, "xla"),
    ],
)
def test_auto_follows_the_measurements(monkeypatch, backend, devices, expected):
    # GPU: the XLA forward and the kernel backward were each the faster one on an H200
    # (README.md, 2026-11-28); on several devices too, since the kernels run per shard (next).
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(jax, "device_count", lambda: devices)
    assert api.resolve_implementation("auto") == expected
    assert api.resolve_implementation("pallas") == "pallas"


def _value_and_grads(implementation):
    """jit of the value and the three gradients of a loss of group_rational's output."""

    def loss(x, num, den):
        y = group_rational(x, num, den, implementation=implementation)
        return jnp.sum(y * jnp.cos(y))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        (("data",), (4, 6, 32)),  # data parallel
        (("data", None, "tensor"), (4, 6, 16)),  # and the channels (KAT's fc1 output, Megatron)
        ((None, None, ("data", "tensor")), (16, 6, 4)),  # channels only: 2 groups a device
    ],
)
@pytest.mark.parametrize("shared", [True, False])
def test_kernels_run_per_shard_under_a_sharded_jit(spec, local, shared):
    """Each device runs the forward and backward kernels on its block (no x-sized all-gather),
    dx keeps x's sharding, and values and all three gradients equal the XLA path's."""
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x, _, num, den = inputs(3, (16, 6, 32), 8, shared=shared)
    sharded = jax.device_put(x, jax.NamedSharding(mesh, jax.P(*spec)))

    xla = _value_and_grads("xla")(sharded, num, den)
    compiled = _value_and_grads("interpret").lower(sharded, num, den).compile()
    kernel = compiled(sharded, num, den)
    assert largest_all_gather(compiled) < np.prod(local)
    dx = kernel[1][0]
    assert dx.sharding.shard_shape(dx.shape) == local
    for got, want in zip(jax.tree.leaves(kernel), jax.tree.leaves(xla), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=1e-5)
    # Reproducible run to run on one mesh (the all-reduce included).
    again = compiled(sharded, num, den)
    for a, b in zip(jax.tree.leaves(kernel), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("spec", [("data",), ("data", None, "tensor"), (None, None, "tensor")])
@pytest.mark.parametrize(
    ("implementation", "shared"), [("xla", True), ("interpret", False), ("xla+interpret", True)]
)
def test_every_path_runs_under_an_explicit_mesh(spec, implementation, shared):
    """With the shardings in the types (AxisType.Explicit; both paths used to fail: an XLA
    reshape without `out_sharding`, a pallas_call outside Manual axes), the value and all three
    gradients equal the unsharded XLA path's, dx is typed as x and the coefficient gradients as
    the (replicated) coefficients, and the kernels gather no x-sized block."""
    mesh = jax.make_mesh(
        (4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    x, _, num, den = inputs(4, (16, 6, 32), 8, shared=shared)

    want = _value_and_grads("xla")(x, num, den)
    with jax.set_mesh(mesh):
        sharded = jax.device_put(x, jax.P(*spec))
        compiled = _value_and_grads(implementation).lower(sharded, num, den).compile()
        got = compiled(sharded, num, den)
        dx, dnum, dden = got[1]
        assert jax.typeof(dx).sharding.spec == jax.typeof(sharded).sharding.spec
        for g in (dnum, dden):
            assert all(entry is None for entry in jax.typeof(g).sharding.spec)
    if implementation != "xla":
        local = sharded.sharding.shard_shape(sharded.shape)
        assert largest_all_gather(compiled) < np.prod(local)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "interpret", "xla+interpret"])
def test_explicit_mesh_split_through_a_group(implementation):
    """An Explicit split of D that cuts a group (G = 3 over 2 shards: 12 channels each, groups of
    8) cannot be reshaped into groups per shard: the op gathers the channels whole and hands
    back x's sharding; values and gradients equal the unsharded XLA path's."""
    mesh = jax.make_mesh((2,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
    x, _, num, den = inputs(6, (4, 24), 3, shared=True)
    want = _value_and_grads("xla")(x, num, den)
    with jax.set_mesh(mesh):
        sharded = jax.device_put(x, jax.P(None, "model"))
        y = jax.jit(functools.partial(group_rational, implementation=implementation))(
            sharded, num, den
        )
        got = _value_and_grads(implementation)(sharded, num, den)
        assert jax.typeof(y).sharding.spec == jax.typeof(sharded).sharding.spec
        assert jax.typeof(got[1][0]).sharding.spec == jax.typeof(sharded).sharding.spec
    np.testing.assert_allclose(np.asarray(y), np.asarray(group_rational(x, num, den)), rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=1e-5)


def test_non_arrays_are_refused():
    x, num, den = _args()
    for args, name in (
        ((x.tolist(), num, den), "x"),
        ((x, num.tolist(), den), "numerator"),
        ((x, num, np.ma.masked_array(np.asarray(den))), "denominator"),
    ):
        with pytest.raises(ValueError, match=f"{name}: expected a jax or numpy array"):
            group_rational(*args)


def test_works_on_sharded_input():
    """Elementwise over a batch sharded across the 8 simulated devices; equals one device."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    x, num, den = _args((16, 3, 16))
    sharded = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
    got = jax.jit(group_rational)(sharded, num, den)
    # Per-device shapes compile to other fusions: XLA:CPU may round differently (1 ulp).
    want = jax.jit(group_rational)(x, num, den)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_empty_input(implementation):
    """No rows: [] out, zero coefficient gradients, in every implementation (no kernel launch)."""
    _, num, den = _args()
    x = jnp.zeros((0, 16), jnp.float32)

    def loss(x, num, den):
        return group_rational(x, num, den, implementation=implementation).sum()

    assert group_rational(x, num, den, implementation=implementation).shape == (0, 16)
    dx, dnum, dden = jax.grad(loss, argnums=(0, 1, 2))(x, num, den)
    assert dx.shape == (0, 16)
    np.testing.assert_array_equal(np.asarray(dnum), np.zeros(num.shape, np.float32))
    np.testing.assert_array_equal(np.asarray(dden), np.zeros(den.shape, np.float32))


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_block_sizes_argument(implementation):
    """A spec string is parsed; anything else that is not a BlockSizes is an error on every path
    (it used to be ignored on "xla" and an AttributeError on the kernels)."""
    x, num, den = _args()
    want = group_rational(x, num, den, implementation=implementation)
    got = group_rational(x, num, den, implementation=implementation, block_sizes="8x8")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match=r"block_sizes=\{.*\}: expected None, a .*BlockSizes"):
        group_rational(x, num, den, implementation=implementation, block_sizes={"block_rows": 8})
    with pytest.raises(ValueError, match="block sizes spec '256x'"):
        group_rational(x, num, den, implementation=implementation, block_sizes="256x")


@pytest.mark.parametrize("field", ["num_warps", "num_stages"])
@pytest.mark.parametrize("value", [0, -3])
def test_block_sizes_positive_triton_parameters(field, value):
    with pytest.raises(ValueError, match=rf"BlockSizes.{field}={value}: must be a positive int"):
        BlockSizes(**{field: value})


@pytest.mark.parametrize(("implementation", "check_vma"), [("xla", True), ("interpret", False)])
def test_inside_a_shard_map(implementation, check_vma):
    """Called per device inside a user's `jax.shard_map`: the value and the gradients equal the
    unsharded ones, the coefficients' gradients summed over the devices that split the rows.
    (The interpreter cannot run under check_vma=True, a jax limitation: it evaluates the kernel
    body, traced unchecked, under the check; compiled TPU kernels do: test_aot.py.)
    """
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    x, _, num, den = inputs(5, (16, 6, 32), 8, shared=True)
    spec = jax.P("data", None, "tensor")

    def op(x, num, den):
        return group_rational(x, num, den, implementation=implementation)

    # Channels split over "tensor": each device holds whole groups, and their denominators.
    specs = (spec, jax.P(), jax.P("tensor"))
    inner = jax.shard_map(op, mesh=mesh, in_specs=specs, out_specs=spec, check_vma=check_vma)

    def loss(f):
        return lambda *a: jnp.sum(f(*a) * jnp.cos(f(*a)))

    got = jax.jit(jax.value_and_grad(loss(inner), argnums=(0, 1, 2)))(x, num, den)
    want = jax.value_and_grad(loss(op), argnums=(0, 1, 2))(x, num, den)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_numpy_inputs_give_the_jax_result(implementation):
    """numpy arrays work wherever jax arrays do (under the tests' jaxtyping hook too)."""
    x, num, den = _args()
    want = group_rational(x, num, den, implementation=implementation)
    got = group_rational(*map(np.asarray, (x, num, den)), implementation=implementation)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
