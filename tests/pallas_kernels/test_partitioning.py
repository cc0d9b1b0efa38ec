"""`partitioning.partitioned`: kernel calls that a sharded jit runs per shard (8 CPU devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import partitioning
from tests.pallas_kernels.hlo import largest_all_gather

# Toy "kernel": y = x * c per channel; s = the column sums of x * g (a result summed over rows).
SCALE = partitioning.Rule(inputs=("... d", "d"), outputs=("... d",), split=("d",))
SUMS = partitioning.Rule(inputs=("... d", "... d", "d"), outputs=("... d", "d"), split=("d",))
seen: list[tuple] = []  # local operand shapes each call saw (what one device computes)


def _times(x, c):
    """x [..., D] * c [D] (explicit ranks: the tests raise on rank promotion)."""
    return x * c.reshape((1,) * (x.ndim - 1) + c.shape)


def _scale(x, c):
    seen.append(("scale", x.shape, c.shape))
    return _times(x, c)


def _sums(x, g, c):
    seen.append(("sums", x.shape, g.shape, c.shape))
    return _times(x, c), jnp.sum(x * g, axis=tuple(range(x.ndim - 1)))


def _mesh():
    return jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _put(x, mesh, *spec):
    return jax.device_put(x, jax.NamedSharding(mesh, jax.P(*spec)))


def _data(shape=(16, 6, 32)):
    x = jax.random.normal(jax.random.key(0), shape)
    g = jax.random.normal(jax.random.key(1), shape)
    c = jnp.linspace(0.5, 2.0, shape[-1])
    return x, g, c


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        (("data",), (4, 6, 32)),
        (("data", None, "tensor"), (4, 6, 16)),
        ((("data", "tensor"),), (2, 6, 32)),
        ((None, None, ("data", "tensor")), (16, 6, 4)),
        ((), (16, 6, 32)),
    ],
)
def test_each_device_computes_its_shard(spec, local):
    mesh = _mesh()
    x, g, c = _data()
    xs, gs = _put(x, mesh, *spec), _put(g, mesh, *spec)
    f = jax.jit(partitioning.partitioned(_sums, SUMS))
    seen.clear()
    compiled = f.lower(xs, gs, c).compile()
    # Traced once whole (the result types), once per shard (what each device runs).
    assert seen == [("sums", x.shape, x.shape, c.shape), ("sums", local, local, (local[-1],))]
    y, s = compiled(xs, gs, c)
    np.testing.assert_allclose(np.asarray(y), np.asarray(_times(x, c)), rtol=1e-6)
    # The row sums are all-reduced over the devices that split the rows.
    np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.sum(x * g, (0, 1))), atol=1e-5)
    assert largest_all_gather(compiled) < np.prod(local)  # nothing x-sized is gathered
    if local != x.shape:
        assert y.sharding.shard_shape(y.shape) == local


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        (("data",), (4, 6, 32)),
        (("data", None, "tensor"), (4, 6, 16)),
        ((None, None, ("data", "tensor")), (16, 6, 4)),
        ((), (16, 6, 32)),
    ],
)
def test_an_explicit_mesh_runs_the_call_in_a_shard_map(spec, local):
    """Under Explicit axes the shardings come from the operands' types: the call runs once per
    shard in a shard_map (traced unsharded for the result ranks), the row sums are
    all-reduced over the rows' axes, y is typed as x."""
    mesh = jax.make_mesh(
        (4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    x, g, c = _data()
    assert not partitioning.in_explicit_mesh()
    with jax.set_mesh(mesh):
        assert partitioning.in_explicit_mesh()
        xs, gs = jax.device_put(x, jax.P(*spec)), jax.device_put(g, jax.P(*spec))
        seen.clear()
        compiled = jax.jit(partitioning.partitioned(_sums, SUMS)).lower(xs, gs, c).compile()
        # eval_shape caches its trace, so the unsharded trace is seen on the first case only.
        whole, block = ("sums", x.shape, x.shape, c.shape), ("sums", local, local, (local[-1],))
        assert seen[-1] == block and set(seen) <= {whole, block}
        y, s = compiled(xs, gs, c)
        assert jax.typeof(y).sharding.spec == jax.typeof(xs).sharding.spec
        channels = spec[2] if len(spec) == 3 else None  # the sums keep the channels' split
        assert jax.typeof(s).sharding.spec == jax.P(channels)
    np.testing.assert_allclose(np.asarray(y), np.asarray(_times(x, c)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.sum(x * g, (0, 1))), atol=1e-5)
    assert largest_all_gather(compiled) < np.prod(local)


def test_typed_like_reshards_only_under_an_explicit_mesh():
    """A custom VJP's cotangents must carry their primals' types under Explicit axes."""
    mesh = jax.make_mesh(
        (4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Explicit,) * 2
    )
    x, g, _ = _data()
    assert partitioning.typed_like((x, None), (g, None))[0] is x
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, jax.P("data"))
        primal = jax.device_put(g, jax.P(None, None, "tensor"))
        out, none = jax.jit(lambda a, b: partitioning.typed_like((a, None), (b, None)))(xs, primal)
        assert none is None
        assert jax.typeof(out).sharding.spec == jax.typeof(primal).sharding.spec
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_typed_like_sums_over_the_axes_its_primal_does_not_vary_over():
    """Inside a shard_map, a replicated primal's cotangent from each device is summed."""
    mesh = _mesh()
    x, _, c = _data()

    def per_device(x, c):
        partial = jnp.sum(x, axis=(0, 1))  # varies over "data"
        return partitioning.typed_like(partial, c)

    f = jax.shard_map(per_device, mesh=mesh, in_specs=(jax.P("data"), jax.P()), out_specs=jax.P())
    np.testing.assert_allclose(np.asarray(f(x, c)), np.asarray(jnp.sum(x, (0, 1))), atol=1e-5)


def test_an_uneven_split_is_kept_whole():
    """6 rows over 4 devices (possible inside a jit): that factor is not split; the rest is."""
    mesh = _mesh()
    x, g, c = _data()
    uneven = jax.NamedSharding(mesh, jax.P("tensor", "data"))
    call = partitioning.partitioned(_sums, SUMS)

    def f(x, g, c):
        x, g = (jax.lax.with_sharding_constraint(v, uneven) for v in (x, g))
        return call(x, g, c)

    seen.clear()
    y, s = jax.jit(f)(x, g, c)
    assert seen[-1] == ("sums", (8, 6, 32), (8, 6, 32), (32,))
    np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.sum(x * g, (0, 1))), atol=1e-5)
    np.testing.assert_allclose(np.asarray(y), np.asarray(_times(x, c)), rtol=1e-6)


def test_without_a_rule_xla_gathers():
    """What the rule prevents: the same function as an opaque call (a pure_callback stands in
    for a pallas_call's custom call) gets the whole x on every device."""
    mesh = _mesh()
    x, _, c = _data()

    def opaque(x, c):
        out = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(lambda x, c: np.asarray(x) * np.asarray(c)[None, None], out, x, c)

    compiled = jax.jit(opaque).lower(_put(x, mesh, "data"), c).compile()
    assert largest_all_gather(compiled) == x.size
    partitioned = jax.jit(partitioning.partitioned(_scale, SCALE))
    assert largest_all_gather(partitioned.lower(_put(x, mesh, "data"), c).compile()) == 0


def test_gspmd_partitioner():
    """The same rule under the GSPMD partitioner (`jax_use_shardy_partitioner=False`)."""
    jax.config.update("jax_use_shardy_partitioner", False)
    try:
        mesh = _mesh()
        x, g, c = _data()
        xs, gs = _put(x, mesh, "data", None, "tensor"), _put(g, mesh, "data", None, "tensor")
        y, s = jax.jit(partitioning.partitioned(_sums, SUMS))(xs, gs, c)
        np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.sum(x * g, (0, 1))), atol=1e-5)
        np.testing.assert_allclose(np.asarray(y), np.asarray(_times(x, c)), rtol=1e-6)
        assert y.sharding.shard_shape(y.shape) == (4, 6, 16)
    finally:
        jax.config.update("jax_use_shardy_partitioner", True)


def test_vmap_folds_into_the_batch_or_maps_the_call():
    x, g, c = _data((3, 5, 8))
    scale = partitioning.partitioned(_scale, SCALE)
    # Only a batch operand mapped: folded into "...", one call on [3, 5, 8].
    seen.clear()
    got = jax.vmap(scale, in_axes=(1, None))(x, c)
    assert seen[-1] == ("scale", (5, 3, 8), (8,))
    np.testing.assert_allclose(np.asarray(got), np.asarray(_times(jnp.swapaxes(x, 0, 1), c)))
    # The channel operand mapped: the unpartitioned call, vmapped.
    cs = jnp.stack([c, 2 * c])
    got = jax.vmap(scale, in_axes=(None, 0))(x, cs)
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(jnp.stack([_times(x, c), _times(x, 2 * c)]))
    )
    # A result summed over the batch: per mapped element, never over the mapped axis.
    sums = partitioning.partitioned(_sums, SUMS)
    _, s = jax.vmap(sums, in_axes=(0, 0, None))(x, g, c)
    np.testing.assert_allclose(np.asarray(s), np.asarray(jnp.sum(x * g, axis=1)), rtol=1e-6)


def test_named_batch_factor_folds_by_reshape():
    rule = partitioning.Rule(inputs=("b h", "h"), outputs=("b h",), split=("h",), batch="b")
    f = partitioning.partitioned(lambda u, k: u * k[None], rule)
    u = jnp.arange(24.0).reshape(2, 3, 4)
    k = jnp.arange(4.0)
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(f, in_axes=(0, None))(u, k)), np.asarray(u) * np.asarray(k)
    )


def test_gradients_and_transforms_pass_through():
    """jit, grad (through a custom_vjp that calls it), scan and remat, as the ops use it."""
    scale = partitioning.partitioned(_times, SCALE)

    @jax.custom_vjp
    def op(x, c):
        return scale(x, c)

    op.defvjp(lambda x, c: (scale(x, c), c), lambda c, dy: (scale(dy, c), jnp.zeros_like(c)))
    x, _, c = _data((4, 8))
    loss = jax.checkpoint(lambda x: jnp.sum(op(x, c) ** 2))
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.grad(loss))(x)), np.asarray(2 * _times(x, c**2)), rtol=1e-6
    )
    scanned = jax.lax.scan(lambda carry, row: (carry, scale(row, c)), 0, x)[1]
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(_times(x, c)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inputs": ("d ...",), "outputs": ("d",)}, "'...' may only lead"),
        ({"inputs": ("... d",), "outputs": ("... e",)}, r"factors \['e'\] in no input"),
        ({"inputs": ("... d",), "outputs": ("... d",), "split": ("h",)}, r"split.*\['h'\]"),
        ({"inputs": ("b d",), "outputs": ("b d",)}, "batch '...': not a factor"),
    ],
)
def test_bad_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        partitioning.Rule(**kwargs)


def test_wrong_operand_count():
    with pytest.raises(TypeError, match=r"expected 2 operands"):
        partitioning.partitioned(_scale, SCALE)(jnp.ones((2, 3)))


@pytest.mark.parametrize(
    ("types", "spec"),
    [
        (("Explicit", "Auto"), ("data",)),
        (("Auto", "Explicit"), (None, "tensor")),
        (("Explicit", "Auto"), ("data", "tensor")),
        (("Auto", "Explicit"), ("data", "tensor")),
    ],
)
def test_both_ops_under_a_mesh_of_explicit_and_auto_axes(types, spec):
    """One Explicit and one Auto axis: the kernels' value and gradients (through their
    shard_map and custom_partitioning paths together) equal the XLA path's unsharded ones."""
    from pallas_kernels.fft_conv import fft_conv
    from pallas_kernels.rational import group_rational

    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.standard_normal((8, 4, 40)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((4, 40)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((8, 6, 32)), jnp.float32)
    a = jnp.asarray(rng.standard_normal((1, 6)) * 0.3, jnp.float32)
    b = jnp.asarray(rng.standard_normal((4, 4)) * 0.3, jnp.float32)
    ops = {
        "fft_conv": (lambda impl: lambda u, k: fft_conv(u, k, implementation=impl), (u, k)),
        "group_rational": (
            lambda impl: lambda x, a: group_rational(x, a, b, implementation=impl),
            (x, a),
        ),
    }
    mesh = jax.make_mesh(
        (4, 2),
        ("data", "tensor"),
        axis_types=tuple(getattr(jax.sharding.AxisType, t) for t in types),
    )
    for name, (op, (first, second)) in ops.items():

        def value_and_grads(impl, op=op):
            loss = lambda p, q: jnp.sum(op(impl)(p, q) ** 2)  # noqa: E731
            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

        want = value_and_grads("xla")(first, second)
        with jax.set_mesh(mesh):
            got = value_and_grads("interpret")(jax.device_put(first, jax.P(*spec)), second)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            scale = float(np.abs(np.asarray(w)).max())
            np.testing.assert_allclose(
                np.asarray(g), np.asarray(w), rtol=0, atol=1e-5 * scale, err_msg=name
            )


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_vmap_over_no_examples(implementation):
    """A mapped axis of size 0 launches no kernel (a grid over no rows failed inside Pallas):
    both ops give empty results and zero parameter gradients, as their XLA paths do, mapping
    only the input (folded into the rows) or the parameters too (the call itself mapped)."""
    from pallas_kernels.fft_conv import fft_conv
    from pallas_kernels.rational import group_rational, init_coefficients

    num, den = init_coefficients("swish", 2)
    x = jnp.ones((0, 3, 4), jnp.float32)

    def rational_loss(x, num, den):
        f = lambda x: group_rational(x, num, den, implementation=implementation)  # noqa: E731
        return jax.vmap(f)(x).sum()

    dx, dnum, dden = jax.grad(rational_loss, argnums=(0, 1, 2))(x, num, den)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(np.asarray(dnum), 0.0)
    np.testing.assert_array_equal(np.asarray(dden), 0.0)
    nums = jnp.zeros((0, *num.shape), jnp.float32)
    dens = jnp.zeros((0, *den.shape), jnp.float32)
    per_example = functools.partial(group_rational, implementation=implementation)
    assert jax.vmap(per_example)(x, nums, dens).shape == x.shape

    u, k = jnp.ones((0, 2, 4, 64), jnp.float32), jnp.ones((4, 64), jnp.float32)

    def conv_loss(u, k):
        f = lambda u: fft_conv(u, k, implementation=implementation)  # noqa: E731
        return jax.vmap(f)(u).sum()

    du, dk = jax.grad(conv_loss, argnums=(0, 1))(u, k)
    assert du.shape == u.shape
    np.testing.assert_array_equal(np.asarray(dk), 0.0)
    ks = jnp.zeros((0, 4, 64), jnp.float32)
    conv = functools.partial(fft_conv, implementation=implementation)
    assert jax.vmap(conv)(u, ks).shape == u.shape
