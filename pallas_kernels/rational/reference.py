"""The group-rational activation in plain jnp (float32): the specification every path meets.

Kolmogorov-Arnold Transformer (KAT, arXiv 2409.10594), §4 (GR-KAN); the function form is the one of
the released kernels (rational_kat_cu: kat_rational/rational_triton.py, "Rational_CUDA_A").
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["NUM_DENOMINATOR", "NUM_NUMERATOR", "group_rational_reference", "rational_terms"]

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


def group_rational_reference(
    x: Float[Array, "*batch D"],
    numerator: Float[Array, "Gn 6"],
    denominator: Float[Array, "G 4"],
) -> Float[Array, "*batch D"]:
    """F(x) = (sum_{i=0..5} a_i x^i) / (1 + sum_{j=1..4} |b_j| |x|^j), per channel group.

    Channel c (the last axis, width D) belongs to group c // (D / G). Computed in float32; the
    result has x's dtype. No validation (api.group_rational validates).

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
    xg = x.astype(jnp.float32).reshape(-1, groups, width // groups)  # [R, G, K]
    num = jnp.broadcast_to(numerator.astype(jnp.float32), (groups, NUM_NUMERATOR))
    a = [num[None, :, i, None] for i in range(NUM_NUMERATOR)]  # each [1, G, 1]
    den = jnp.abs(denominator.astype(jnp.float32))
    b_abs = [den[None, :, j, None] for j in range(NUM_DENOMINATOR)]  # each [1, G, 1]
    p, q = rational_terms(xg, a, b_abs)
    return (p / q).reshape(x.shape).astype(x.dtype)
