"""Hand-written VJP (XLA path and interpret-mode kernels) vs jax.grad and float64 differences."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from pallas_kernels.rational import BlockSizes, group_rational, group_rational_reference
from tests.pallas_kernels.rational.common import (
    assert_coefficients_close,
    coefficient_atol,
    coefficient_terms_abs,
    f64,
    finite_difference_grads,
    inputs,
)

IMPLEMENTATIONS = ["xla", "interpret", "interpret-loop"]
SMALL_BLOCKS = BlockSizes(block_rows=16, block_d=8)  # several tiles in both axes, 2 leaves
# The backward's other row reduction: a loop over 4 leaves of 8 rows, masked rows in the last tile.
LOOP_BLOCKS = BlockSizes(block_rows=32, block_d=8, reduce="loop")


def _grads(fn, x, dy, num, den):
    _, vjp = jax.vjp(fn, x, num, den)
    return vjp(dy)


def _op(implementation):
    blocks = LOOP_BLOCKS if implementation == "interpret-loop" else SMALL_BLOCKS
    implementation = implementation.removesuffix("-loop")

    def fn(x, num, den):
        return group_rational(x, num, den, implementation=implementation, block_sizes=blocks)

    return jax.jit(fn)


@pytest.mark.parametrize("implementation", [*IMPLEMENTATIONS, "xla+interpret"])
@pytest.mark.parametrize("shared", [True, False])
def test_matches_jax_grad_of_reference(implementation, shared):
    # 3 * 13 = 39 rows: the last 16-row tile is partial (masked rows).
    x, dy, num, den = inputs(0, (3, 13, 32), 4, shared=shared)
    dx, dnum, dden = _grads(_op(implementation), x, dy, num, den)
    rx, rnum, rden = _grads(group_rational_reference, x, dy, num, den)
    assert dx.dtype == x.dtype and dnum.shape == num.shape and dden.shape == den.shape
    # dx: elementwise, fp32 composed (P', Q', two divisions): 1e-5 relative to the scale.
    np.testing.assert_allclose(f64(dx), f64(rx), atol=1e-5 * np.max(np.abs(f64(rx))), rtol=0)
    atol_a, atol_b = coefficient_atol(x, dy, num, den)
    assert_coefficients_close(dnum, rnum, 2 * atol_a, "dnumerator")  # two f32 sums: 2x
    assert_coefficients_close(dden, rden, 2 * atol_b, "ddenominator")


@pytest.mark.parametrize("implementation", [*IMPLEMENTATIONS, "xla+interpret"])
@pytest.mark.parametrize("shared", [True, False])
def test_matches_float64_finite_differences(implementation, shared):
    x, dy, num, den = inputs(1, (40, 16), 2, shared=shared)
    x = jnp.where(jnp.abs(x) < 1e-3, 0.5, x)  # central differences straddle the kink at 0
    dx, dnum, dden = _grads(_op(implementation), x, dy, num, den)
    fx, fnum, fden = finite_difference_grads(x, dy, num, den)
    np.testing.assert_allclose(f64(dx), fx, atol=1e-5 * np.max(np.abs(fx)), rtol=0)
    atol_a, atol_b = coefficient_atol(x, dy, num, den)
    ta, tb = coefficient_terms_abs(x, dy, num, den)
    # Plus the differences' own error: f64 rounding of L (~1e-16 sum|dy F|) over h = 1e-6.
    assert_coefficients_close(dnum, fnum, atol_a + 1e-8 * ta.max(), "dnumerator")
    assert_coefficients_close(dden, fden, atol_b + 1e-8 * tb.max(), "ddenominator")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_derivative_at_zero_and_at_b_zero(implementation):
    """sign(0) = +1 as the CUDA/Triton kernels: dQ/dx(0) = |b_1|, dL/db_j at b_j = 0 is not 0."""
    x = jnp.zeros((8, 8), jnp.float32).at[:, 4:].set(0.75)
    dy = jnp.ones((8, 8), jnp.float32)
    num = jnp.asarray([[0.3, 1.0, 0.0, 0.0, 0.0, 0.0]], jnp.float32)
    den = jnp.asarray([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], jnp.float32)
    dx, dnum, dden = _grads(_op(implementation), x, dy, num, den)
    rx, rnum, rden = _grads(group_rational_reference, x, dy, num, den)
    # Group 0 at x = 0: P'/Q - Q' P/Q^2 = a_1 - |b_1| a_0 = 1 - 0.5 * 0.3.
    np.testing.assert_allclose(f64(dx)[:, :4], 0.85, rtol=1e-6)
    np.testing.assert_allclose(f64(dx), f64(rx), rtol=1e-6)
    np.testing.assert_allclose(f64(dden), f64(rden), rtol=1e-5)
    assert np.all(f64(dden)[1] != 0.0)  # b = 0 (the identity preset) still learns
    np.testing.assert_allclose(f64(dnum), f64(rnum), rtol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_shared_numerator_equals_identical_rows(implementation):
    """Shared [1, 6] == per-group [G, 6] with identical rows; its gradient is the rows' sum."""
    x, dy, num, den = inputs(2, (24, 16), 4)
    rows = jnp.tile(num, (4, 1))
    op = _op(implementation)
    y_shared, y_rows = op(x, num, den), op(x, rows, den)
    np.testing.assert_array_equal(f64(y_shared), f64(y_rows))
    _, dnum, dden = _grads(op, x, dy, num, den)
    _, drows, drows_den = _grads(op, x, dy, rows, den)
    np.testing.assert_array_equal(f64(dden), f64(drows_den))
    atol_a, _ = coefficient_atol(x, dy, num, den)
    assert_coefficients_close(dnum, drows.sum(axis=0, keepdims=True), atol_a, "shared")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_bfloat16_gradients(implementation):
    """bf16 x and dy: f32 compute; dx rounded once to bf16, coefficient sums stay f32."""
    x, dy, num, den = inputs(3, (4, 10, 16), 2, dtype=jnp.bfloat16)
    dx, dnum, dden = _grads(_op(implementation), x, dy, num, den)
    assert dx.dtype == jnp.bfloat16 and dnum.dtype == jnp.float32
    x32, dy32 = x.astype(jnp.float32), dy.astype(jnp.float32)
    fx, fnum, fden = finite_difference_grads(x32, dy32, num, den)
    # dx: one bf16 rounding of an f32 value (relative 2^-8 after rounding); allow one bf16 ulp
    # of each element plus the f32 error floor of the scale.
    np.testing.assert_allclose(f64(dx), fx, rtol=2.0**-7, atol=1e-5 * np.max(np.abs(fx)))
    # Coefficients: the reduction-size tolerance of f32 (common.coefficient_atol), against the
    # float64 gradient of the same bf16-rounded inputs - bf16 inputs add no error beyond that.
    atol_a, atol_b = coefficient_atol(x32, dy32, num, den)
    ta, tb = coefficient_terms_abs(x32, dy32, num, den)
    assert_coefficients_close(dnum, fnum, atol_a + 1e-8 * ta.max(), "dnumerator")
    assert_coefficients_close(dden, fden, atol_b + 1e-8 * tb.max(), "ddenominator")


def test_check_grads_xla_path():
    x, _, num, den = inputs(4, (6, 8), 2)

    def fn(x, num, den):  # check_grads passes numpy arrays
        return group_rational(
            jnp.asarray(x), jnp.asarray(num), jnp.asarray(den), implementation="xla"
        )

    jax.test_util.check_grads(fn, (x, num, den), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("rows", [0, 1, 7, 257, 128 * 197, 4096])
def test_xla_backward_row_split(rows):
    """The XLA backward reduces rows as [R1, R2] with R1 the largest divisor <= 256 (a prime row
    count gives R1 = 1); the gradients must not depend on that split."""
    from pallas_kernels.rational.vjp import _row_split

    outer, inner = _row_split(rows)
    assert outer * inner == rows and 1 <= outer <= 256
    assert all(rows % d for d in range(outer + 1, min(rows, 256) + 1))
    if rows == 0:
        return
    x, dy, num, den = inputs(rows, (rows, 16), 4, shared=False)
    dx, dnum, dden = _grads(_op("xla"), x, dy, num, den)
    rx, rnum, rden = _grads(group_rational_reference, x, dy, num, den)
    np.testing.assert_allclose(f64(dx), f64(rx), atol=1e-5 * np.max(np.abs(f64(rx))), rtol=0)
    atol_a, atol_b = coefficient_atol(x, dy, num, den)
    assert_coefficients_close(dnum, rnum, 2 * atol_a, "dnumerator")
    assert_coefficients_close(dden, rden, 2 * atol_b, "ddenominator")


@pytest.mark.parametrize("platform_name", ["gpu", "tpu"])
def test_xla_backward_accelerator_spelling(platform_name):
    """On GPU/TPU the XLA path's backward is ten plain sums, unfenced (the CPU spelling, one
    variadic reduction over [R1, R2] rows with optimization barriers, ran 17x slower on an H200);
    traced for that platform here and run on CPU, it equals the CPU spelling and the reference."""
    from pallas_kernels import platform

    x, dy, num, den = inputs(4, (3, 13, 32), 4, shared=False)

    def grads(x, dy, num, den):
        return _grads(_op("xla"), x, dy, num, den)

    cpu_jaxpr = str(jax.make_jaxpr(grads)(x, dy, num, den))
    with platform.compiling_for(platform_name):  # clears the trace caches on entry and exit
        accel_jaxpr = str(jax.make_jaxpr(grads)(x, dy, num, den))
        accelerator = grads(x, dy, num, den)
    assert "optimization_barrier" in cpu_jaxpr and "optimization_barrier" not in accel_jaxpr
    assert "reduce[" in cpu_jaxpr.replace("reduce_sum", "") and "reduce[" not in accel_jaxpr
    cpu = grads(x, dy, num, den)
    for u, v in zip(accelerator, cpu, strict=True):
        np.testing.assert_allclose(f64(u), f64(v), rtol=1e-5, atol=1e-6 * np.abs(f64(v)).max())
    rx, rnum, rden = _grads(group_rational_reference, x, dy, num, den)
    atol_a, atol_b = coefficient_atol(x, dy, num, den)
    assert_coefficients_close(accelerator[1], rnum, 2 * atol_a, "dnumerator")
    assert_coefficients_close(accelerator[2], rden, 2 * atol_b, "ddenominator")


def test_mixed_runs_the_xla_forward_and_the_kernel_backward():
    """ "xla+interpret" (GPU's "auto" spelled for CPU): its forward is the XLA path's and its
    gradients the kernels', bit for bit — each pass really runs the implementation named."""
    x, dy, num, den = inputs(2, (3, 13, 32), 4, shared=True)
    outputs = {}
    for implementation in ("xla", "interpret", "xla+interpret"):
        y, vjp = jax.vjp(_op(implementation), x, num, den)
        outputs[implementation] = (y, *vjp(dy))
    mixed, xla, kernel = outputs["xla+interpret"], outputs["xla"], outputs["interpret"]
    np.testing.assert_array_equal(np.asarray(mixed[0]), np.asarray(xla[0]))
    for got, want in zip(mixed[1:], kernel[1:], strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # and the two implementations do differ in the last bits somewhere (else this proves nothing)
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(xla[1:], kernel[1:], strict=True)
    )
