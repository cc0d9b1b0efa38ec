"""Partial and frequency-sparse convolutions against their definitions, and their FLOP savings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fft_conv import api, fft_conv, fft_conv_reference
from tests.pallas_kernels.fft_conv.common import assert_close, inputs


@pytest.fixture(autouse=True)
def _monarch_everywhere(request, monkeypatch):
    # The Monarch XLA path at every N, except for the "auto" cases: those take the path users
    # get on this backend (jnp.fft on CPU), where the options are applied to the spectrum too.
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("implementation") != "auto":
        monkeypatch.setattr(api, "_JNP_FFT_SIZES", {})


def _flops(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


@pytest.mark.parametrize("implementation", ["xla", "interpret", "auto"])
@pytest.mark.parametrize(("length", "filter_len", "taps"), [(200, 200, 50), (1000, 1000, 24)])
def test_partial_is_truncated_filter(implementation, length, filter_len, taps):
    u, k, pre, post = inputs(0, 2, 4, length, filter_len, gated=True)
    conv = functools.partial(fft_conv, partial_taps=taps, implementation=implementation)
    y, vjp_fn = jax.vjp(lambda *a: conv(a[0], a[1], pregate=a[2], postgate=a[3]), u, k, pre, post)
    # The default N comes from the taps: next power of two >= L + taps - 1.
    n = 1 << (max(length + taps - 1, 256) - 1).bit_length()
    ref = functools.partial(fft_conv_reference, fft_size=n)
    want, want_vjp = jax.vjp(
        lambda *a: ref(a[0], a[1][:, :taps], pregate=a[2], postgate=a[3]), u, k, pre, post
    )
    assert_close(y, want)
    grads = vjp_fn(y)
    for g, w in zip(grads, want_vjp(y), strict=True):
        assert_close(g, w)
    assert not np.any(np.asarray(grads[1][:, taps:]))


@pytest.mark.parametrize("implementation", ["xla", "interpret", "auto"])
@pytest.mark.parametrize(
    ("n", "length", "kept"),
    [(256, 128, 32), (1024, 1024, 192), (4096, 2048, 1024), (8192, 4096, 512)],
)
def test_frequency_sparse_matches_definition(implementation, n, length, kept):
    if implementation == "auto":
        assert api.resolve_implementation("auto", n) == "jnp_fft"  # CPU's path
    u, k, pre, post = inputs(1, 2, 2, length, length, gated=True)
    kwargs = {"fft_size": n, "kept_frequencies": kept}
    conv = functools.partial(fft_conv, implementation=implementation, **kwargs)
    ref = functools.partial(fft_conv_reference, **kwargs)
    args = (u, k, pre, post)
    y, vjp_fn = jax.vjp(lambda *a: conv(a[0], a[1], pregate=a[2], postgate=a[3]), *args)
    want, want_vjp = jax.vjp(lambda *a: ref(a[0], a[1], pregate=a[2], postgate=a[3]), *args)
    assert_close(y, want)
    for g, w in zip(vjp_fn(y), want_vjp(y), strict=True):
        assert_close(g, w)
    # Independent check, FlashFFTConv's FrequencySparseFFTConv in float64 numpy (rfft bins from
    # P/2 on zeroed): only those bins of the filter matter.
    k_f = np.fft.rfft(np.asarray(k, np.float64), n=n)
    k_f[..., kept // 2 :] = 0
    x = np.asarray(u, np.float64) * np.asarray(pre, np.float64)
    want = np.fft.irfft(np.fft.rfft(x, n=n) * k_f[None], n=n)[..., :length]
    assert_close(y, want * np.asarray(post, np.float64))
    other = jnp.asarray(np.fft.irfft(k_f, n=n), jnp.float32)  # [H, N], circular support
    assert_close(y, fft_conv_reference(u, other, fft_size=n, pregate=pre, postgate=post))


def test_frequency_sparse_skips_flops():
    u, k, _, _ = inputs(2, 2, 4, 2048, 2048)
    flops = {
        kept: _flops(functools.partial(fft_conv, fft_size=4096, kept_frequencies=kept), u, k)
        for kept in (4096, 2048, 512)
    }
    full = _flops(functools.partial(fft_conv, fft_size=4096), u, k)
    assert flops[4096] == pytest.approx(full, rel=0.005)  # P = N skips no block
    assert flops[512] < flops[2048] < full


def test_partial_skips_flops():
    u, k, _, _ = inputs(3, 2, 4, 2048, 2048)
    conv = functools.partial(fft_conv, fft_size=4096)
    assert _flops(functools.partial(conv, partial_taps=256), u, k) < _flops(conv, u, k)
