"""Derivatives for kernel calls: the kernel's value, the XLA formula's derivatives.

A `pallas_call` has no usable derivative of its own, so each op's custom VJP supplies its first
derivative by hand (a backward kernel). Differentiating *that* — a gradient penalty, a Hessian-
vector product, `jax.grad` of `jax.grad` — would differentiate the kernels themselves and fail
inside Pallas. `with_derivatives_of` gives a kernel call the derivatives of the jnp function that
computes the same value (the op's XLA path): the kernel still computes every value, XLA only the
higher-order terms, so higher-order derivatives are those of the XLA path to rounding.
"""

from collections.abc import Callable

import jax

__all__ = ["with_derivatives_of"]


def with_derivatives_of(value_fn: Callable, derivative_fn: Callable) -> Callable:
    """`value_fn`, differentiated as `derivative_fn` (same signature, same value up to rounding).

    Both take positional array arguments (pytrees; None for absent ones) with any static
    arguments already bound. The JVP is `derivative_fn`'s, linear in the tangents, so reverse mode
    (its transpose) works too, to any order.
    """

    @jax.custom_jvp
    def call(*args):
        return value_fn(*args)

    @call.defjvp
    def call_jvp(primals, tangents):
        _, out_tangents = jax.jvp(derivative_fn, primals, tangents)
        return call(*primals), out_tangents

    return call
