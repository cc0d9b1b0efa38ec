"""Second-order derivatives (grad of grad, Hessian-vector products) through every path.

The kernels' values come with the XLA formulas' derivatives (pallas_kernels/autodiff.py); the
truth is JAX's own autodiff of the jnp.fft reference, twice.
"""

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.fft_conv import api, fft_conv, fft_conv_reference
from tests.pallas_kernels.fft_conv.common import assert_close, inputs

N = 256


def _penalty_gradient(conv):
    """d/d(u, k, gates) of |d/d(u, k, gates) sum(sin(conv))|^2: every first derivative is
    differentiated again."""

    def loss(*args):
        return jnp.sum(jnp.sin(conv(*args)))

    def penalty(*args):
        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
        return sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in grads)

    return jax.jit(jax.grad(penalty, argnums=(0, 1, 2, 3)))


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_of_gradient(monkeypatch, implementation, dtype):
    monkeypatch.setattr(api, "_JNP_FFT_SIZES", {})  # "xla" = the Monarch matmuls, not jnp.fft
    args = inputs(0, 2, 3, 100, 60, dtype, gated=True)

    def ours(u, k, pre, post):
        return fft_conv(u, k, pregate=pre, postgate=post, implementation=implementation)

    def reference(u, k, pre, post):
        return fft_conv_reference(u, k, fft_size=N, pregate=pre, postgate=post)

    got = _penalty_gradient(ours)(*args)
    want = _penalty_gradient(reference)(*args)
    for name, g, w in zip(("u", "k", "pregate", "postgate"), got, want, strict=True):
        assert g.dtype == w.dtype
        # The suite's policy (common.py): f32 1e-5 of the scale (measured ~5e-7); with bf16
        # inputs two bf16 ulps for all four, dk included: the first derivatives are rounded to
        # bf16 before they are differentiated again (measured 0.6% of the scale on dk).
        assert_close(g, w, dtype, err_msg=name)


def test_hessian_vector_product():
    """Forward over reverse (jax.jvp of jax.grad), the usual HVP, on the kernel path."""
    u, k, v, _ = inputs(1, 2, 2, 200, 200, gated=True)

    def loss(conv):
        return lambda u: jnp.sum(jnp.sin(conv(u)))

    def ours(u):
        return fft_conv(u, k, implementation="interpret")

    def reference(u):
        return fft_conv_reference(u, k, fft_size=512)

    got = jax.jvp(jax.grad(loss(ours)), (u,), (v,))[1]
    want = jax.jvp(jax.grad(loss(reference)), (u,), (v,))[1]
    assert_close(got, want)


def test_forward_mode_is_jaxs_custom_vjp_error():
    """Forward mode of the op itself is not defined (a custom VJP); JAX says so clearly."""
    u, k, _, _ = inputs(2, 1, 1, 50, 50)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda u: fft_conv(u, k, implementation="interpret"), (u,), (u,))
