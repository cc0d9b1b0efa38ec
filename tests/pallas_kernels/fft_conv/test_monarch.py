"""The Monarch transform pair: digit-reversed (permuted) output layout, inverse, zero blocks."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fft_conv import monarch
from tests.pallas_kernels.fft_conv.common import assert_close


def _plan(n, rows_in=None, rows_out=None, kept_last=None):
    factors = monarch.monarch_factors(n)
    return monarch.MonarchPlan(
        fft_size=n,
        factors=factors,
        rows_in=rows_in or factors[0],
        rows_out=rows_out or factors[0],
        kept_last=kept_last,
    )


def _frequency_grid(factors, kept=None):
    """Natural frequency f = k_0 + N_0 (k_1 + N_1 (...)) at each position of the permuted layout."""
    axes = [np.arange(n) for n in factors]
    if kept is not None:
        axes[-1] = kept
    grids = np.meshgrid(*axes, indexing="ij")
    strides = np.cumprod((1, *factors[:-1]))
    return sum(g * s for g, s in zip(grids, strides, strict=True))


def test_factors():
    want = {
        256: (16, 16),
        512: (16, 32),
        1024: (32, 32),
        2048: (32, 64),
        4096: (16, 16, 16),
        8192: (16, 16, 32),
        16384: (16, 32, 32),
        32768: (32, 32, 32),
        65536: (16, 16, 16, 16),
        2**20: (32, 32, 32, 32),
    }
    for n, factors in want.items():
        assert monarch.monarch_factors(n) == factors
        assert math.prod(factors) == n


def test_factors_with_larger_radices():
    assert monarch.monarch_factors(4096, 64) == (64, 64)
    assert monarch.monarch_factors(8192, 64) == (16, 16, 32)
    want = {4096: (64, 64), 8192: (64, 128), 16384: (128, 128), 32768: (32, 32, 32)}
    for n, factors in want.items():
        assert monarch.monarch_factors(n, 128) == factors
    assert monarch.monarch_factors(32768, 256) == (128, 256)
    for n in (2**e for e in range(8, 21)):
        default = monarch.monarch_factors(n)
        for radix in (64, 128, 256):
            factors = monarch.monarch_factors(n, radix)
            assert math.prod(factors) == n and min(factors) >= 16
            assert max(factors) <= 2 * radix
            # The last radix never shrinks: frequency-sparsity steps (2N / last) stay valid.
            assert factors[-1] >= default[-1]
    with pytest.raises(ValueError, match="max_radix=48: must be one of 32, 64, 128, 256"):
        monarch.monarch_factors(4096, 48)


@pytest.mark.parametrize("n", [300, 255, 128, 0])
def test_factors_need_a_power_of_two(n):
    with pytest.raises(ValueError, match="must be a power of two >= 256"):
        monarch.monarch_factors(n)


@pytest.mark.parametrize("n", [256, 2048, 4096, 65536])
def test_forward_is_dft_in_permuted_layout(n):
    plan = _plan(n)
    x = np.random.default_rng(0).standard_normal((2, n))
    re, im = monarch.forward(
        monarch.to_digits(jnp.asarray(x, jnp.float32), plan), monarch.monarch_matrices(plan)
    )
    want = np.fft.fft(x)[:, _frequency_grid(plan.factors)]
    assert_close(re, want.real, err_msg="re")
    assert_close(im, want.imag, err_msg="im")


def test_inverse_undoes_forward():
    n = 4096
    plan = _plan(n)
    mats = monarch.monarch_matrices(plan)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, n)), jnp.float32)
    back = monarch.from_digits(
        monarch.inverse_real(monarch.forward(monarch.to_digits(x, plan), mats), mats), plan, n
    )
    assert_close(np.asarray(back) / n, x)


def test_unknown_dot_names_the_argument(no_typecheck):
    plan = _plan(256)
    mats = monarch.monarch_matrices(plan)
    x = jnp.zeros(plan.in_shape, jnp.float32)
    for bad in ("bf8", None):  # was a KeyError from the DOT_PRECISIONS lookup
        with pytest.raises(ValueError, match=r"forward.dot=.*: must be one of \['bf16'"):
            monarch.forward(x, mats, dot=bad)
        with pytest.raises(ValueError, match=r"inverse_real.dot=.*: must be one of \['bf16'"):
            monarch.inverse_real((x, x), mats, dot=bad)


def test_zero_rows_are_skipped_not_padded():
    n, length = 1024, 200  # 7 of the 32 rows of 32 samples are nonzero
    plan = _plan(n, rows_in=7)
    full = _plan(n)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, length)), jnp.float32)
    got = monarch.forward(monarch.to_digits(x, plan), monarch.monarch_matrices(plan))
    assert monarch.monarch_matrices(plan).fwd[0][0].shape == (32, 7)
    padded = jnp.pad(x, [(0, 0), (0, n - length)])
    want = monarch.forward(monarch.to_digits(padded, full), monarch.monarch_matrices(full))
    for a, b in zip(got, want, strict=True):
        assert_close(a, b)


def test_kept_frequencies_are_lowest_both_sides():
    n, c = 4096, 3  # last radix 16: kept digits {0, 1, 2, 13, 14, 15}
    plan = _plan(n, kept_last=c)
    x = np.random.default_rng(3).standard_normal((1, n))
    re, im = monarch.forward(
        monarch.to_digits(jnp.asarray(x, jnp.float32), plan), monarch.monarch_matrices(plan)
    )
    kept = np.array([0, 1, 2, 13, 14, 15])
    grid = _frequency_grid(plan.factors, kept)
    assert set(grid.ravel()) == {f for f in range(n) if f < c * 256 or f >= n - c * 256}
    want = np.fft.fft(x)[:, grid]
    assert_close(re, want.real)
    assert_close(im, want.imag)


@pytest.mark.parametrize("n", [1024, 4096, 65536])
def test_two_d_spelling_is_the_same_transform(n):
    plan = _plan(n, rows_in=monarch.monarch_factors(n)[0] // 2, kept_last=2)
    mats = monarch.monarch_matrices(plan)
    x = monarch.to_digits(
        jnp.asarray(np.random.default_rng(4).standard_normal((3, n // 2)), jnp.float32), plan
    )
    spectrum = monarch.forward(x, mats)
    for a, b in zip(monarch.forward(x, mats, two_d=True), spectrum, strict=True):
        assert_close(a, b)
    assert_close(
        monarch.inverse_real(spectrum, mats, two_d=True), monarch.inverse_real(spectrum, mats)
    )
