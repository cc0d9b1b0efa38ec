"""Fixtures of the fft_conv tests."""

import pytest

from pallas_kernels.fft_conv import api


@pytest.fixture
def monarch_everywhere(monkeypatch):
    """implementation="xla" runs the Monarch path at every size (it may pick jnp.fft where that
    is faster on the backend: every size on CPU); for tests about the Monarch path itself."""
    monkeypatch.setattr(api, "_JNP_FFT_SIZES", {})
