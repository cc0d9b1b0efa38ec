"""The FFT convolution in plain jnp.fft (float32): the specification every path is tested against.

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), §2-3.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["fft_conv_reference", "kept_frequency_mask"]


def kept_frequency_mask(fft_size: int, kept_frequencies: int | None) -> np.ndarray:
    """The frequencies a frequency-sparse convolution keeps, in natural order.

    FlashFFTConv's definition (`FrequencySparseFFTConv`: `rfft(k, N)[..., P//2:] = 0`): the P/2
    lowest rfft bins 0..P/2-1, i.e. of the full spectrum f < P/2 and, their conjugates,
    f > N - P/2. The mask is conjugate-symmetric, so a real filter stays a real low-pass filter.

    Args:
        fft_size: N.
        kept_frequencies: P (even), or None for all N.

    Returns:
        Boolean [N]: True for f < P/2 and for f > N - P/2 (P - 1 frequencies; P = N drops only
        the Nyquist frequency N/2, as FlashFFTConv's example does).
    """
    f = np.arange(fft_size)
    if kept_frequencies is None:
        return np.ones(fft_size, dtype=bool)
    half = kept_frequencies // 2
    return (f < half) | (f > fft_size - half)


def fft_conv_reference(
    u: Float[Array, "B H L"],
    k: Float[Array, "H Lk"],
    *,
    fft_size: int,
    pregate: Float[Array, "B H L"] | None = None,
    postgate: Float[Array, "B H L"] | None = None,
    partial_taps: int | None = None,
    kept_frequencies: int | None = None,
) -> Float[Array, "B H L"]:
    """`postgate * irfft(rfft(u * pregate, N) * rfft(k, N))[..., :L]` computed with jnp.fft in f32.

    With N >= L + Lk - 1 this is the causal convolution `y[t] = sum_j k[j] x[t - j]`; with N = L it
    is the circular one. No argument validation: this is the readable definition.

    Args:
        u: Input; any float dtype, computed in float32.
        k: Filter, one per head.
        fft_size: N.
        pregate: Multiplies u before the convolution.
        postgate: Multiplies the convolution's output.
        partial_taps: Partial convolution: use only the first `partial_taps` taps of k.
        kept_frequencies: Frequency-sparse convolution: zero the filter's rfft bins from
            kept_frequencies // 2 on (`kept_frequency_mask`).

    Returns:
        y in u's dtype.
    """
    length = u.shape[-1]
    x = u.astype(jnp.float32)
    if pregate is not None:
        x = x * pregate.astype(jnp.float32)
    k = k.astype(jnp.float32)
    if partial_taps is not None:
        k = k[:, :partial_taps]
    k_f = jnp.fft.rfft(k, n=fft_size)  # [H, N/2+1]
    if kept_frequencies is not None:
        k_f = jnp.where(jnp.arange(k_f.shape[-1]) < kept_frequencies // 2, k_f, 0)
    y = jnp.fft.irfft(jnp.fft.rfft(x, n=fft_size) * k_f[None], n=fft_size)[..., :length]
    if postgate is not None:
        y = y * postgate.astype(jnp.float32)
    return y.astype(u.dtype)
