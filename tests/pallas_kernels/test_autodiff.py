"""with_derivatives_of: the value of one function, the derivatives (any order) of another."""

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.autodiff import with_derivatives_of


def test_value_of_one_derivatives_of_the_other():
    # Deliberately different values, so each side is seen: value x^2 + 1, derivatives of x^3.
    f = with_derivatives_of(lambda x: x**2 + 1.0, lambda x: x**3)
    x = jnp.asarray([0.5, -2.0, 3.0])
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(x**2 + 1.0))
    first = jax.grad(lambda x: f(x).sum())
    np.testing.assert_allclose(np.asarray(first(x)), np.asarray(3 * x**2))
    second = jax.grad(lambda x: first(x).sum())
    np.testing.assert_allclose(np.asarray(second(x)), np.asarray(6 * x))
    tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))[1]  # forward mode too
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(3 * x**2))


def test_pytrees_and_none_arguments():
    """Several arguments, one of them None (an absent gate), and a tuple output."""

    def value(a, b, gate):
        return (a * b, a + b)

    f = with_derivatives_of(value, value)
    a, b = jnp.asarray(2.0), jnp.asarray(5.0)
    grads = jax.grad(lambda a, b: f(a, b, None)[0] + 3 * f(a, b, None)[1], argnums=(0, 1))(a, b)
    np.testing.assert_allclose([float(g) for g in grads], [5.0 + 3.0, 2.0 + 3.0])
