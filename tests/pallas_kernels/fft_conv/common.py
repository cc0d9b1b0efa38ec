"""Shared inputs, float64 golden values and the tolerance policy of the fft_conv tests."""

import jax.numpy as jnp
import numpy as np

# Tolerance policy (absolute, relative to the reference's scale max|ref|):
# - float32: 1e-5 x scale (composed op: two DFTs of N terms in f32; measured ~3e-7 x scale).
# - bfloat16/float16 inputs: the computation is f32 and only the output is rounded, so the test
#   compares against the f32 reference of the same (rounded) inputs and allows two ulps of the
#   output dtype: 2 eps x scale (eps = 2^-7 bf16, 2^-10 f16). Stricter than the paper's atol 1e-2
#   on 0.02-scaled inputs, which any output would pass.
_EPS = {jnp.float32: 1e-5, jnp.bfloat16: 2 * 2.0**-7, jnp.float16: 2 * 2.0**-10}


def atol(dtype, reference) -> float:
    """Absolute tolerance for a result of `dtype` compared to `reference`."""
    scale = float(np.max(np.abs(np.asarray(reference, np.float64))))
    return _EPS[jnp.dtype(dtype).type] * max(scale, 1e-30)


def assert_close(actual, reference, dtype=jnp.float32, err_msg=""):
    """|actual - reference| <= atol(dtype, reference) elementwise, in float64."""
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        np.asarray(reference, np.float64),
        rtol=0,
        atol=atol(dtype, reference),
        err_msg=err_msg,
    )


def inputs(seed, batch, heads, length, filter_len, dtype=jnp.float32, gated=False):
    """u, k (decaying, as in FlashFFTConv's tests), pregate, postgate (None unless gated)."""
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.standard_normal((batch, heads, length)), dtype)
    decay = np.exp(-4.0 * np.arange(filter_len) / filter_len)
    k = jnp.asarray(rng.standard_normal((heads, filter_len)) * decay, jnp.float32)
    if not gated:
        return u, k, None, None
    pre = jnp.asarray(rng.standard_normal((batch, heads, length)), dtype)
    post = jnp.asarray(rng.standard_normal((batch, heads, length)), dtype)
    return u, k, pre, post


def numpy_conv(u, k, fft_size, pregate=None, postgate=None):
    """float64 golden value: direct causal convolution if N >= L + Lk - 1, else circular by FFT."""
    u = np.asarray(u, np.float64)
    k = np.asarray(k, np.float64)
    if pregate is not None:
        u = u * np.asarray(pregate, np.float64)
    length, filter_len = u.shape[-1], k.shape[-1]
    if fft_size >= length + filter_len - 1:
        y = np.zeros_like(u)
        for b in range(u.shape[0]):
            for h in range(u.shape[1]):
                y[b, h] = np.convolve(u[b, h], k[h])[:length]
    else:
        spectrum = np.fft.fft(u, n=fft_size) * np.fft.fft(k, n=fft_size)[None]
        y = np.real(np.fft.ifft(spectrum))[..., :length]
    if postgate is not None:
        y = y * np.asarray(postgate, np.float64)
    return y


def equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations' parameters (the
    kernels' bodies inside a pallas_call, the branches of a cond, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)
