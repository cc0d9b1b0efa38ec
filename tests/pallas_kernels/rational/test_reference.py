"""The reference (and the XLA path's forward) against float64 numpy: the kernel form, explicitly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.rational import group_rational, group_rational_reference, init_coefficients
from tests.pallas_kernels.rational.common import EPS_BF16, f64, inputs, numpy_rational


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("shape", [(2, 5, 24), (7, 8), (16,)])
def test_forward_matches_float64(shape, shared):
    x, _, num, den = inputs(0, shape, 4, shared=shared)
    want = numpy_rational(x, num, den)
    got = jax.jit(group_rational_reference)(x, num, den)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    # fp32 composed op (Horner + division): 1e-5 relative to the output scale.
    np.testing.assert_allclose(f64(got), want, rtol=0, atol=1e-5 * np.max(np.abs(want)))


def test_kernel_form_not_the_other_two():
    """|b_j| |x|^j (kernels), not |sum b_j x^j| (paper/fit.py) nor |b_j| x^j (torch fallback)."""
    x = jnp.asarray([-2.0, -0.5, 0.5, 2.0], jnp.float32)[None]  # [1, 4]
    num = jnp.asarray([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]], jnp.float32)
    den = jnp.asarray([[-1.0, 0.5, -0.25, 0.125]], jnp.float32)
    xs = f64(x)[0]
    kernel = xs / (1 + 1.0 * abs(xs) + 0.5 * xs**2 + 0.25 * abs(xs) ** 3 + 0.125 * xs**4)
    pau = xs / (1 + abs(-1.0 * xs + 0.5 * xs**2 - 0.25 * xs**3 + 0.125 * xs**4))
    signed = xs / (1 + 1.0 * xs + 0.5 * xs**2 + 0.25 * xs**3 + 0.125 * xs**4)
    got = f64(group_rational_reference(x, num, den))[0]
    np.testing.assert_allclose(got, kernel, rtol=1e-6)
    assert np.max(np.abs(got - pau)) > 0.1 and np.max(np.abs(got - signed)) > 0.1
    # The kernel form is odd-symmetric in Q: Q(-x) = Q(x).
    np.testing.assert_allclose(got[:2], -got[2:][::-1], rtol=1e-6)


def test_grouping_channel_to_group():
    """Channel c uses group c // (D / G): change one group's denominator, only its block moves."""
    x, _, num, den = inputs(1, (3, 12), 3)
    y0 = group_rational_reference(x, num, den)
    y1 = group_rational_reference(x, num, den.at[1].multiply(3.0))
    changed = np.any(f64(y0) != f64(y1), axis=0)
    np.testing.assert_array_equal(changed, np.arange(12) // 4 == 1)


def test_zero_and_large_inputs():
    num, den = inputs(2, (4,), 2)[2:]
    x = jnp.asarray([[0.0, -0.0, 1e4, -1e4], [1e4, -1e4, 3e4, -3e4]], jnp.float32)
    y = f64(group_rational(x, num, den))
    assert np.all(np.isfinite(y))
    a, b = f64(num)[0], np.abs(f64(den))
    assert y[0, 0] == a[0] and y[0, 1] == a[0]  # F(0) = a_0 exactly
    # Asymptote a_5 x^5 / (|b_4| x^4) = a_5 / |b_4| x, with relative correction O(1/|x|).
    xs = f64(x)
    group = np.arange(4) // 2
    asym = a[5] / b[group, 3] * xs
    big = np.abs(xs) > 1
    np.testing.assert_allclose(y[big], asym[big], rtol=2e-3 * 1e4 / np.min(np.abs(xs[big])))
    np.testing.assert_allclose(y[big], numpy_rational(x, num, den)[big], rtol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
def test_input_gradient_at_large_inputs(implementation):
    """dF/dx at |x| up to 1e7 against float64: the op's VJP forms (g / Q)(P / Q), never Q^2,
    which overflows float32 from |x| ~ 1e6 with swish (as jax.grad of the reference does)."""
    num, den = init_coefficients("swish", 1)
    x = jnp.asarray([[1e3, -1e5, 1e6, -3e6, 1e7, -1e7, 2.5, 0.0]], jnp.float32)
    grad = jax.grad(lambda x: group_rational(x, num, den, implementation=implementation).sum())
    got = f64(grad(x))[0]
    xs, a, b = f64(x)[0], f64(num)[0], np.abs(f64(den)[0])
    p = sum(a[i] * xs**i for i in range(6))
    dp = sum(i * a[i] * xs ** (i - 1) for i in range(1, 6))
    q = 1 + sum(b[j - 1] * np.abs(xs) ** j for j in range(1, 5))
    dq = np.where(xs >= 0, 1.0, -1.0) * sum(
        j * b[j - 1] * np.abs(xs) ** (j - 1) for j in range(1, 5)
    )
    want = dp / q - p * dq / q**2
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_bfloat16_rounds_only_the_output():
    x, _, num, den = inputs(3, (4, 32), 4, dtype=jnp.bfloat16)
    got = group_rational(x, num, den)
    assert got.dtype == jnp.bfloat16
    want = numpy_rational(x, num, den)  # of the same (rounded) bf16 inputs
    # f32 compute, one bf16 rounding of the output: half an ulp, 2^-8 relative; allow one ulp.
    np.testing.assert_allclose(f64(got), want, rtol=EPS_BF16, atol=1e-30)


def test_identity_preset_is_identity():
    num, den = init_coefficients("identity", 8)
    x = jnp.linspace(-20.0, 20.0, 64, dtype=jnp.float32).reshape(8, 8)
    np.testing.assert_array_equal(f64(group_rational(x, num, den)), f64(x))
