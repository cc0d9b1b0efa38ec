"""Fixtures shared by the kernel tests."""

import types

import jax
import pytest

# The kernels target Triton on GPU (Mosaic GPU would need a plgpu rewrite); jax warns about that.
TRITON_DEPRECATION = "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend to be on an sm90 GPU: Triton compiler parameters and a compute capability."""
    try:
        from jax._src.pallas.triton import pallas_call_registration as registration
    except ImportError:
        pytest.skip("jax's private Triton registration module moved")
    if not hasattr(registration, "gpu_info_lib"):
        pytest.skip("jax's private gpu_info hook moved")
    info = types.SimpleNamespace(compute_capability=90)
    monkeypatch.setattr(
        registration, "gpu_info_lib", types.SimpleNamespace(get_gpu_info=lambda: info)
    )
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
