"""Second-order derivatives (grad of grad, Hessian-vector products) through every path.

The kernels' values come with the jnp formulas' derivatives (pallas_kernels/autodiff.py); the
truth is JAX's own autodiff of `group_rational_reference` (plain jnp), twice.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.rational import BlockSizes, group_rational, group_rational_reference
from tests.pallas_kernels.rational.common import inputs

SMALL_BLOCKS = BlockSizes(block_rows=16, block_d=8)  # several tiles in both axes


def _penalty_gradient(activation):
    """d/d(x, a, b) of |d/d(x, a, b) sum(tanh(F))|^2: every first derivative differentiated."""

    def loss(*args):
        return jnp.sum(jnp.tanh(activation(*args)))

    def penalty(*args):
        grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
        return sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in grads)

    return jax.jit(jax.grad(penalty, argnums=(0, 1, 2)))


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-group"])
def test_gradient_of_gradient(implementation, shared):
    x, _, num, den = inputs(0, (3, 40, 32), 4, shared=shared)

    def ours(x, num, den):
        return group_rational(x, num, den, implementation=implementation, block_sizes=SMALL_BLOCKS)

    got = _penalty_gradient(ours)(x, num, den)
    want = _penalty_gradient(group_rational_reference)(x, num, den)
    for name, g, w in zip(("x", "numerator", "denominator"), got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        # Third derivatives of a degree-5/4 rational summed over 3840 elements in f32: 1e-5 of
        # the largest entry (measured 2e-7 to 5e-7).
        scale = float(np.max(np.abs(np.asarray(w))))
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(w), rtol=0, atol=1e-5 * scale, err_msg=name
        )


@pytest.mark.parametrize("implementation", ["xla", "interpret"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-group"])
def test_second_derivatives_in_the_numerator_alone(implementation, shared):
    """Derivatives in the numerator only, where some of the backward's ten sums carry no
    tangent (the denominator's): the Hessian in a, and d/da of |dx|^2. On CPU the XLA
    backward's variadic reduction failed here, in jax's JVP of a reduce."""
    x, _, num, den = inputs(3, (6, 16), 4, shared=shared)

    def ours(x, num, den):
        return group_rational(x, num, den, implementation=implementation, block_sizes=SMALL_BLOCKS)

    def second_derivatives(activation):
        def dx_squared(a):
            return jnp.sum(jax.grad(lambda y: jnp.sum(activation(y, a, den)))(x) ** 2)

        hessian = jax.hessian(lambda a: jnp.sum(jnp.tanh(activation(x, a, den))))(num)
        return hessian, jax.grad(dx_squared)(num)

    got, want = second_derivatives(ours), second_derivatives(group_rational_reference)
    for g, w in zip(got, want, strict=True):
        scale = float(np.max(np.abs(np.asarray(w))))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=1e-5 * scale)


def test_hessian_vector_product():
    """Forward over reverse (jax.jvp of jax.grad), the usual HVP, on the kernel path."""
    x, v, num, den = inputs(1, (8, 32), 4)

    def loss(activation):
        return lambda x: jnp.sum(jnp.tanh(activation(x, num, den)))

    def ours(x, num, den):
        return group_rational(x, num, den, implementation="interpret")

    got = jax.jvp(jax.grad(loss(ours)), (x,), (v,))[1]
    want = jax.jvp(jax.grad(loss(group_rational_reference)), (x,), (v,))[1]
    scale = float(np.max(np.abs(np.asarray(want))))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5 * scale)


def test_forward_mode_is_jaxs_custom_vjp_error():
    x, _, num, den = inputs(2, (4, 8), 4)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: group_rational(x, num, den, implementation="interpret"), (x,), (x,))
