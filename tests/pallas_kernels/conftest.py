"""Fixtures shared by the kernel tests."""

import jax
import pytest

# The kernels target Triton on GPU (Mosaic GPU would need a plgpu rewrite); jax warns about that.
TRITON_DEPRECATION = "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend to be on an sm90 GPU: Triton compiler parameters and a compute capability."""
    from pallas_kernels import registers

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    try:
        with registers.fake_gpu(90):
            yield
    except RuntimeError as e:  # raised on entry only: jax's private hooks moved
        pytest.skip(str(e))
