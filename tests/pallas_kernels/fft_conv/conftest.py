"""Fixtures of the fft_conv tests."""

import pytest


@pytest.fixture
def monarch_everywhere(monkeypatch):
    """implementation="xla" runs the Monarch path at every size (it may pick jnp.fft where that
    is faster on the backend: every size on CPU); for tests about the Monarch path itself."""
    # Imported here, not at the top: a conftest loads before tests/conftest.py installs the
    # jaxtyping import hook, and a module imported then would go unchecked.
    from pallas_kernels.fft_conv import api

    monkeypatch.setattr(api, "_JNP_FFT_SIZES", {})
