"""Custom VJP of the group-rational activation with hand-written derivatives.

KAT (arXiv 2409.10594), §4; derivatives as in the released kernels' comments
(rational_kat_cu: kat_rational/rational_triton.py, backward kernel).

With P = sum_i a_i x^i, Q = 1 + sum_j |b_j| |x|^j, g the output cotangent:
    dF/dx   = P'/Q - Q' P/Q^2,   P' = sum_i i a_i x^(i-1),  Q' = sign(x) sum_j j |b_j| |x|^(j-1)
    dL/da_i = sum g x^i / Q,     dL/db_j = sign(b_j) sum -g P |x|^j / Q^2
over all elements of b's group (and over all groups for a shared numerator). sign(0) = +1 for both
x and b, as the CUDA/Triton kernels and jax's d|x|/dx at 0: at the identity preset (b = 0) the
denominator still receives a gradient. Residuals are the inputs only; P and Q are recomputed.
On the kernel paths both kernels carry the jnp formulas' derivatives (`pallas_kernels.autodiff`),
so the backward itself can be differentiated (second-order derivatives).
"""

import dataclasses
import functools
import typing
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels import arguments, autodiff, partitioning, platform
from pallas_kernels.rational import kernel, reference

__all__ = ["RationalConfig", "group_rational_op"]

_Implementation = Literal["xla", "pallas", "interpret"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RationalConfig:
    """Static arguments (hashable: the custom VJP's non-differentiable input).

    Attributes:
        implementation: "xla" (jnp, fused by XLA), "pallas" or "interpret" (the Pallas kernels,
            compiled or interpreted): the forward, and the backward unless `backward` is set.
        backward: The backward's implementation, if not `implementation`'s (GPU's "auto" is
            an XLA forward and a Pallas backward).
        block_sizes: Kernel tiling (pallas/interpret only).
    """

    implementation: _Implementation = "xla"
    backward: _Implementation | None = None
    block_sizes: kernel.BlockSizes = kernel.BlockSizes()

    def __post_init__(self):
        # Anything but "xla" would run the Pallas kernels: a typo must not.
        allowed = typing.get_args(_Implementation)
        arguments.check_choice("RationalConfig", "implementation", self.implementation, allowed)
        if self.backward is not None:
            arguments.check_choice("RationalConfig", "backward", self.backward, allowed)

    @property
    def backward_implementation(self) -> str:
        return self.backward or self.implementation


def _kernel_options(config: RationalConfig, implementation: str) -> dict:
    """The static keyword arguments of `kernel.rational_fwd` and `kernel.rational_bwd`."""
    return dict(block_sizes=config.block_sizes, interpret=implementation == "interpret")


def _sign(v):
    return jnp.where(v < 0, -1.0, 1.0).astype(v.dtype)


def _row_split(rows: int, most: int = 256) -> tuple[int, int]:
    """(R1, R2) with R1 R2 = rows and R1 the largest divisor of rows that is <= most."""
    if rows == 0:
        return 1, 0
    outer = max(d for d in range(1, min(rows, most) + 1) if rows % d == 0)
    return outer, rows // outer


def _derivative_terms(xg, g, numerator, denominator):
    """`reference.derivative_terms` for xg, g [..., G, K], the coefficients as [.., G, 1]."""
    a, b_abs = reference.group_coefficients(numerator, denominator, xg.ndim)
    return reference.derivative_terms(xg, g, a, b_abs)


def _xla_backward(x, dy, numerator, denominator):
    """dx, per-group sum g x^i / Q [G, 6] and sum -g P |x|^j / Q^2 [G, 4] in jnp.

    Two spellings of the same sums, by platform (`platform.current()`), each the faster where it
    was measured. CPU: one variadic reduction over rows split as [R1, R2]. GPU/TPU: ten
    plain sums over [R, G, K], which XLA:GPU fuses into one multi-output reduction: 0.55 ms
    forward + backward at [128, 197, 768] f32 on an H100, where the CPU spelling took 9.3 ms on
    an H200 (README, GPU).
    """
    groups = denominator.shape[0]
    width = x.shape[-1]
    explicit = partitioning.in_explicit_mesh()
    cpu = platform.current() == "cpu" and not explicit
    if explicit:
        # Shardings are types: the leading axes are kept as they are (sharded ones included),
        # and the sums over them are all-reduced by XLA.
        rows = x.shape[:-1]
    elif cpu:
        # Rows as [R1, R2], so the ten sums reduce R2 and K first, keeping R1 rows that XLA:CPU
        # splits across threads, then the R1 partial sums (a single reduction to [G] ran on one
        # thread: 86 ms vs 71 ms for the sums on [128, 197, 768], README).
        rows = _row_split(x.size // width)
    else:
        rows = (x.size // width,)
    xg = x.astype(jnp.float32).reshape(*rows, groups, width // groups)  # [R1, R2 | R.., G, K]
    g = dy.astype(jnp.float32).reshape(xg.shape)
    dx, terms = _derivative_terms(xg, g, numerator, denominator)
    axes = (*range(len(rows)), len(rows) + 1)  # all but G

    def plain_sums(terms):
        return jnp.stack([t.sum(axis=axes) for t in terms])  # [10, G]

    if cpu:
        # One variadic reduction: XLA reads x and dy once for all ten sums instead of once per
        # sum (ten separate `sum`s took twice the time of the whole backward on CPU). Its
        # derivatives are the plain sums': jax's JVP of a variadic reduce fails when some
        # operands have no tangent (d/da of the dx of a rational: the b terms).
        sums = autodiff.with_derivatives_of(_variadic_row_sums, plain_sums)(tuple(terms))
    else:
        sums = plain_sums(terms)
    dx = dx.reshape(x.shape).astype(x.dtype)
    return dx, sums[: reference.NUM_NUMERATOR].T, sums[reference.NUM_NUMERATOR :].T


def _variadic_row_sums(terms):
    """`_xla_backward`'s ten sums of terms [R1, R2, G, K] on CPU, as [10, G]: one variadic
    reduction over R2 and K to [R1, G] each, then the R1 partials."""
    sums = lax.reduce(
        terms,
        tuple(jnp.float32(0) for _ in terms),
        lambda acc, new: tuple(u + v for u, v in zip(acc, new, strict=True)),
        (1, 3),
    )  # ten [R1, G]
    return jnp.stack(sums, axis=1).sum(axis=0)  # [10, G]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def group_rational_op(config, x, numerator, denominator):
    """The activation of `api.group_rational` for validated arguments."""
    return _forward(config, x, numerator, denominator)[0]


def _forward(config, x, numerator, denominator):
    xla = reference.group_rational_reference
    if config.implementation == "xla":
        y = xla(x, numerator, denominator)
    else:
        kernel_call = functools.partial(
            kernel.rational_fwd, **_kernel_options(config, config.implementation)
        )
        # Differentiated (only in second-order derivatives: the first is `_backward`) as jnp.
        y = autodiff.with_derivatives_of(kernel_call, xla)(x, numerator, denominator)
    return y, (x, numerator, denominator)


def _backward(config, residuals, dy):
    x, numerator, denominator = residuals
    dy = jnp.asarray(dy)  # jax.test_util.check_grads passes numpy cotangents
    if config.backward_implementation == "xla":
        # CPU: fences around the jnp backward. Without them XLA fuses its producers (the fc1
        # matmul's bias add, the LayerNorm) into it and it into every consumer of dx (the fc1
        # backward's transposes and adds), so the polynomials and divisions were recomputed per
        # consumer: on CPU the KAT train step took 1.7x the ViT's at 6 blocks, 1.16x with dx
        # fenced and 1.10x with the inputs fenced too (experiments/benches/kat.py, README).
        # GPU/TPU: unfenced, as measured on the H100 (the fences' effect there is unmeasured).
        fenced = platform.current() == "cpu"
        if fenced:
            x, dy = lax.optimization_barrier((x, dy))
        dx, sum_a, sum_b = _xla_backward(x, dy, numerator, denominator)
        if fenced:
            dx = lax.optimization_barrier(dx)
    else:
        kernel_call = functools.partial(
            kernel.rational_bwd, **_kernel_options(config, config.backward_implementation)
        )
        # Second-order derivatives differentiate the jnp sums instead (autodiff.py).
        dx, sum_a, sum_b = autodiff.with_derivatives_of(kernel_call, _xla_backward)(
            x, dy, numerator, denominator
        )
    if numerator.shape[0] == 1:
        # Shared numerator: [G, 6] -> [1, 6], by a fixed tree (an XLA sum's order followed the
        # fusions around it, which differ between tilings: da changed in its last bits). The
        # tree slices G, so under an Explicit mesh the G sums are gathered first.
        if partitioning.in_explicit_mesh():
            sum_a = jax.sharding.reshard(sum_a, jax.P())
        sum_a = kernel.pairwise_sum(sum_a)[None]
    return partitioning.typed_like((dx, sum_a, sum_b * _sign(denominator)), residuals)


group_rational_op.defvjp(_forward, _backward)
