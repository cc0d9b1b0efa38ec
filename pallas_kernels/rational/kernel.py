"""Pallas kernels of the group-rational activation: elementwise forward, atomics-free backward.

FlashKAT: Understanding and Addressing Performance Bottlenecks in the Kolmogorov-Arnold Transformer
(arXiv 2505.13813), §4; KAT (arXiv 2409.10594), §4.

Both kernels tile x viewed as [R, D] (R = all leading axes) into blocks of [block_rows, bd]
(bd = the largest power of two dividing D, at most block_d), with the coefficients expanded to one
column per channel ([8, D] numerator rows, [4, D] |denominator| rows), so a tile never needs to
know where a group starts.

Backward: each program writes dx for its tile and the ten coefficient sums of its tile, per column,
to its own slot of a [num_row_tiles, 8 + 4, D] float32 output; the wrapper then reduces over the
tiles and over each group's columns. No program writes another's slot (no atomics), so the result
is bitwise reproducible. The in-tile sum is an adjacent-pair tree over summation units, and the
sum over tiles continues that tree (zero-padded to a power of two), so the whole row reduction is
one fixed binary tree over units: the same order for every power-of-two block_rows that holds
whole units (same unit and block_d), hence identical bits wherever the per-element terms round
alike (a compiler may fuse each tiling's body differently: in interpret mode XLA:CPU does, and
the terms then differ by a few ulps; README). A unit's own sum: `BlockSizes.reduce="tree"` (a
unit is a leaf of `leaf_rows` rows, reduced over its rows at once, the leaves unrolled); "loop" (a
unit is a chunk of `chunk_rows` rows whose `leaf_rows`-row slices a `fori_loop` adds elementwise
into accumulators, reduced over rows once; 4x faster forward + backward on an H200, and far
quicker to compile). FlashKAT instead sums a tile in registers and issues one atomic add per
coefficient per program (fewer atomics than KAT's one per element, but still an order that varies
run to run).

A partial last row tile (R not a multiple of block_rows) is masked row by row (`_Rows`): on GPU
with explicit Triton load/store masks, since jax 0.11's Triton lowering does not bound block
accesses (the failed H200 check: README, GPU).
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels import arguments, partitioning, platform
from pallas_kernels.rational import reference

__all__ = [
    "BlockSizes",
    "column_coefficients",
    "default_block_sizes",
    "pairwise_sum",
    "rational_bwd",
    "rational_bwd_tiles",
    "rational_fwd",
]

_A_ROWS = 8  # a_0..a_5 padded to a power of two (Triton) and a sublane multiple (TPU)
_B_ROWS = reference.NUM_DENOMINATOR


@arguments.validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockSizes:
    """Kernel tiling (all powers of two).

    Attributes:
        block_rows: Rows of x per program (a multiple of leaf_rows); capped at R rounded up.
        block_d: Most columns per program; the largest power of two dividing D up to this is used
            (on TPU, the full D unless that is a multiple of 128). None: 64 on GPU (Triton holds a
            whole forward tile in registers: 256 x 256 f32 tiles spilled and ran 30x slower on an
            H100), 256 elsewhere.
        leaf_rows: Rows read and differentiated at once: with reduce="tree" a leaf of the
            summation tree, reduced over its rows; with "loop" one step of the loop. Changing it
            changes the summation order of the coefficient gradients; changing block_rows does
            not, as long as a tile holds whole units (below).
        num_warps: Triton warps per program (GPU only).
        num_stages: Triton pipelining stages (GPU only).
        reduce: How the backward sums a tile's rows; in both, units are added by one
            adjacent-pair tree within and across tiles. "tree": a unit is one leaf, reduced over
            its rows at once, the leaves unrolled (the order is the same for every block_rows).
            "loop": a unit is a chunk of chunk_rows rows: a `fori_loop` over its leaves adds
            elementwise into [leaf_rows, bd] accumulators, reduced over rows once at the end
            (one loop body instead of chunk_rows / leaf_rows unrolled ones, ten cross-row
            reductions per chunk instead of ten per leaf; the order is the same for every
            block_rows >= chunk_rows). Both are fixed orders: bitwise reproducible run to run.
        chunk_rows: Rows per loop chunk (reduce="loop" only); a tile smaller than this is one
            chunk (then the order depends on block_rows).
        fwd_rows: Rows the forward computes per step of a loop over its tile; None: the whole
            tile at once. Fewer live values per program (on GPU, a whole [256, 64] tile is 128
            values per thread: 194-255 registers per thread, by `pallas_kernels.registers`).
        prefetch: 1: software-pipeline the loops (the backward's "loop" reduction, the forward's
            fwd_rows steps): each step issues the next step's loads before its own arithmetic,
            so their latency overlaps it; 0: each step loads, then computes. Same arithmetic in
            the same order (the gradients' summation order does not change). No effect where
            there is no loop (reduce="tree" without fwd_rows). Triton does not pipeline these
            loads itself, as far as the `triton` package shows (XLA's own Triton may differ):
            `num_stages` 2 or 3 leaves the PTX without a single `cp.async` (`python -m
            pallas_kernels.registers` counts them).
        unroll: Loop steps (leaves, fwd_rows slices) per iteration of the loops: their loads are
            issued together, then each is computed in turn, so unroll times the bytes are in
            flight at once; capped at the steps a loop has. The same terms added in the same
            order (a compiler may still round a term of the unrolled body differently: XLA:CPU
            does, by a few ulps). Unlike a larger leaf_rows, it does not grow the accumulators (on
            GPU, ten per column a thread holds) or change the summation order.
    """

    block_rows: int = 256
    block_d: int | None = None
    leaf_rows: int = 8
    num_warps: int = 4
    num_stages: int = 1
    reduce: str = "tree"
    chunk_rows: int = 256
    fwd_rows: int | None = None
    prefetch: int = 0
    unroll: int = 1

    @classmethod
    def parse(cls, spec: str) -> "BlockSizes":
        """From a spec like "256x64", "32x64l32w8" or "512x64l16c256f32p1u4-loop": block_rows
        x block_d, then any of l (leaf_rows), w (num_warps), s (num_stages), c (chunk_rows), f
        (fwd_rows), p (prefetch), u (unroll) each followed by an int, then optionally "-tree" or
        "-loop" (`reduce`). Used by the benchmark's tiling rows (`pallas:256x64l16-loop`)."""
        match = re.fullmatch(r"(\d+)x(\d+)((?:[a-z]\d+)*)(?:-([a-z]+))?", spec)
        letters = re.findall(r"([a-z])(\d+)", match[3]) if match else []
        fields = {
            "l": "leaf_rows",
            "w": "num_warps",
            "s": "num_stages",
            "c": "chunk_rows",
            "f": "fwd_rows",
            "p": "prefetch",
            "u": "unroll",
        }
        if match is None or any(k not in fields for k, _ in letters):
            raise ValueError(
                f"block sizes spec {spec!r}: expected <block_rows>x<block_d>, then any of "
                "l (leaf_rows), w (num_warps), s (num_stages), c (chunk_rows), f (fwd_rows), "
                "p (prefetch), u (unroll) each followed by an int, "
                "then optionally -tree or -loop, e.g. '256x64' or '256x64l16w8-loop'"
            )
        extra = {fields[k]: int(v) for k, v in letters}
        if match[4]:
            extra["reduce"] = match[4]
        return cls(block_rows=int(match[1]), block_d=int(match[2]), **extra)

    def __post_init__(self):
        powers = ("block_rows", "block_d", "leaf_rows", "chunk_rows", "fwd_rows", "unroll")
        arguments.normalize_int_fields(self, (*powers, "num_warps", "num_stages", "prefetch"))
        for name in powers:
            value = getattr(self, name)
            if name in ("block_d", "fwd_rows") and value is None:
                continue
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not arguments.is_pow2(value)
            ):
                raise ValueError(f"BlockSizes.{name}={value!r}: must be a power of two")
        for name in ("num_warps", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BlockSizes.{name}={value!r}: must be a positive int")
        arguments.check_choice("BlockSizes", "reduce", self.reduce, ("tree", "loop"))
        if type(self.prefetch) is not int or self.prefetch not in (0, 1):
            raise ValueError(f"BlockSizes.prefetch={self.prefetch!r}: must be 0 or 1")
        for name in ("block_rows", "chunk_rows"):
            if getattr(self, name) < self.leaf_rows:
                raise ValueError(
                    f"BlockSizes.{name}={getattr(self, name)}: must be >= "
                    f"leaf_rows={self.leaf_rows}"
                )


def default_block_sizes() -> BlockSizes:
    """What `group_rational(block_sizes=None)` uses. GPU (`platform.current()`): the loop
    reduction over 16-row leaves in 256-row chunks — on an H200 4.2x faster forward + backward
    than the unrolled tree (bf16, D = 768: 0.199 vs 0.838 ms; README, GPU) and compiled in seconds
    where the tree took minutes. Elsewhere `BlockSizes()` (the tree; what TPU compiles ahead of
    time, `pallas_kernels.aot`)."""
    if platform.current() == "gpu":
        return BlockSizes(leaf_rows=16, reduce="loop")
    return BlockSizes()


def _tiles(rows: int, width: int, block_sizes: BlockSizes) -> tuple[int, int]:
    """(block_rows, bd) used for an [rows, width] input."""
    block_rows = max(block_sizes.leaf_rows, min(block_sizes.block_rows, arguments.next_pow2(rows)))
    block_d = block_sizes.block_d or (64 if platform.current() == "gpu" else 256)
    bd = min(width & -width, block_d)  # largest power of two dividing D
    if platform.current() == "tpu" and bd % 128:
        bd = width  # TPU blocks: last dim a multiple of 128 or the full dim
    return block_rows, bd


def _compiler_params(block_sizes: BlockSizes, interpret: bool):
    return platform.compiler_params(
        num_warps=block_sizes.num_warps, num_stages=block_sizes.num_stages, interpret=interpret
    )


def column_coefficients(numerator: jax.Array, denominator: jax.Array, width: int):
    """Coefficients expanded to one column per channel.

    Args:
        numerator: [1 or G, 6] float32.
        denominator: [G, 4] float32.
        width: D, a multiple of G.

    Returns:
        a [8, D] (rows 0..5: a_0..a_5 of each channel's group, rows 6, 7 zero) and
        |b| [4, D] (|b_1|..|b_4| of each channel's group).
    """
    groups = denominator.shape[0]
    num = jnp.broadcast_to(numerator, (groups, reference.NUM_NUMERATOR))
    a = jnp.repeat(num.T, width // groups, axis=1)  # [6, D]
    a = jnp.pad(a, ((0, _A_ROWS - reference.NUM_NUMERATOR), (0, 0)))  # [8, D]
    b = jnp.repeat(jnp.abs(denominator).T, width // groups, axis=1)  # [4, D]
    return a, b


def _coefficient_rows(a_ref, b_ref):
    a = [a_ref[i : i + 1, :] for i in range(reference.NUM_NUMERATOR)]  # each [1, bd]
    b = [b_ref[j : j + 1, :] for j in range(_B_ROWS)]  # each [1, bd]
    return a, b


class _Rows:
    """Reads and writes of [n, bd] row slices of a row-tiled block, safe in a partial last tile.

    A row tile that runs past R (R not a multiple of block_rows) must neither read nor write the
    rows past R. Interpret mode pads reads (NaN) and drops writes; Mosaic (TPU) pads reads and
    clips writes; jax 0.12's Triton lowering masks both, but jax 0.11's does not (its
    `_compute_offsets_from_indices` computes no bounds mask): there the last tile read and wrote
    past the arrays' ends, into whatever XLA had placed there — the wrong, nondeterministic
    gradients of the H200 check (README, GPU). So on GPU every row access carries an explicit
    mask (`pallas.triton.load/store`: masked lanes are never accessed); elsewhere the padding
    that was read is replaced by zeros. Rows past R are zero inside the kernel either way.
    """

    def __init__(self, rows: int, block_rows: int):
        self.partial = rows % block_rows != 0
        self.rows = rows
        self.first = pl.program_id(0) * block_rows
        self.triton = platform.current() == "gpu"

    def valid(self, start, shape):
        row = self.first + start + lax.broadcasted_iota(jnp.int32, shape, 0)
        return row < self.rows

    def load(self, ref, start, n: int):
        """ref[start : start + n, :] in ref's dtype, rows past R zero."""
        rows_k = pl.ds(start, n)
        shape = (n, ref.shape[1])
        if not self.partial:
            return ref[rows_k, :]
        valid = self.valid(start, shape)
        if self.triton:
            return pltriton.load(ref.at[rows_k, :], mask=valid, other=0)
        return jnp.where(valid, ref[rows_k, :], jnp.zeros((), ref.dtype))

    def store(self, ref, start, value):
        """ref[start : start + n, :] = value, rows past R not written on GPU."""
        rows_k = pl.ds(start, value.shape[0])
        value = value.astype(ref.dtype)
        if self.partial and self.triton:
            pltriton.store(ref.at[rows_k, :], value, mask=self.valid(start, value.shape))
        else:
            ref[rows_k, :] = value


def _aligned(start, multiple: int):
    """`start`, marked a multiple of `multiple` for the compiler. Python ints pass through:
    Triton's lowering of `pl.multiple_of` needs a traced value."""
    return start if isinstance(start, int) else pl.multiple_of(start, multiple)


def _pipelined_fori(count: int, load, step, init, *, prefetch: bool, unroll: int):
    """`carry = step(j, load(j), carry)` for j in range(count), as a `fori_loop`.

    Each iteration takes `unroll` steps (capped at count; both are powers of two, so the cap
    divides count): it issues their loads, then computes them in order. With prefetch, the
    next iteration's loads are issued before this one's arithmetic and carried over, so their
    latency overlaps arithmetic instead of stalling it; the last iteration reloads its own rows
    rather than read past the unit (one extra load per loop, of rows just read); a loop of one
    iteration does not prefetch.
    """
    unroll = min(unroll, count)
    iterations = count // unroll

    def load_group(i):
        return tuple(load(i * unroll + k) for k in range(unroll))

    def step_group(i, group, carry):
        for k, loaded in enumerate(group):
            carry = step(i * unroll + k, loaded, carry)
        return carry

    if not prefetch or iterations == 1:
        return lax.fori_loop(0, iterations, lambda i, c: step_group(i, load_group(i), c), init)

    def body(i, state):
        carry, group = state
        ahead = load_group(jnp.minimum(i + 1, iterations - 1))
        return step_group(i, group, carry), ahead

    return lax.fori_loop(0, iterations, body, (init, load_group(0)))[0]


def _fwd_kernel(x_ref, a_ref, b_ref, o_ref, *, rows, step_rows, prefetch, unroll):
    a, b = _coefficient_rows(a_ref, b_ref)
    block_rows = x_ref.shape[0]
    io = _Rows(rows, block_rows)

    def compute(start, x):
        p, q = reference.rational_terms(x.astype(jnp.float32), a, b)
        io.store(o_ref, start, p / q)

    if step_rows == block_rows:
        compute(0, io.load(x_ref, 0, block_rows))
        return

    # A loop over step_rows-row slices: fewer live registers per program (a whole [256, 64]
    # tile is 128 values per thread).
    def start(j):
        return _aligned(j * step_rows, step_rows)

    def load(j):
        return io.load(x_ref, start(j), step_rows)

    def step(j, x, carry):
        compute(start(j), x)
        return carry

    _pipelined_fori(block_rows // step_rows, load, step, 0, prefetch=prefetch, unroll=unroll)


def rational_fwd(
    x: jax.Array,
    numerator: jax.Array,
    denominator: jax.Array,
    *,
    block_sizes: BlockSizes,
    interpret: bool,
) -> jax.Array:
    """F(x) as one pallas_call per shard (`_FWD_RULE`: rows and channels may be split).

    Args:
        x: [..., D] float32 or bfloat16.
        numerator: [1 or G, 6] float32.
        denominator: [G, 4] float32.
        block_sizes: Tiling.
        interpret: Run with `interpret=True` (CPU).

    Returns:
        F(x) [..., D] in x's dtype.
    """
    a, b = column_coefficients(numerator, denominator, x.shape[-1])
    call = functools.partial(_fwd_call, block_sizes=block_sizes, interpret=interpret)
    return partitioning.partitioned(call, _FWD_RULE)(x, a, b)


# x [..., D] and the per-column coefficients a [8, D], b [4, D]: any leading axis and the channels
# may be split over mesh axes (a channel's coefficients travel with it); the kernels are
# elementwise over both.
_FWD_RULE = partitioning.Rule(inputs=("... d", "i d", "j d"), outputs=("... d",), split=("d",))


def _fwd_call(x, a, b, *, block_sizes: BlockSizes, interpret: bool) -> jax.Array:
    """The forward pallas_call on x [..., D] with `column_coefficients` a, b."""
    width = x.shape[-1]
    x2 = x.reshape(-1, width)  # [R, D]
    rows = x2.shape[0]
    block_rows, bd = _tiles(rows, width, block_sizes)
    tile = pl.BlockSpec((block_rows, bd), lambda i, j: (i, j))
    y = pl.pallas_call(
        functools.partial(
            _fwd_kernel,
            rows=rows,
            step_rows=min(block_sizes.fwd_rows or block_rows, block_rows),
            prefetch=bool(block_sizes.prefetch),
            unroll=block_sizes.unroll,
        ),
        out_shape=jax.ShapeDtypeStruct(x2.shape, x.dtype, **partitioning.manual_type(x)),
        grid=(pl.cdiv(rows, block_rows), width // bd),
        in_specs=[
            tile,
            pl.BlockSpec((_A_ROWS, bd), lambda i, j: (0, j)),
            pl.BlockSpec((_B_ROWS, bd), lambda i, j: (0, j)),
        ],
        out_specs=tile,
        compiler_params=_compiler_params(block_sizes, interpret),
        interpret=interpret,
        name="group_rational_fwd",
    )(x2, a, b)
    return y.reshape(x.shape)


def _bwd_kernel(x_ref, g_ref, a_ref, b_ref, dx_ref, pa_ref, pb_ref, *, rows, blocks):
    a, b = _coefficient_rows(a_ref, b_ref)
    block_rows = x_ref.shape[0]
    io = _Rows(rows, block_rows)
    leaf_rows = blocks.leaf_rows

    def load(start):
        """x and g of the leaf at row `start` ([leaf_rows, bd], rows past R zero: no terms)."""
        return io.load(x_ref, start, leaf_rows), io.load(g_ref, start, leaf_rows)

    def leaf(start, loaded):
        """dx of the leaf at row `start` stored; its ten terms returned ([leaf_rows, bd] each)."""
        x, g = (v.astype(jnp.float32) for v in loaded)
        dx, terms = reference.derivative_terms(x, g, a, b)
        io.store(dx_ref, start, dx)
        return terms

    def row_sums(terms):
        return [jnp.sum(t, axis=0, keepdims=True) for t in terms]  # each [1, bd]

    if blocks.reduce == "tree":
        unit_rows = leaf_rows

        def unit_sums(k: int):
            return row_sums(leaf(k * leaf_rows, load(k * leaf_rows)))

    else:
        unit_rows = min(blocks.chunk_rows, block_rows)
        zeros = tuple(
            jnp.zeros((leaf_rows, x_ref.shape[1]), jnp.float32)
            for _ in range(reference.NUM_NUMERATOR + _B_ROWS)
        )

        def unit_sums(k: int):
            def start(j):
                return _aligned(k * unit_rows + j * leaf_rows, leaf_rows)

            def step(j, loaded, accs):
                terms = leaf(start(j), loaded)
                return tuple(acc + t for acc, t in zip(accs, terms, strict=True))

            count = unit_rows // leaf_rows
            accs = _pipelined_fori(
                count,
                lambda j: load(start(j)),
                step,
                zeros,
                prefetch=bool(blocks.prefetch),
                unroll=blocks.unroll,
            )
            return row_sums(accs)

    def tree(lo: int, hi: int):
        """Units lo..hi-1 summed by the adjacent-pair tree (unrolled: hi - lo is small)."""
        if hi - lo == 1:
            return unit_sums(lo)
        mid = (lo + hi) // 2
        return [u + v for u, v in zip(tree(lo, mid), tree(mid, hi), strict=True)]

    sums = tree(0, block_rows // unit_rows)
    for i in range(reference.NUM_NUMERATOR):
        pa_ref[0, i : i + 1, :] = sums[i]
    pa_ref[0, reference.NUM_NUMERATOR :, :] = jnp.zeros(
        (_A_ROWS - reference.NUM_NUMERATOR, sums[0].shape[1]), jnp.float32
    )
    for j in range(_B_ROWS):
        pb_ref[0, j : j + 1, :] = sums[reference.NUM_NUMERATOR + j]


def pairwise_sum(parts: jax.Array) -> jax.Array:
    """Sum over axis 0 by a fixed adjacent-pair tree (zero-padded to a power of two).

    Written as explicit adds so that no backend's reduction emitter picks the order.
    """
    n = parts.shape[0]
    parts = jnp.pad(parts, ((0, arguments.next_pow2(n) - n),) + ((0, 0),) * (parts.ndim - 1))
    while parts.shape[0] > 1:
        parts = parts[0::2] + parts[1::2]
    return parts[0]


def rational_bwd_tiles(
    x2: jax.Array,
    g2: jax.Array,
    a: jax.Array,
    b: jax.Array,
    *,
    block_sizes: BlockSizes,
    interpret: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The backward pallas_call alone: dx and each row tile's per-column coefficient sums.

    Args:
        x2: [R, D] float32 or bfloat16.
        g2: [R, D] cotangent in x2's dtype.
        a, b: `column_coefficients` ([8, D], [4, D]).
        block_sizes: Tiling.
        interpret: Run with `interpret=True` (CPU).

    Returns:
        dx [R, D] (x2's dtype); sum g x^i / Q per tile and column [T, 8, D] (rows 6, 7 zero) and
        sum -g P |x|^j / Q^2 [T, 4, D], float32, T = ceil(R / block_rows). `diagnose.py` checks
        these raw outputs; `rational_bwd` reduces them.
    """
    rows, width = x2.shape
    block_rows, bd = _tiles(rows, width, block_sizes)
    num_tiles = pl.cdiv(rows, block_rows)
    tile = pl.BlockSpec((block_rows, bd), lambda i, j: (i, j))
    manual = partitioning.manual_type(x2)

    def kernel(*refs):
        _bwd_kernel(*refs, rows=rows, blocks=block_sizes)

    return pl.pallas_call(
        kernel,
        out_shape=[
            jax.ShapeDtypeStruct(x2.shape, x2.dtype, **manual),
            jax.ShapeDtypeStruct((num_tiles, _A_ROWS, width), jnp.float32, **manual),
            jax.ShapeDtypeStruct((num_tiles, _B_ROWS, width), jnp.float32, **manual),
        ],
        grid=(num_tiles, width // bd),
        in_specs=[
            tile,
            tile,
            pl.BlockSpec((_A_ROWS, bd), lambda i, j: (0, j)),
            pl.BlockSpec((_B_ROWS, bd), lambda i, j: (0, j)),
        ],
        out_specs=[
            tile,
            pl.BlockSpec((1, _A_ROWS, bd), lambda i, j: (i, 0, j)),
            pl.BlockSpec((1, _B_ROWS, bd), lambda i, j: (i, 0, j)),
        ],
        compiler_params=_compiler_params(block_sizes, interpret),
        interpret=interpret,
        name="group_rational_bwd",
    )(x2, g2, a, b)


def rational_bwd(
    x: jax.Array,
    dy: jax.Array,
    numerator: jax.Array,
    denominator: jax.Array,
    *,
    block_sizes: BlockSizes,
    interpret: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """dx and the per-group coefficient sums: one pallas_call per shard plus fixed-order sums.

    Under a sharded jit (`_BWD_RULE`) each shard reduces its own rows' tiles and the shards'
    column sums are all-reduced over the mesh axes that split the rows: reproducible run to run
    for one mesh, bit-identical to the unsharded sums only when nothing splits the rows.

    Args:
        x: [..., D] float32 or bfloat16.
        dy: Output cotangent, x's shape.
        numerator: [1 or G, 6] float32.
        denominator: [G, 4] float32.
        block_sizes: Tiling.
        interpret: Run with `interpret=True` (CPU).

    Returns:
        dx (x's shape and dtype); per group, sum g x^i / Q [G, 6] and sum -g P |x|^j / Q^2
        [G, 4] in float32 (the caller applies sign(b_j) and sums a shared numerator over G).
    """
    width = x.shape[-1]
    groups = denominator.shape[0]
    a, b = column_coefficients(numerator, denominator, width)
    call = functools.partial(_bwd_call, block_sizes=block_sizes, interpret=interpret)
    dx, col_a, col_b = partitioning.partitioned(call, _BWD_RULE)(x, dy.astype(x.dtype), a, b)
    col_a = col_a[: reference.NUM_NUMERATOR]  # [6, D]
    sum_a = col_a.reshape(-1, groups, width // groups).sum(axis=-1).T  # [G, 6]
    sum_b = col_b.reshape(-1, groups, width // groups).sum(axis=-1).T  # [G, 4]
    return dx, sum_a, sum_b


# x, dy [..., D]; results dx [..., D] and the column sums [8, D], [4, D], which lack the leading
# axes: summed over them, all-reduced over the mesh axes that split them.
_BWD_RULE = partitioning.Rule(
    inputs=("... d", "... d", "i d", "j d"), outputs=("... d", "i d", "j d"), split=("d",)
)


def _bwd_call(x, dy, a, b, *, block_sizes: BlockSizes, interpret: bool):
    """dx [..., D] and the column sums over all rows [8, D], [4, D] of one shard."""
    width = x.shape[-1]
    dx, pa, pb = rational_bwd_tiles(
        x.reshape(-1, width),
        dy.reshape(-1, width),
        a,
        b,
        block_sizes=block_sizes,
        interpret=interpret,
    )
    return dx.reshape(x.shape), pairwise_sum(pa), pairwise_sum(pb)
