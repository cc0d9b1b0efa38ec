"""`group_rational`: the public group-rational activation (validation and dispatch).

Kolmogorov-Arnold Transformer (KAT, arXiv 2409.10594), §4 (GR-KAN); FlashKAT (arXiv 2505.13813).
"""

import math
import typing
from typing import Literal

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from pallas_kernels import arguments, partitioning, platform
from pallas_kernels.rational import kernel, reference, vjp

__all__ = [
    "IMPLEMENTATIONS",
    "Implementation",
    "check_arguments",
    "group_rational",
    "resolve_implementation",
]

Implementation = Literal["auto", "pallas", "interpret", "xla", "xla+pallas", "xla+interpret"]
IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(Implementation)

_X_DTYPES = (jnp.float32, jnp.bfloat16)


# What "auto" runs per backend: each pass takes the faster where measured (README, Kernels).
# - GPU: the XLA forward (at copy bandwidth, and fused with its neighbours in a model) and the
#   Pallas backward (deterministic coefficient sums; faster than the XLA backward on an H200).
# - TPU: the Pallas kernels (compiled by Mosaic ahead of time here; no chip measured yet).
# - CPU: the XLA path (Pallas runs only in interpret mode there).
_AUTO = {"gpu": "xla+pallas", "tpu": "pallas"}


def resolve_implementation(implementation: str) -> str:
    """ "auto" -> "xla+pallas" on GPU, "pallas" on TPU, "xla" on CPU; the other
    `IMPLEMENTATIONS` unchanged.

    Raises:
        ValueError: `implementation` is not one of `IMPLEMENTATIONS`.
    """
    arguments.check_one_of("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "auto":
        return _AUTO.get(platform.current(), "xla")
    return implementation


def check_arguments(x, numerator, denominator, implementation: str = "auto") -> None:
    """Raise a ValueError naming the first unsupported argument and what is supported."""
    arguments.check_one_of("implementation", implementation, IMPLEMENTATIONS)
    platform.check_compiled(implementation)
    for name, value in (("x", x), ("numerator", numerator), ("denominator", denominator)):
        arguments.check_array(name, value)
    if x.ndim < 1:
        raise ValueError(f"x.shape={x.shape}: x must have a channel axis [..., D]")
    if x.dtype not in _X_DTYPES:
        raise ValueError(f"x.dtype={x.dtype}: supported are float32 and bfloat16")
    if denominator.ndim != 2 or denominator.shape[1] != reference.NUM_DENOMINATOR:
        raise ValueError(
            f"denominator.shape={denominator.shape}: must be [G, {reference.NUM_DENOMINATOR}] "
            "(b_1..b_4 per group)"
        )
    groups = denominator.shape[0]
    if groups < 1:
        raise ValueError(f"denominator.shape={denominator.shape}: needs at least one group")
    if numerator.ndim != 2 or numerator.shape not in (
        (1, reference.NUM_NUMERATOR),
        (groups, reference.NUM_NUMERATOR),
    ):
        raise ValueError(
            f"numerator.shape={numerator.shape}: must be [1, {reference.NUM_NUMERATOR}] (shared) "
            f"or [G={groups}, {reference.NUM_NUMERATOR}] (a_0..a_5 per group)"
        )
    for name, coefficients in (("numerator", numerator), ("denominator", denominator)):
        if coefficients.dtype != jnp.float32:
            raise ValueError(f"{name}.dtype={coefficients.dtype}: coefficients must be float32")
    width = x.shape[-1]
    if width < 1 or width % groups:
        raise ValueError(
            f"x.shape[-1]={width}: D must be a positive multiple of the number of groups "
            f"G={groups} (denominator.shape[0])"
        )


@arguments.validates_arguments
def group_rational(
    x: Float[Array, "*batch D"],
    numerator: Float[Array, "Gn 6"],
    denominator: Float[Array, "G 4"],
    *,
    implementation: Implementation = "auto",
    block_sizes: kernel.BlockSizes | str | None = None,
) -> Float[Array, "*batch D"]:
    """Group-rational activation F(x) = P(x) / Q(x), differentiable in x and the coefficients.

    P(x) = sum_{i=0..5} a_i x^i, Q(x) = 1 + sum_{j=1..4} |b_j| |x|^j (the form of KAT's CUDA
    and Triton kernels), channel c of the last axis in group c // (D / G). Computed in float32.
    The coefficient gradients are reduced in a fixed order (no atomics): bitwise reproducible.

    Args:
        x: Input [..., D], float32 or bfloat16.
        numerator: a_0..a_5, float32: [1, 6] shared by all groups (KAT) or [G, 6] per group.
        denominator: b_1..b_4 per group, float32 [G, 4]; G divides D.
        implementation: "xla" (jnp, fused by XLA; the CPU default), "pallas" (compiled kernels),
            "interpret" (the kernels in interpret mode), "xla+pallas" (forward by XLA, backward
            by the compiled kernels; the default on GPU) or "xla+interpret", or "auto": the
            measured fastest per backend (`resolve_implementation`). Under a sharded jit the
            kernels run per shard: x may be split over mesh axes on any axis, the channels
            included (a shard holds whole channels; a split that does not divide an axis keeps
            that axis whole), and the coefficient gradients are all-reduced
            (`pallas_kernels.partitioning`).
        block_sizes: Kernel tiling (pallas/interpret only; validated for every implementation):
            a `kernel.BlockSizes`, its spec string (`BlockSizes.parse`, e.g. "256x64l16-loop"),
            or None for `kernel.default_block_sizes()` (the loop reduction on GPU, `BlockSizes()`
            elsewhere).

    Returns:
        F(x) [..., D] in x's dtype.

    Raises:
        ValueError: An unsupported shape, dtype or implementation, naming what is supported.
    """
    check_arguments(x, numerator, denominator, implementation)
    x, numerator, denominator = map(arguments.as_jax_array, (x, numerator, denominator))
    block_sizes = arguments.resolve_block_sizes(
        block_sizes, kernel.BlockSizes, kernel.default_block_sizes
    )
    implementation = resolve_implementation(implementation)
    if x.size == 0:  # nothing to launch a kernel over; the XLA path gives [] and zero gradients
        implementation = "xla"
    forward, _, backward = implementation.partition("+")
    config = vjp.RationalConfig(
        implementation=forward,  # type: ignore[arg-type]
        backward=backward or None,  # type: ignore[arg-type]
        block_sizes=block_sizes,
    )
    spec = _straddled_channels(x, denominator.shape[0])
    if spec is None:
        return vjp.group_rational_op(config, x, numerator, denominator)
    # Under an Explicit mesh a shard of D that splits a group cannot be reshaped into groups:
    # the channels are gathered whole for the op, and the result split back as x was.
    whole = jax.sharding.reshard(x, P(*spec[:-1], None))
    y = vjp.group_rational_op(config, whole, numerator, denominator)
    return jax.sharding.reshard(y, spec)


def _straddled_channels(x, groups: int) -> P | None:
    """x's PartitionSpec (one entry per axis) if x lives on an Explicit mesh whose split of the
    channel axis D cuts a group of D / G channels (G not a multiple of the shard count); else
    None. (Under an Auto mesh the partitioner handles any split.)"""
    sharding = getattr(jax.typeof(x), "sharding", None)
    if sharding is None or sharding.mesh.empty or not partitioning.in_explicit_mesh():
        return None
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    axes = spec[-1]
    if axes is None:
        return None
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    shards = math.prod(sharding.mesh.shape[a] for a in axes)
    return None if groups % shards == 0 else P(*spec)
