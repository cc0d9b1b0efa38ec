"""fft_conv(save_residuals=True): the forward keeps X = DFT(pregate * u) and the pre-gate output z,
the backward reads them instead of recomputing them.

Checked against the jnp.fft reference (values and all four gradients, on the Monarch XLA path and
the interpreted kernels), by the transforms each backward runs (its matmuls), per shard under a
sharded jit, and to second order.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fft_conv import BlockSizes, fft_conv, fft_conv_reference
from tests.pallas_kernels.fft_conv.common import assert_close, equations, inputs
from tests.pallas_kernels.hlo import largest_all_gather

GATES = {
    "none": (False, False),
    "pre": (True, False),
    "post": (False, True),
    "both": (True, True),
}


pytestmark = pytest.mark.usefixtures("monarch_everywhere")


def _gated_inputs(seed, batch, heads, length, filter_len, dtype, gates):
    u, k, pre, post = inputs(seed, batch, heads, length, filter_len, dtype, gated=True)
    has_pre, has_post = GATES[gates]
    return u, k, pre if has_pre else None, post if has_post else None


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
@pytest.mark.parametrize(
    ("n", "length", "filter_len", "gates", "dtype", "options"),
    [
        (512, 200, 57, "both", jnp.float32, {}),
        (256, 256, 256, "post", jnp.bfloat16, {"fft_size": 256}),  # circular
        (1024, 300, 300, "pre", jnp.float32, {}),
        (512, 256, 256, "none", jnp.float16, {}),
        (4096, 2048, 2049, "both", jnp.float32, {}),  # order 3
        (512, 256, 256, "both", jnp.float32, {"kept_frequencies": 256}),  # frequency-sparse
        (512, 256, 256, "both", jnp.bfloat16, {"partial_taps": 40}),  # partial
    ],
)
def test_values_and_gradients_equal_the_reference(
    implementation, n, length, filter_len, gates, dtype, options
):
    u, k, pre, post = _gated_inputs(n + length, 2, 4, length, filter_len, dtype, gates)
    dy = jnp.asarray(np.random.default_rng(n).standard_normal(u.shape), dtype)
    blocks = BlockSizes(block_h=2, block_b=1, heads_per_dot=2)  # 2 x 2 programs, stacked heads

    def ours(u, k, pre, post):
        return fft_conv(
            u, k, pregate=pre, postgate=post, implementation=implementation, block_sizes=blocks,
            save_residuals=True, **options,
        )  # fmt: skip

    def ref(u, k, pre, post):
        kept = options.get("kept_frequencies")
        taps = options.get("partial_taps", k.shape[-1])
        fft_size = options.get("fft_size") or max(256, 1 << (length + taps - 2).bit_length())
        return fft_conv_reference(
            u, k[:, :taps], fft_size=fft_size, pregate=pre, postgate=post, kept_frequencies=kept
        )

    y, vjp_fn = jax.vjp(jax.jit(ours), u, k, pre, post)
    want_y, want_vjp = jax.vjp(ref, u, k, pre, post)
    assert_close(y, want_y, dtype, "y")
    grads = jax.jit(vjp_fn)(dy)
    for name, g, w in zip(("du", "dk", "dpre", "dpost"), grads, want_vjp(dy), strict=True):
        if w is None:
            assert g is None, name
            continue
        assert g.dtype == w.dtype, name
        # dpost = dy * z with z saved in u's dtype: one more rounding than the reference, within
        # the half-precision tolerance (two ulps of the output).
        assert_close(g, w, dtype if name != "dk" else jnp.float32, name)


def _dots(jaxpr) -> int:
    return sum(e.primitive.name == "dot_general" for e in equations(jaxpr))


@pytest.mark.parametrize("gates", ["none", "pre", "post", "both"])
def test_the_kernel_backward_runs_two_transforms_not_three_or_four(gates):
    """The backward kernel's matmuls, counted in transforms (a DFT and an inverse have the same
    matmuls at N = 1024, 32 x 32: the forward kernel runs one of each): with saved residuals two
    (DFT(dz), the inverse for dx); recomputing, also X's DFT, and z's inverse when gated."""
    u, k, pre, post = _gated_inputs(3, 2, 2, 300, 300, jnp.float32, gates)

    def kernel_dots(save):
        def loss(u, k):
            y = fft_conv(
                u, k, pregate=pre, postgate=post, implementation="interpret",
                save_residuals=save,
            )  # fmt: skip
            return y.sum()

        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(u, k).jaxpr
        calls = [e for e in equations(jaxpr) if e.primitive.name == "pallas_call"]
        return {e.params["name"]: _dots(e.params["jaxpr"]) for e in calls}

    saved, recomputed = kernel_dots(True), kernel_dots(False)
    assert saved["fft_conv_fwd"] == recomputed["fft_conv_fwd"] > 0
    per_transform = saved["fft_conv_fwd"] // 2
    assert saved["fft_conv_bwd"] == 2 * per_transform
    gated = GATES[gates][1]
    assert recomputed["fft_conv_bwd"] == (4 if gated else 3) * per_transform


@pytest.mark.parametrize("gates", ["none", "both"])
def test_the_xla_backward_reads_the_residuals(gates):
    """On the Monarch XLA path the backward's matmuls drop the same way, and its residuals gain
    X's planes ([B, H, *spectrum_shape]) and, gated, z (one more [B, H, L] array), and lose u
    where there is no pregate (one fewer)."""
    u, k, pre, post = _gated_inputs(4, 2, 2, 300, 300, jnp.float32, gates)

    def backward(save):
        f = lambda u, k: fft_conv(  # noqa: E731
            u, k, pregate=pre, postgate=post, implementation="xla", save_residuals=save
        )
        y, vjp_fn = jax.vjp(f, u, k)
        shapes = [leaf.shape for leaf in jax.tree.leaves(vjp_fn) if hasattr(leaf, "shape")]
        return _dots(jax.make_jaxpr(vjp_fn)(y).jaxpr), shapes

    (saved, saved_shapes), (recomputed, shapes) = backward(True), backward(False)
    assert 0 < saved < recomputed
    planes = (2, 2, 32, 32)  # N = 1024 as 32 x 32
    assert saved_shapes.count(planes) == 2 and planes not in shapes
    rows = saved_shapes.count((2, 2, 300)) - shapes.count((2, 2, 300))
    has_pre, has_post = GATES[gates]
    assert rows == int(has_post) - int(not has_pre)


def test_runs_per_shard_under_a_sharded_jit():
    """Split over B and H on 8 devices: the residuals travel with their rows (no u-sized
    all-gather), and values and gradients equal the XLA path's."""
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    u, k, pre, post = inputs(5, 8, 8, 48, 20, gated=True)
    sharding = jax.NamedSharding(mesh, jax.P("data", "tensor"))
    u, pre, post = (jax.device_put(a, sharding) for a in (u, pre, post))

    def value_and_grads(implementation, save):
        def loss(u, k, pre, post):
            y = fft_conv(
                u, k, pregate=pre, postgate=post, implementation=implementation,
                save_residuals=save,
            )  # fmt: skip
            return jnp.sum(y * jnp.cos(y))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))

    want = value_and_grads("xla", False)(u, k, pre, post)
    compiled = value_and_grads("interpret", True).lower(u, k, pre, post).compile()
    got = compiled(u, k, pre, post)
    assert largest_all_gather(compiled) < 2 * 4 * 48
    assert got[1][0].sharding.shard_shape(u.shape) == (2, 4, 48)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_second_order(implementation):
    """grad of grad through the saved residuals equals JAX's autodiff of the reference."""
    u, k, pre, post = inputs(9, 2, 2, 200, 200, gated=True)

    def penalty(conv):
        def inner(u, k, pre, post):
            return jnp.sum(jnp.sin(conv(u, k, pre, post)))

        def outer(u, k, pre, post):
            grads = jax.grad(inner, argnums=(0, 1, 2, 3))(u, k, pre, post)
            return sum(jnp.sum(g**2) for g in grads)

        return jax.grad(outer, argnums=(0, 1, 2, 3))(u, k, pre, post)

    ours = penalty(
        lambda *a: fft_conv(
            a[0],
            a[1],
            pregate=a[2],
            postgate=a[3],
            implementation=implementation,
            save_residuals=True,
        )  # fmt: skip
    )
    want = penalty(
        lambda *a: fft_conv_reference(a[0], a[1], fft_size=512, pregate=a[2], postgate=a[3])
    )
    for name, g, w in zip(("u", "k", "pre", "post"), ours, want, strict=True):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(w), rtol=0, atol=1e-4 * float(np.abs(w).max()), err_msg=name
        )


def test_bad_value_is_refused():
    u, k, _, _ = inputs(1, 1, 2, 64, 64)
    with pytest.raises(ValueError, match="save_residuals='yes': must be True or False"):
        fft_conv(u, k, save_residuals="yes")


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_float16_z_past_its_range(implementation):
    """z = y / postgate may exceed float16's 65504 where y and dy * z do not: z is saved in f32
    for f16 u, so dpostgate stays the recomputing backward's (it was inf)."""
    u = jnp.full((1, 1, 64), 200.0, jnp.float16)
    k = jnp.full((1, 32), 20.0, jnp.float32)
    post = jnp.full((1, 1, 64), 1e-3, jnp.float16)
    dy = jnp.full((1, 1, 64), 1e-3, jnp.float16)

    def grads(save):
        f = lambda u, k, post: fft_conv(  # noqa: E731
            u, k, postgate=post, implementation=implementation, save_residuals=save
        )
        return jax.vjp(f, u, k, post)[1](dy)

    saved, recomputed = grads(True), grads(False)
    assert np.isfinite(np.asarray(saved[2], np.float32)).all()
    for a, b in zip(saved, recomputed, strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
@pytest.mark.parametrize("gates", ["post", "both"])
def test_u_is_kept_only_for_the_pregate(implementation, gates):
    """With X saved, u serves only dpregate: without a pregate it is not a residual (nor an
    operand of the backward kernel); with one it is."""
    u, k, pre, post = _gated_inputs(5, 2, 2, 300, 300, jnp.float32, gates)
    x = jnp.tanh(u)  # an intermediate the conv alone would keep alive

    def f(x, k):
        return fft_conv(
            x, k, pregate=pre, postgate=post, implementation=implementation, save_residuals=True
        )

    _, vjp_fn = jax.vjp(f, x, k)
    kept = any(leaf is x for leaf in jax.tree.leaves(vjp_fn))
    assert kept == (gates == "both")
    if implementation == "interpret":
        jaxpr = jax.make_jaxpr(vjp_fn)(x).jaxpr
        (bwd,) = [
            e
            for e in equations(jaxpr)
            if e.primitive.name == "pallas_call" and e.params["name"] == "fft_conv_bwd"
        ]
        rows = [v for v in bwd.invars if v.aval.shape[:2] == (2, 2) and v.aval.ndim == 4]
        # dy, the gates, z (and u with a pregate); X's planes are [2, 2, 32, 32] too: counted
        assert len(rows) == {"post": 5, "both": 7}[gates]
