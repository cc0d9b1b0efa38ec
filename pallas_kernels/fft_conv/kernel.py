"""Pallas kernel: the fused gated FFT convolution (Monarch matmuls, real/imaginary planes).

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), §3.2.

Forward: one program handles one batch row and `block_h` heads; per head (or per group of
`heads_per_dot` heads, transformed by the same, taller matmuls) it loads the input row in digit
layout, applies the pregate, runs the forward Monarch transform, multiplies by the filter
spectrum (already in the permuted layout, so no bit reversal), runs the inverse transform and the
postgate, and writes the row: u, the gates and y each cross memory once. The DFT matrices and
twiddles are kernel inputs (constants of the plan), and the math is `monarch.forward` /
`inverse_real`, the same code the XLA path runs, so the kernel has a jnp twin by construction.

Backward: one program handles `block_b` batch rows of `block_h` heads (vjp.py has the formulas):
it recomputes DFT(x) and z, writes du, dpregate, dpostgate, and accumulates its rows' share of the
filter-spectrum cotangent sum_B DFT(dz) conj(DFT(x)) on chip. Each program writes its own partial
block [1, block_h, spectrum] (no two programs write the same block: no atomics); XLA adds the
B / block_b partials afterwards. block_b trades parallelism (the grid is B / block_b x H / block_h
programs) against the partials' memory (B / block_b spectra per head); block_b = B is one program
per head block looping over the whole batch.
"""

import dataclasses
import functools
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import arguments, partitioning, platform
from pallas_kernels.fft_conv import monarch

__all__ = ["BlockSizes", "Residuals", "spectral_conv", "spectral_conv_bwd"]


@arguments.validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockSizes:
    """The kernels' tiling and arithmetic (the XLA path ignores all of it).

    Attributes:
        block_h: Heads per program (the largest power of two dividing H and <= this is used).
        block_b: Batch rows per backward program, whose spectrum cotangents it sums on chip (the
            largest power of two dividing B and <= this is used).
        num_warps: Triton warps per program (GPU only).
        num_stages: Triton pipelining stages (GPU only).
        max_radix: The decomposition's `monarch.monarch_factors(N, max_radix)`: 32 is
            FlashFFTConv's plan (order 3 from N = 4096); 64, 128, 256 keep order 2 longer with
            larger matmuls (128: up to N = 16384 = 128 x 128).
        heads_per_dot: Heads stacked into each matmul (the largest power of two dividing block_h
            and <= this): 1 transforms one head at a time ([N_0, N_0] x [N_0, N_1] dots at
            order 2); m > 1 transforms m heads together, so the last-axis dots get m times the
            rows ([m N_0, N_1] x [N_1, N_1]) and the first-axis ones m times the columns, at the
            cost of moving the head axis inside the tile (a 3-D transpose) around them.
        dot: The matmuls' arithmetic (`monarch.DOT_PRECISIONS`; f32 accumulation always): "f32"
            (exact f32, no tensor cores on GPU), "tf32x3" (about f32 accuracy on tensor cores),
            "tf32", "bf16x3", "bf16" (the paper runs its DFT matmuls in 16-bit). The tf32 kinds
            need a GPU: XLA:CPU has no TF32, so interpret mode rejects them.
    """

    block_h: int = 16
    block_b: int = 8
    num_warps: int = 4
    num_stages: int = 1
    max_radix: int = 32
    heads_per_dot: int = 1
    dot: str = "f32"

    def __post_init__(self):
        ints = ("block_h", "block_b", "num_warps", "num_stages", "max_radix", "heads_per_dot")
        arguments.normalize_int_fields(self, ints)
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BlockSizes.{name} must be a positive int, got {value!r}")
        if self.max_radix not in monarch.MAX_RADICES:
            raise ValueError(
                f"BlockSizes.max_radix must be one of {', '.join(map(str, monarch.MAX_RADICES))}, "
                f"got {self.max_radix!r}"
            )
        arguments.check_choice("BlockSizes", "dot", self.dot, monarch.DOT_PRECISIONS)

    @classmethod
    def parse(cls, spec: str) -> "BlockSizes":
        """From a spec like "h16b8w4s1r128m4-tf32x3": any subset of the letters h (block_h),
        b (block_b), w (num_warps), s (num_stages), r (max_radix), m (heads_per_dot), each
        followed by a positive int, then optionally "-" and a `dot` kind; the rest default.

        Used by the benchmark's tuning rows (`pallas:h4b8w8`, `pallas:r128-bf16`).
        """
        fields = {
            "h": "block_h", "b": "block_b", "w": "num_warps", "s": "num_stages", "r": "max_radix",
            "m": "heads_per_dot",
        }  # fmt: skip
        sizes, dash, dot = spec.partition("-")
        parts = re.findall(r"([a-z])(\d+)", sizes)
        if (
            (not parts and not dot)
            or (dash and not dot)
            or "".join(f"{k}{v}" for k, v in parts) != sizes
        ):
            raise ValueError(
                f"block sizes spec {spec!r}: expected letters h (block_h), b (block_b), "
                "w (num_warps), s (num_stages), r (max_radix), m (heads_per_dot) each followed "
                "by a positive int, then optionally -<dot>, e.g. 'h4b8w8' or 'r128m4-tf32x3'"
            )
        unknown = sorted({k for k, _ in parts} - set(fields))
        if unknown:
            raise ValueError(
                f"block sizes spec {spec!r}: unknown letters {unknown}; use h, b, w, s, r, m"
            )
        letters = [k for k, _ in parts]
        repeated = sorted({k for k in letters if letters.count(k) > 1})
        if repeated:
            raise ValueError(f"block sizes spec {spec!r}: letters {repeated} given more than once")
        return cls(**{fields[k]: int(v) for k, v in parts}, **({"dot": dot} if dot else {}))


# TPU: the most signal elements a program may hold, block_h * N forward and block_b * block_h * N
# backward, for the kernels to fit the default 16 MiB scoped VMEM (f32 gated, H = 768: compiled
# by `python -m pallas_kernels.aot` for v5e; e.g. N = 32K backward needed 17 MiB at 4 heads x 4
# rows and fit at 4 x 1). With the GPU plans (radix 16-32) the 16-head backward did not fit from
# N = 4096 on, nor any backward at 32K: their [.., 32] minor dims fill a quarter of each 128-lane
# vreg, so every tile takes four times its size.
_TPU_PROGRAM_ELEMENTS = 2**17


def default_block_sizes(fft_size: int) -> BlockSizes:
    """What `fft_conv(block_sizes=None)` uses: `BlockSizes()` on GPU and in interpret mode; on
    TPU (`platform.current()`), radices up to 256 (order 2 at every kernel size: the 128-wide
    MXU gets [.., 64-256] operands, and the vregs full lanes from N = 8K), block_h * N <= 2^17
    and block_b * block_h * N <= 2^17."""
    if platform.current() != "tpu":
        return BlockSizes()
    block_h = max(1, min(16, _TPU_PROGRAM_ELEMENTS // fft_size))
    block_b = max(1, min(8, _TPU_PROGRAM_ELEMENTS // (block_h * fft_size)))
    return BlockSizes(max_radix=256, block_h=block_h, block_b=block_b)


def _check_supported(block_sizes: BlockSizes, plan: monarch.MonarchPlan, interpret: bool) -> None:
    """Refuse the kernel options that cannot run here or were measured wrong."""
    if interpret and block_sizes.dot.startswith("tf32"):
        raise ValueError(
            f"BlockSizes.dot={block_sizes.dot!r} needs a GPU (XLA:CPU has no TF32); in interpret "
            "mode use 'f32', 'bf16x3' or 'bf16'"
        )
    # Compiled for GPU, bf16 dots in an order-3 plan (16 x 16 x 16) gave wrong results (relative
    # error 1.0 on an H200; right with tf32/f32 dots, right in interpret mode, right in order-2
    # plans): refused until `python -m pallas_kernels.fft_conv.diagnose` locates the fault
    # (README, Kernels).
    if (
        not interpret
        and platform.current() == "gpu"
        and block_sizes.dot in ("bf16", "bf16x3")
        and (len(plan.factors) > 2 or min(plan.factors) < 32)
    ):
        raise ValueError(
            f"BlockSizes.dot={block_sizes.dot!r} with the plan {plan.factors} (N = "
            f"{math.prod(plan.factors)}, max_radix={block_sizes.max_radix}): bf16 dots were "
            "right on GPU only in order-2 plans with radices >= 32 (16 x 16 x 16 gave wrong "
            "results on an H200); use such a plan (e.g. 'r128-bf16' for N = 1024-16384) or dot "
            "'tf32' / 'tf32x3' / 'f32'"
        )


def _pow2_divisor(n: int, at_most: int) -> int:
    """The largest power of two dividing n and <= at_most."""
    return math.gcd(n, arguments.next_pow2(at_most + 1) // 2)


def _head_groups(block_h: int, heads_per_dot: int):
    """(number of head groups, index of group g): a scalar head for 1 (the [rows, ...] tile of
    one head), else a slice of `group` heads (a [group, rows, ...] tile)."""
    group = _pow2_divisor(block_h, heads_per_dot)
    if group == 1:
        return block_h, lambda g: g
    return block_h // group, lambda g: pl.ds(pl.multiple_of(g * group, group), group)


def _compiler_params(block_sizes: BlockSizes, interpret: bool):
    return platform.compiler_params(
        num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages, interpret=interpret
    )


def _kernel(*refs, treedef, num_mats, has_pre, has_post, save, block_h, heads_per_dot, dot):
    refs = list(refs)
    u_ref = refs.pop(0)
    pre_ref = refs.pop(0) if has_pre else None
    post_ref = refs.pop(0) if has_post else None
    sr_ref, si_ref = refs.pop(0), refs.pop(0)
    mats = jax.tree.unflatten(treedef, [r[...] for r in refs[:num_mats]])
    refs = refs[num_mats:]
    o_ref = refs.pop(0)
    # The backward's residuals (`save`): the pre-gate output z (gated only) and DFT(x)'s planes.
    z_ref = refs.pop(0) if save and has_post else None
    xr_ref, xi_ref = refs if save else (None, None)

    num_groups, heads = _head_groups(block_h, heads_per_dot)

    def body(g, carry):
        h = heads(g)
        x = u_ref[0, h].astype(jnp.float32)  # [(group,) rows_in, N_1, ...]
        if pre_ref is not None:
            x = x * pre_ref[0, h].astype(jnp.float32)
        x_f = monarch.forward(x, mats, two_d=True, dot=dot)  # [N_0, N_1, ..., kept]
        if xr_ref is not None:
            xr_ref[0, h], xi_ref[0, h] = x_f
        z = monarch.cmul(x_f, (sr_ref[h], si_ref[h]))
        z = monarch.inverse_real(z, mats, two_d=True, dot=dot)
        if z_ref is not None:
            z_ref[0, h] = z.astype(z_ref.dtype)
        if post_ref is not None:
            z = z * post_ref[0, h].astype(jnp.float32)  # [(group,) rows_out, N_1, ...]
        o_ref[0, h] = z.astype(o_ref.dtype)
        return carry

    lax.fori_loop(0, num_groups, body, 0)


def residual_z_dtype(u_dtype) -> jnp.dtype:
    """The dtype z is saved in: u's, except float32 for float16 u (z may exceed f16's 65504 where
    y = postgate * z and dpostgate = dy * z do not; bf16 has f32's range)."""
    return jnp.dtype(jnp.float32) if jnp.dtype(u_dtype) == jnp.float16 else jnp.dtype(u_dtype)


class Residuals(NamedTuple):
    """What the forward may save for the backward (`fft_conv(save_residuals=True)`), so that the
    backward skips the transforms that recompute them.

    Attributes:
        z: Re(IDFT(X S))[..., :L] before the postgate, [B, H, L] in `residual_z_dtype` (u's
            dtype, f32 for f16); None ungated.
        spectrum: X = DFT(pregate * u), planes [B, H, *plan.spectrum_shape] in f32 (the kernels'
            permuted layout, kept frequencies only).
    """

    z: jax.Array | None
    spectrum: monarch.Planes


def spectral_conv(
    u: jax.Array,
    spectrum: monarch.Planes,
    pregate: jax.Array | None,
    postgate: jax.Array | None,
    *,
    plan: monarch.MonarchPlan,
    length: int,
    block_sizes: BlockSizes,
    interpret: bool,
    out_dtype: jnp.dtype,
    save: bool = False,
) -> jax.Array | tuple[jax.Array, Residuals]:
    """postgate * Re(IDFT(DFT(pregate * u) * spectrum))[..., :length], one pallas_call a shard.

    Under a sharded jit each device convolves its own batch rows and heads (`_rule`); L and the
    spectrum's axes are kept whole.

    Args:
        u: [B, H, L].
        spectrum: Planes [H, *plan.spectrum_shape] in the permuted layout.
        pregate: [B, H, L] or None.
        postgate: [B, H, L] or None.
        plan: The transform plan (rows are rounded up to powers of two here, for Triton).
        length: L.
        block_sizes: Tiling.
        interpret: Run with `interpret=True` (CPU).
        out_dtype: dtype of the result.
        save: Also return the backward's residuals (`Residuals`).

    Returns:
        [B, H, length] in out_dtype; with `save`, (that, its `Residuals`).
    """
    _check_supported(block_sizes, plan, interpret)
    plan = dataclasses.replace(
        plan, rows_in=arguments.next_pow2(plan.rows_in), rows_out=arguments.next_pow2(plan.rows_out)
    )
    shard = functools.partial(
        _spectral_conv_call,
        plan=plan,
        length=length,
        block_sizes=block_sizes,
        interpret=interpret,
        out_dtype=out_dtype,
        save=save,
    )
    outs = _per_shard(shard, (u,), spectrum, pregate, postgate, plan, backward=False, save=save)
    if not save:
        return outs
    y, *z, xr, xi = outs
    return y, Residuals(z=z[0] if z else None, spectrum=(xr, xi))


def _per_shard(shard, rows, spectrum, pregate, postgate, plan, *, backward: bool, save, saved=None):
    """`shard(*rows, spectrum, pregate, postgate, saved, mats=...)` run per shard under `_rule`.

    The operands go in flat: the row arrays, the spectrum planes, the gates present, the saved
    residuals (a backward's `Residuals`, or None) and the plan's DFT matrices (operands, not
    constants: a partitioned function may not capture any). `save`: the forward returns its
    residuals too, or the backward takes them.
    """
    gates = [g for g in (pregate, postgate) if g is not None]
    has = (pregate is not None, postgate is not None)
    saved_flat, saved_treedef = jax.tree.flatten(saved)
    flat, treedef = jax.tree.flatten(monarch.monarch_matrices(plan))
    n = len(rows)
    begin = n + 2 + len(gates)

    def call(*args):
        pregate, postgate = _gates(has, args[n + 2 : begin])
        saved = jax.tree.unflatten(saved_treedef, args[begin : begin + len(saved_flat)])
        mats = jax.tree.unflatten(treedef, args[begin + len(saved_flat) :])
        return shard(*args[:n], tuple(args[n : n + 2]), pregate, postgate, saved, mats=mats)

    rule = _rule(
        spectrum[0].ndim,
        rows_in=n,
        gates=len(gates),
        matrices=flat,
        backward=backward,
        save=save,
        saved_z=postgate is not None,
    )
    return partitioning.partitioned(call, rule)(*rows, *spectrum, *gates, *saved_flat, *flat)


def _rule(
    spectrum_rank: int,
    *,
    rows_in: int,
    gates: int,
    matrices,
    backward: bool,
    save: bool,
    saved_z: bool,
) -> partitioning.Rule:
    """The kernels' operands and results as factors: the batch rows b and the heads h may be
    split over mesh axes; a row's length l, the spectrum's axes and the DFT matrices stay whole.
    The backward's spectrum cotangent [H, ...] lacks b: its shards' sums are all-reduced. The
    residuals (`save`: the forward's extra results, the backward's extra operands) are z, a row
    (when gated: `saved_z`), and X's planes, one spectrum per row. `rows_in`: the leading row
    operands (u; the backward's u and dy, or dy alone when u is not needed)."""
    row = "b h l"
    axes = [f"s{i}" for i in range(spectrum_rank - 1)]
    spectrum = " ".join(["h", *axes])
    row_spectrum = " ".join(["b", "h", *axes])
    residuals = [*[row] * (save and saved_z), *[row_spectrum] * (2 * save)]
    mats = [" ".join(f"m{i}_{d}" for d in range(m.ndim)) for i, m in enumerate(matrices)]
    inputs = (*[row] * rows_in, spectrum, spectrum, *[row] * gates)
    inputs += (*residuals, *mats) if backward else tuple(mats)
    outputs = (*[row] * (1 + gates), spectrum, spectrum) if backward else (row, *residuals)
    return partitioning.Rule(inputs=inputs, outputs=outputs, split=("b", "h"), batch="b")


def _gates(has: tuple[bool, bool], gates) -> tuple:
    """(pregate, postgate) from the present ones, None for the absent."""
    gates = list(gates)
    return tuple(gates.pop(0) if present else None for present in has)


def _spectral_conv_call(
    u, spectrum, pregate, postgate, saved, *, mats, plan, length, block_sizes, interpret, out_dtype,
    save,
):  # fmt: skip
    """`spectral_conv` on one shard (`plan` with its rows rounded up, `mats` its matrices): y, or
    with `save` (y, z if gated, X's real plane, X's imaginary plane)."""
    del saved  # the forward takes none
    batch, heads, _ = u.shape
    block_h = _pow2_divisor(heads, block_sizes.block_h)
    order = len(plan.factors)
    zeros = (0,) * order
    flat, treedef = jax.tree.flatten(mats)

    def row_spec(shape):
        return pl.BlockSpec((1, block_h, *shape), lambda b, h: (b, h, *zeros))

    data = [monarch.to_digits(u, plan)]  # [B, H, rows_in, N_1, ...]
    specs = [row_spec(plan.in_shape)]
    for gate in (pregate, postgate):
        if gate is not None:
            data.append(monarch.to_digits(gate, plan))
            specs.append(row_spec(plan.in_shape))
    spectrum_spec = pl.BlockSpec((block_h, *plan.spectrum_shape), lambda b, h: (h, *zeros))
    data += list(spectrum)
    specs += [spectrum_spec, spectrum_spec]
    data += flat
    specs += [pl.BlockSpec(a.shape, lambda b, h, n=a.ndim: (0,) * n) for a in flat]
    kernel = lambda *refs: _kernel(  # noqa: E731
        *refs,
        treedef=treedef,
        num_mats=len(flat),
        has_pre=pregate is not None,
        has_post=postgate is not None,
        save=save,
        block_h=block_h,
        heads_per_dot=block_sizes.heads_per_dot,
        dot=block_sizes.dot,
    )
    manual = partitioning.manual_type(u)
    row_out = jax.ShapeDtypeStruct((batch, heads, *plan.out_shape), out_dtype, **manual)
    out_shape, out_specs = [row_out], [row_spec(plan.out_shape)]
    if save:
        if postgate is not None:  # z
            z_dtype = residual_z_dtype(u.dtype)
            out_shape.append(jax.ShapeDtypeStruct(row_out.shape, z_dtype, **manual))
            out_specs.append(row_spec(plan.out_shape))
        planes = jax.ShapeDtypeStruct((batch, heads, *plan.spectrum_shape), jnp.float32, **manual)
        out_shape += [planes, planes]
        out_specs += [row_spec(plan.spectrum_shape)] * 2
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(batch, heads // block_h),
        in_specs=specs,
        out_specs=out_specs,
        compiler_params=_compiler_params(block_sizes, interpret),
        interpret=interpret,
        name="fft_conv_fwd",
    )(*data)
    num_rows = 2 if save and postgate is not None else 1  # y (and z)
    rows = [monarch.from_digits(o, plan, length) for o in outs[:num_rows]]
    return (*rows, *outs[num_rows:]) if save else rows[0]


def _bwd_kernel(
    *refs, treedef, num_mats, has_u, has_pre, has_post, saved, block_b, block_h, heads_per_dot, dot
):
    refs = list(refs)
    u_ref = refs.pop(0) if has_u else None  # not needed with saved residuals and no pregate
    dy_ref = refs.pop(0)
    pre_ref = refs.pop(0) if has_pre else None
    post_ref = refs.pop(0) if has_post else None
    sr_ref, si_ref = refs.pop(0), refs.pop(0)
    # The forward's residuals (`saved`): z (gated only) and X's planes, read instead of recomputed.
    z_ref = refs.pop(0) if saved and has_post else None
    xr_ref, xi_ref = (refs.pop(0), refs.pop(0)) if saved else (None, None)
    mats = jax.tree.unflatten(treedef, [r[...] for r in refs[:num_mats]])
    refs = refs[num_mats:]
    du_ref = refs.pop(0)
    dpre_ref = refs.pop(0) if has_pre else None
    dpost_ref = refs.pop(0) if has_post else None
    dsr_ref, dsi_ref = refs

    num_groups, heads = _head_groups(block_h, heads_per_dot)

    def head(g, carry):
        h = heads(g)
        s = (sr_ref[h], si_ref[h])

        def row(b, acc):
            if u_ref is not None:
                u = u_ref[b, h].astype(jnp.float32)  # [(group,) rows, N_1, ...]
            g = dy_ref[b, h].astype(jnp.float32)
            if xr_ref is None:
                x = u if pre_ref is None else u * pre_ref[b, h].astype(jnp.float32)
                x_f = monarch.forward(x, mats, two_d=True, dot=dot)  # [N_0, ..., kept]
            else:
                x_f = (xr_ref[b, h], xi_ref[b, h])
            if post_ref is not None:
                if z_ref is None:
                    z = monarch.inverse_real(monarch.cmul(x_f, s), mats, two_d=True, dot=dot)
                else:
                    z = z_ref[b, h].astype(jnp.float32)
                dpost_ref[b, h] = (g * z).astype(dpost_ref.dtype)
                g = g * post_ref[b, h].astype(jnp.float32)
            g_f = monarch.forward(g, mats, two_d=True, dot=dot)
            dx = monarch.cmul(g_f, s, conj_b=True)
            dx = monarch.inverse_real(dx, mats, two_d=True, dot=dot)
            if pre_ref is not None:
                dpre_ref[b, h] = (dx * u).astype(dpre_ref.dtype)
                dx = dx * pre_ref[b, h].astype(jnp.float32)
            du_ref[b, h] = dx.astype(du_ref.dtype)
            ds = monarch.cmul(g_f, x_f, conj_b=True)
            return acc[0] + ds[0], acc[1] + ds[1]

        zero = jnp.zeros(s[0].shape, jnp.float32)
        dsr, dsi = lax.fori_loop(0, block_b, row, (zero, zero))
        dsr_ref[0, h] = dsr
        dsi_ref[0, h] = dsi
        return carry

    lax.fori_loop(0, num_groups, head, 0)


def spectral_conv_bwd(
    u: jax.Array | None,
    dy: jax.Array,
    spectrum: monarch.Planes,
    pregate: jax.Array | None,
    postgate: jax.Array | None,
    saved: Residuals | None = None,
    *,
    plan: monarch.MonarchPlan,
    length: int,
    block_sizes: BlockSizes,
    interpret: bool,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None, monarch.Planes]:
    """Cotangents of `spectral_conv` with respect to u, the gates and the spectrum planes.

    One pallas_call a shard (`_rule`); the spectrum cotangent, a sum over the batch rows, is
    all-reduced over the mesh axes that split them.

    Args:
        u: [B, H, L]; None with `saved` and no pregate (the backward then never reads it).
        dy: [B, H, L], the output cotangent (y's dtype, which is u's).
        spectrum: Planes [H, *plan.spectrum_shape].
        pregate: [B, H, L] or None.
        postgate: [B, H, L] or None.
        saved: The forward's `Residuals` (`spectral_conv(save=True)`, the same plan), read
            instead of recomputed; None: recompute them.
        plan: The transform plan (input and output rows equal).
        length: L.
        block_sizes: Tiling.
        interpret: Run with `interpret=True` (CPU).

    Returns:
        du (u's dtype), dpregate, dpostgate (gate dtypes, or None) [B, H, L], and the spectrum
        cotangent planes [H, *plan.spectrum_shape] in f32.
    """
    _check_supported(block_sizes, plan, interpret)
    rows = arguments.next_pow2(max(plan.rows_in, plan.rows_out))
    plan = dataclasses.replace(plan, rows_in=rows, rows_out=rows)

    if u is None and (saved is None or pregate is not None):
        raise ValueError("u: needed unless the residuals are saved and there is no pregate")
    rows = (dy,) if u is None else (u, dy)

    def shard(*args, mats):
        (u, dy), (spectrum, pregate, postgate, saved) = _split_rows(args, len(rows))
        du, d_pre, d_post, d_spectrum = _spectral_conv_bwd_call(
            u,
            dy,
            spectrum,
            pregate,
            postgate,
            saved,
            mats=mats,
            plan=plan,
            length=length,
            block_sizes=block_sizes,
            interpret=interpret,
        )
        return (du, *[d for d in (d_pre, d_post) if d is not None], *d_spectrum)

    outs = _per_shard(
        shard,
        rows,
        spectrum,
        pregate,
        postgate,
        plan,
        backward=True,
        save=saved is not None,
        saved=saved,
    )
    outs = list(outs)
    du = outs.pop(0)
    gates = sum(g is not None for g in (pregate, postgate))
    d_pre, d_post = _gates((pregate is not None, postgate is not None), outs[:gates])
    return du, d_pre, d_post, tuple(outs[gates:])


def _split_rows(args, rows: int):
    """((u or None, dy), the rest) from a backward shard's operands with `rows` row arrays."""
    u, dy = (None, args[0]) if rows == 1 else args[:2]
    return (u, dy), args[rows:]


def _spectral_conv_bwd_call(
    u, dy, spectrum, pregate, postgate, saved, *, mats, plan, length, block_sizes, interpret
):
    """`spectral_conv_bwd` on one shard (`plan` with its rows rounded up, `mats` its matrices)."""
    batch, heads, _ = dy.shape
    block_h = _pow2_divisor(heads, block_sizes.block_h)
    block_b = _pow2_divisor(batch, block_sizes.block_b)
    num_partials = batch // block_b
    order = len(plan.factors)
    zeros = (0,) * order
    flat, treedef = jax.tree.flatten(mats)
    row_spec = pl.BlockSpec((block_b, block_h, *plan.in_shape), lambda b, h: (b, h, *zeros))
    spectrum_spec = pl.BlockSpec((block_h, *plan.spectrum_shape), lambda b, h: (h, *zeros))
    partial_spec = pl.BlockSpec((1, block_h, *plan.spectrum_shape), lambda b, h: (b, h, *zeros))
    gates = [g for g in (pregate, postgate) if g is not None]
    rows = [a for a in (u, dy, *gates) if a is not None]
    data = [monarch.to_digits(a, plan) for a in rows]
    data += [*spectrum]
    specs = [row_spec] * len(rows) + [spectrum_spec] * 2
    if saved is not None:
        if saved.z is not None:
            data.append(monarch.to_digits(saved.z, plan))
            specs.append(row_spec)
        planes_spec = pl.BlockSpec(
            (block_b, block_h, *plan.spectrum_shape), lambda b, h: (b, h, *zeros)
        )
        data += list(saved.spectrum)
        specs += [planes_spec] * 2
    data += flat
    specs += [pl.BlockSpec(a.shape, lambda b, h, n=a.ndim: (0,) * n) for a in flat]
    row_shape = (batch, heads, *plan.in_shape)
    partial_shape = (num_partials, heads, *plan.spectrum_shape)
    manual = partitioning.manual_type(dy)
    du_dtype = dy.dtype if u is None else u.dtype
    out_shape = [jax.ShapeDtypeStruct(row_shape, du_dtype, **manual)]
    out_shape += [jax.ShapeDtypeStruct(row_shape, g.dtype, **manual) for g in gates]
    out_shape += [jax.ShapeDtypeStruct(partial_shape, jnp.float32, **manual)] * 2
    out_specs = [row_spec] * (1 + len(gates)) + [partial_spec] * 2
    kernel = lambda *refs: _bwd_kernel(  # noqa: E731
        *refs,
        treedef=treedef,
        num_mats=len(flat),
        has_u=u is not None,
        has_pre=pregate is not None,
        has_post=postgate is not None,
        saved=saved is not None,
        block_b=block_b,
        block_h=block_h,
        heads_per_dot=block_sizes.heads_per_dot,
        dot=block_sizes.dot,
    )
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(num_partials, heads // block_h),
        in_specs=specs,
        out_specs=out_specs,
        compiler_params=_compiler_params(block_sizes, interpret),
        interpret=interpret,
        name="fft_conv_bwd",
    )(*data)
    outs = list(outs)
    du = monarch.from_digits(outs.pop(0), plan, length)
    d_pre = monarch.from_digits(outs.pop(0), plan, length) if pregate is not None else None
    d_post = monarch.from_digits(outs.pop(0), plan, length) if postgate is not None else None
    # The B / block_b partial spectrum cotangents, added in one fixed order.
    return du, d_pre, d_post, (outs[0].sum(axis=0), outs[1].sum(axis=0))
