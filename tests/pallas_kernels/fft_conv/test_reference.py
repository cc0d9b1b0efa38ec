"""The jnp.fft reference against float64 numpy convolutions (the specification's own check)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fft_conv import fft_conv_reference, kept_frequency_mask
from tests.pallas_kernels.fft_conv.common import assert_close, inputs, numpy_conv


@pytest.mark.parametrize(
    ("length", "filter_len", "fft_size"),
    [
        (100, 100, 256),  # causal, L < N/2
        (128, 129, 256),  # causal, exactly L + Lk - 1 = N
        (256, 256, 256),  # circular (N = L)
        (300, 40, 512),  # causal with a short filter
        (512, 512, 512),  # circular
    ],
)
@pytest.mark.parametrize("gated", [False, True])
def test_reference_matches_numpy(length, filter_len, fft_size, gated):
    u, k, pre, post = inputs(0, 2, 3, length, filter_len, gated=gated)
    ref = jax.jit(fft_conv_reference, static_argnames="fft_size")
    y = ref(u, k, fft_size=fft_size, pregate=pre, postgate=post)
    assert y.dtype == jnp.float32
    assert_close(y, numpy_conv(u, k, fft_size, pre, post))


def test_reference_causal_is_np_convolve():
    u, k, _, _ = inputs(1, 1, 1, 200, 57)
    y = fft_conv_reference(u, k, fft_size=256)
    assert_close(y[0, 0], np.convolve(np.asarray(u[0, 0], np.float64), np.asarray(k[0]))[:200])


def test_reference_half_precision_output_dtype():
    u, k, pre, post = inputs(2, 1, 2, 64, 64, dtype=jnp.bfloat16, gated=True)
    y = fft_conv_reference(u, k, fft_size=256, pregate=pre, postgate=post)
    assert y.dtype == jnp.bfloat16
    assert_close(y, numpy_conv(u, k, 256, pre, post), jnp.bfloat16)


def test_reference_partial_is_truncated_filter():
    u, k, _, _ = inputs(3, 2, 2, 200, 200)
    y = fft_conv_reference(u, k, fft_size=512, partial_taps=30)
    assert_close(y, numpy_conv(u, k[:, :30], 512))


def test_reference_frequency_sparse_definition():
    u, k, _, _ = inputs(4, 1, 2, 256, 256)
    mask = kept_frequency_mask(512, 64)
    assert mask.sum() == 63 and mask[:32].all() and mask[-31:].all() and not mask[32:-31].any()
    assert (mask[1:] == mask[1:][::-1]).all()  # conjugate-symmetric: f kept iff N - f kept
    # FlashFFTConv's FrequencySparseFFTConv, in float64 numpy: rfft bins from P/2 on zeroed.
    k_f = np.fft.rfft(np.asarray(k, np.float64), n=512)
    k_f[..., 32:] = 0
    want = np.fft.irfft(np.fft.rfft(np.asarray(u, np.float64), n=512) * k_f, n=512)[..., :256]
    assert_close(fft_conv_reference(u, k, fft_size=512, kept_frequencies=64), want)
    # The same through the full complex spectrum and the mask.
    x_f = np.fft.fft(np.asarray(u, np.float64), n=512)
    k_f = np.fft.fft(np.asarray(k, np.float64), n=512) * mask
    assert_close(np.real(np.fft.ifft(x_f * k_f[None]))[..., :256], want)
