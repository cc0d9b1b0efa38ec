"""The group-rational activation in plain jnp (float32): the specification every path meets.

Kolmogorov-Arnold Transformer (KAT, arXiv 2409.10594), §4 (GR-KAN); the function form is the one of
the released kernels (rational_kat_cu: kat_rational/rational_triton.py, "Rational_CUDA_A").
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "NUM_DENOMINATOR",
    "NUM_NUMERATOR",
    "derivative_terms",
    "group_coefficients",
    "group_rational_reference",
    "rational_terms",
]

NUM_NUMERATOR = 6  # a_0 .. a_5: order m = 5
NUM_DENOMINATOR = 4  # b_1 .. b_4: order n = 4


def rational_terms(x, a, b_abs):
    """P(x) and Q(x) of the kernel form, broadcasting the coefficient columns against x.

    Args:
        x: float32 inputs.
        a: Six arrays a_0..a_5, each broadcastable against x (same rank).
        b_abs: Four arrays |b_1|..|b_4|, each broadcastable against x (same rank).

    Returns:
        (P, Q) with P = sum_i a_i x^i (Horner) and Q = 1 + sum_j |b_j| |x|^j (Horner in |x|).
    """
    p = a[5]
    for i in range(4, -1, -1):
        p = p * x + a[i]
    ax = jnp.abs(x)
    q = b_abs[3]
    for j in range(2, -1, -1):
        q = q * ax + b_abs[j]
    return p, q * ax + 1.0


def derivative_terms(x, g, a, b_abs):
    """The hand-written backward's elementwise part (the XLA-path VJP and the kernels share it).

    Args:
        x: float32 inputs.
        g: float32 output cotangent, x's shape.
        a, b_abs: As `rational_terms`.

    Returns:
        (dx, terms): dx = g (P'/Q - Q' P/Q^2) and the ten per-element terms whose sums over a
        group are the coefficient gradients: g x^i / Q (i = 0..5), then -g P |x|^j / Q^2
        (j = 1..4; the caller applies sign(b_j)). Q' = sign(x) sum j |b_j| |x|^(j-1), sign(0) = +1.
    """
    p, q = rational_terms(x, a, b_abs)
    dp = 5.0 * a[5]
    for i in range(4, 0, -1):
        dp = dp * x + i * a[i]
    ax = jnp.abs(x)
    dq = 4.0 * b_abs[3]
    for j in range(2, -1, -1):
        dq = dq * ax + (j + 1) * b_abs[j]
    dq = jnp.where(x < 0, -dq, dq)  # d|x|/dx = 1 at x = 0, as the CUDA/Triton kernels
    gq = g / q
    w = -gq * p / q  # -g P / Q^2
    terms, t = [], gq
    for _ in range(NUM_NUMERATOR):
        terms.append(t)  # g x^i / Q
        t = t * x
    t = w
    for _ in range(NUM_DENOMINATOR):
        t = t * ax
        terms.append(t)  # -g P |x|^j / Q^2
    return gq * dp + w * dq, terms


def group_coefficients(numerator, denominator, ndim: int):
    """The coefficients as float32 lists a_0..a_5 and |b_1|..|b_4|, each [1.., G, 1] of rank
    `ndim`, to broadcast against grouped inputs [..., G, K]."""
    groups = denominator.shape[0]
    lead = (1,) * (ndim - 2)
    num = jnp.broadcast_to(numerator.astype(jnp.float32), (groups, NUM_NUMERATOR))
    den = jnp.abs(denominator.astype(jnp.float32))
    a = [num[:, i].reshape(*lead, groups, 1) for i in range(NUM_NUMERATOR)]
    b_abs = [den[:, j].reshape(*lead, groups, 1) for j in range(NUM_DENOMINATOR)]
    return a, b_abs


def group_rational_reference(
    x: Float[Array, "*batch D"],
    numerator: Float[Array, "Gn 6"],
    denominator: Float[Array, "G 4"],
) -> Float[Array, "*batch D"]:
    """F(x) = (sum_{i=0..5} a_i x^i) / (1 + sum_{j=1..4} |b_j| |x|^j), per channel group.

    Channel c (the last axis, width D) belongs to group c // (D / G). Computed in float32; the
    result has x's dtype. No validation (api.group_rational validates).

    `jax.grad` of this function is a truth for the op's hand-written VJP only while Q(x)^2 fits
    in float32: JAX's quotient rule forms P dQ / Q^2, which overflows from |x| ~ 1e6 with the
    swish preset (Q ~ 5.5e-4 x^4; ~3e5 with tanh) and returns wrong derivatives there, while the
    VJP's (g / Q)(P / Q) stays right to the forward's own limit (|x| ~ 3e8). The tests compare
    against it below that range and against float64 formulas beyond.

    Args:
        x: Input [..., D].
        numerator: a_0..a_5, one row shared by all groups ([1, 6], KAT's layout) or one per
            group ([G, 6]).
        denominator: b_1..b_4 per group [G, 4].

    Returns:
        F(x) [..., D] in x's dtype.
    """
    groups = denominator.shape[0]
    width = x.shape[-1]
    # The leading axes kept (not flattened), so that a reshape of x sharded over them is local
    # (and allowed under an Explicit mesh).
    xg = x.astype(jnp.float32).reshape(*x.shape[:-1], groups, width // groups)  # [..., G, K]
    a, b_abs = group_coefficients(numerator, denominator, xg.ndim)
    p, q = rational_terms(xg, a, b_abs)
    return (p / q).reshape(x.shape).astype(x.dtype)
