"""Inputs, float64 numpy golden values and the tolerance policy of the rational tests."""

import jax.numpy as jnp
import numpy as np

EPS32 = 2.0**-23
EPS_BF16 = 2.0**-7


def inputs(seed, shape, groups, *, shared=True, dtype=jnp.float32, scale=1.5):
    """x [shape], dy [shape] (x's dtype), numerator [1 or G, 6], denominator [G, 4] (f32).

    Coefficients are random (not a preset) so that every term of P and Q matters; b stays away
    from 0, where |b| has its kink.
    """
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape) * scale, dtype)
    dy = jnp.asarray(rng.standard_normal(shape), dtype)
    numerator = rng.standard_normal((1 if shared else groups, 6)) * np.array(
        [0.1, 1.0, 0.5, 0.2, 0.05, 0.02]
    )
    b = rng.uniform(0.05, 0.6, (groups, 4)) * rng.choice([-1.0, 1.0], (groups, 4))
    return x, dy, jnp.asarray(numerator, jnp.float32), jnp.asarray(b, jnp.float32)


def f64(a):
    return np.asarray(a, np.float64)


def numpy_rational(x, numerator, denominator):
    """F(x) of the kernel form in float64 numpy (power sums, not Horner: an independent formula)."""
    x, num, den = f64(x), f64(numerator), f64(denominator)
    groups = den.shape[0]
    xg = x.reshape(-1, groups, x.shape[-1] // groups)  # [R, G, K]
    num = np.broadcast_to(num, (groups, 6))
    p = sum(num[None, :, i, None] * xg**i for i in range(6))
    q = 1.0 + sum(np.abs(den[None, :, j - 1, None]) * np.abs(xg) ** j for j in range(1, 5))
    return (p / q).reshape(x.shape)


def numpy_loss(x, dy, numerator, denominator):
    return float(np.sum(f64(dy) * numpy_rational(x, numerator, denominator)))


def finite_difference_grads(x, dy, numerator, denominator, h=1e-6):
    """Central differences in float64 of L = sum(dy * F): dx (elementwise), dnumerator, ddenom."""
    x, dy, num, den = f64(x), f64(dy), f64(numerator), f64(denominator)
    dx = (numpy_rational(x + h, num, den) - numpy_rational(x - h, num, den)) / (2 * h) * dy
    grads = []
    for c in (num, den):
        g = np.zeros_like(c)
        for idx in np.ndindex(c.shape):
            plus, minus = c.copy(), c.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = (plus, den) if c is num else (num, plus)
            args_m = (minus, den) if c is num else (num, minus)
            g[idx] = (numpy_loss(x, dy, *args_p) - numpy_loss(x, dy, *args_m)) / (2 * h)
        grads.append(g)
    return dx, grads[0], grads[1]


def coefficient_terms_abs(x, dy, numerator, denominator):
    """sum over the reduced elements of |term| per coefficient ([G or 1, 6], [G, 4]) in float64.

    The scale of a summation's rounding error: a sum of N float32 terms has error at most
    ~N eps sum|t| (sequential) and ~log2(N) eps sum|t| (pairwise); see `coefficient_atol`.
    """
    x, dy, num, den = f64(x), f64(dy), f64(numerator), f64(denominator)
    groups = den.shape[0]
    xg = x.reshape(-1, groups, x.shape[-1] // groups)
    g = dy.reshape(xg.shape)
    numb = np.broadcast_to(num, (groups, 6))
    p = sum(numb[None, :, i, None] * xg**i for i in range(6))
    q = 1.0 + sum(np.abs(den[None, :, j - 1, None]) * np.abs(xg) ** j for j in range(1, 5))
    ta = np.stack([np.abs(g * xg**i / q).sum(axis=(0, 2)) for i in range(6)], axis=1)  # [G, 6]
    tb = np.stack(
        [np.abs(g * p / q**2 * np.abs(xg) ** j).sum(axis=(0, 2)) for j in range(1, 5)], axis=1
    )  # [G, 4]
    if num.shape[0] == 1:
        ta = ta.sum(axis=0, keepdims=True)
    return ta, tb


def coefficient_atol(x, dy, numerator, denominator):
    """Tolerance of the coefficient gradients, by reduction size N (elements per coefficient).

    The per-element terms are float32 (inputs of either dtype are upcast, so bf16 inputs add no
    error once the reference sees the same rounded inputs); the error is the accumulation of N
    float32 terms, each with a relative error of a few eps (P, Q, the division): we allow
    (8 + 2 log2 N) eps32 sum|terms| - the pairwise-tree bound with headroom for per-term rounding.
    A sequential sum would need N eps sum|terms|, which would hide real bugs at large N.
    """
    ta, tb = coefficient_terms_abs(x, dy, numerator, denominator)
    n_a = x.size // ta.shape[0]
    n_b = x.size // tb.shape[0]
    return (
        (8 + 2 * np.log2(n_a)) * EPS32 * ta,
        (8 + 2 * np.log2(n_b)) * EPS32 * tb,
    )


def assert_coefficients_close(actual, expected, atol, err_msg=""):
    diff = np.abs(f64(actual) - f64(expected))
    assert np.all(diff <= atol), f"{err_msg}: max diff/atol {np.max(diff / atol):.3g}"
