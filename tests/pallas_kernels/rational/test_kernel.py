"""Interpret-mode Pallas kernels: forward parity, and deterministic coefficient gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.rational import BlockSizes, group_rational, group_rational_reference
from pallas_kernels.rational import kernel as rational_kernel
from tests.pallas_kernels.rational.common import f64, inputs


def _vjp(block_sizes, x, dy, num, den, implementation="interpret"):
    def fn(x, num, den):
        return group_rational(x, num, den, implementation=implementation, block_sizes=block_sizes)

    return jax.jit(lambda x, dy, num, den: jax.vjp(fn, x, num, den)[1](dy))(x, dy, num, den)


def _outputs(block_sizes, x, dy, num, den):
    """y, then the cotangents of x and the coefficients, in interpret mode."""
    y = jax.jit(
        lambda x, num, den: group_rational(
            x, num, den, implementation="interpret", block_sizes=block_sizes
        )
    )(x, num, den)
    return (y, *_vjp(block_sizes, x, dy, num, den))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    ("shape", "blocks"),
    [
        ((2, 20, 24), BlockSizes(block_rows=16, block_d=8)),  # partial last row tile
        ((64, 16), BlockSizes(block_rows=32, block_d=16)),
        ((5, 12), BlockSizes()),  # block_rows capped at R; bd = 4 (largest 2^k dividing 12)
        ((3, 50, 16), BlockSizes(block_rows=64, block_d=16, fwd_rows=16)),  # looped, partial
    ],
)
def test_forward_matches_reference(shape, blocks, dtype):
    x, _, num, den = inputs(0, shape, 4, dtype=dtype)
    got = jax.jit(
        lambda x, n, d: group_rational(x, n, d, implementation="interpret", block_sizes=blocks)
    )(x, num, den)
    want = group_rational_reference(x, num, den)
    assert got.dtype == dtype and got.shape == shape
    # Same f32 formula; compilers may contract differently (FMA): 1e-6 x scale before rounding.
    # bf16: both round an f32 value that differs by ~1e-6 relative: at most one bf16 ulp apart.
    tol = 1e-6 if dtype == jnp.float32 else 2.0**-7
    np.testing.assert_allclose(f64(got), f64(want), rtol=tol, atol=1e-6 * np.max(np.abs(want)))


@pytest.mark.parametrize("reduce", ["tree", "loop"])
def test_coefficient_gradients_bitwise_across_runs(reduce):
    x, dy, num, den = inputs(1, (3, 40, 32), 4, shared=False)
    blocks = BlockSizes(block_rows=32, block_d=16, reduce=reduce)
    first = _vjp(blocks, x, dy, num, den)
    jax.clear_caches()  # recompile: the same program must give the same bits
    for _ in range(2):
        again = _vjp(blocks, x, dy, num, den)
        for u, v in zip(first, again, strict=True):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("shared", [True, False])
def test_coefficient_gradients_across_row_blocks(shared):
    """block_rows 8..64 sum in the same order, but are equal only to ~1 ulp in interpret mode.

    The row reduction is one adjacent-pair tree over 8-row leaves for every power-of-two
    block_rows (test_reduction_tree_independent_of_tiling checks that bitwise). The per-element
    terms are not bitwise equal across tilings on XLA:CPU: the interpret-mode scan body of each
    tiling is a different fusion, and XLA/LLVM rounds the first or last leaf of a tile differently
    (dx itself differs by 1 ulp on 1/(block_rows/8) of the elements; measured). So this compares
    to 1e-6 relative; bitwise identity across tilings is a claim only for backends that compile
    every leaf identically (unverified on GPU/TPU hardware).
    """
    x, dy, num, den = inputs(2, (120, 32), 4, shared=shared)
    results = [_vjp(BlockSizes(block_rows=r, block_d=16), x, dy, num, den) for r in (8, 16, 32, 64)]
    for other in results[1:]:
        for u, v in zip(results[0], other, strict=True):
            np.testing.assert_allclose(f64(u), f64(v), rtol=1e-6, atol=1e-6 * np.abs(f64(v)).max())


def test_shared_numerator_gradient_is_summed_in_a_fixed_order():
    """The shared numerator's gradient adds the G per-group sums by `pairwise_sum`: with an XLA
    sum its order followed the fusions around it, and at these shapes da differed in the last
    bits between tilings whose per-group sums (and dx, db) are bitwise equal."""
    x, dy, num, den = inputs(6, (512, 32), 4, shared=True)
    first, second = (_vjp(BlockSizes.parse(s), x, dy, num, den) for s in ("64x32", "256x32"))
    for u, v in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_reduction_tree_independent_of_tiling():
    """In-tile adjacent tree over m leaves, then pairwise_sum over tiles == one global tree."""
    rng = np.random.default_rng(5)
    leaves = jnp.asarray(rng.standard_normal((23, 3, 16)) * 10.0 ** rng.uniform(-4, 4), jnp.float32)
    whole = np.asarray(rational_kernel.pairwise_sum(leaves))
    for m in (1, 2, 4, 8, 16, 32):
        padded = jnp.pad(leaves, ((0, -leaves.shape[0] % m), (0, 0), (0, 0)))
        tiles = padded.reshape(-1, m, 3, 16)  # [tiles, m, 3, 16]
        tile_sums = jnp.stack([rational_kernel.pairwise_sum(t) for t in tiles])
        np.testing.assert_array_equal(np.asarray(rational_kernel.pairwise_sum(tile_sums)), whole)
    sequential = np.asarray(leaves).cumsum(axis=0, dtype=np.float32)[-1]
    assert np.any(sequential != whole)  # a different order does change the bits here


def test_pairwise_sum_is_adjacent_tree():
    parts = jnp.asarray([1.0, 2.0**-24, 2.0**-24, 2.0**-24, 2.0**-24], jnp.float32)
    # ((1 + e) + (e + e)) + (e + 0): 1 + e rounds to 1, 2e and e survive in the other branches.
    tree = float(rational_kernel.pairwise_sum(parts))
    assert tree == float(np.float32(1.0) + np.float32(2.0**-23) + np.float32(2.0**-24))
    assert tree != 1.0  # a left-to-right sum would lose every e


@pytest.mark.parametrize("leaf_rows", [8, 16])
def test_loop_reduction_matches_tree(leaf_rows):
    """Both row reductions of the backward give the same gradients up to summation order."""
    x, dy, num, den = inputs(3, (200, 32), 4, shared=False)
    tree = _vjp(BlockSizes(block_rows=64, block_d=16, leaf_rows=leaf_rows), x, dy, num, den)
    loop = _vjp(
        BlockSizes(block_rows=64, block_d=16, leaf_rows=leaf_rows, reduce="loop"), x, dy, num, den
    )
    # dx: the same formula, ~1 ulp apart on XLA:CPU (different fusions; see above)
    for u, v in zip(tree, loop, strict=True):
        np.testing.assert_allclose(f64(u), f64(v), rtol=1e-6, atol=1e-6 * np.abs(f64(v)).max())


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    ("shape", "spec", "shared"),
    [
        ((3, 70, 32), "64x16l8c32f16-loop", False),  # partial last tile, 2 chunks, looped fwd
        ((128, 32), "64x16l16f8-loop", True),  # whole tiles, one shared numerator
        ((5, 12), "32x16l8f8-loop", False),  # one partial tile (block_rows capped at 8), bd = 4
    ],
)
def test_prefetch_changes_no_bit(shape, spec, shared, dtype):
    """Prefetching only moves the loads a step earlier: y, dx and the coefficient gradients are
    bitwise those of the same tiling without it."""
    x, dy, num, den = inputs(4, shape, 4, shared=shared, dtype=dtype)
    blocks = BlockSizes.parse(spec)
    ahead = dataclasses.replace(blocks, prefetch=1)
    want = _outputs(blocks, x, dy, num, den)
    for u, v in zip(_outputs(ahead, x, dy, num, den), want, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("spec", ["64x16l8c32f8u2-loop", "64x16l8c64f8u4p1-loop", "32x16l8u8-loop"])
def test_unroll_changes_the_schedule_only(spec):
    """Unrolled loops (several leaves / forward slices loaded per iteration, then computed in
    turn): y, dx and the coefficient gradients of the same tiling without unroll, to a few ulps
    (XLA:CPU compiles the unrolled body differently; the summation order is checked bitwise in
    test_summation_order_independent_of_block_rows). Partial last tile, several chunks."""
    x, dy, num, den = inputs(6, (3, 70, 32), 4, shared=False)
    blocks = BlockSizes.parse(spec)
    want = _outputs(dataclasses.replace(blocks, unroll=1), x, dy, num, den)
    for u, v in zip(_outputs(blocks, x, dy, num, den), want, strict=True):
        np.testing.assert_allclose(f64(u), f64(v), rtol=1e-6, atol=1e-6 * np.abs(f64(v)).max())


@pytest.mark.parametrize(
    "spec",
    [
        "64x16l8c32f16-loop",
        "64x16l8c32f16p1-loop",  # prefetching loops, several steps per chunk
        "64x16l8c32f8u2p1-loop",  # unrolled and prefetching
        "64x16l16c16f64p1-loop",  # loops of one step (leaf = chunk, fwd_rows = block_rows)
        "64x16l8",  # the unrolled tree
    ],
)
def test_kernels_read_nothing_past_their_blocks(no_typecheck, spec):
    """Pallas' TPU interpreter, out-of-bounds reads raising: the last prefetching step rereads its
    own rows instead of the next unit's, which for a tile's last unit lie past its block.
    Whole tiles (a partial one reads padding by design). `no_typecheck`: `interpret` is annotated
    bool, and the interpreter's parameters are what pallas_call takes in its place."""
    x, dy, num, den = inputs(5, (128, 32), 4, shared=False)
    blocks = BlockSizes.parse(spec)
    checked = pltpu.InterpretParams(out_of_bounds_reads="raise")
    kwargs = {"block_sizes": blocks}
    y = rational_kernel.rational_fwd(x, num, den, **kwargs, interpret=checked)
    grads = rational_kernel.rational_bwd(x, dy, num, den, **kwargs, interpret=checked)
    want_y = rational_kernel.rational_fwd(x, num, den, **kwargs, interpret=True)
    want_grads = rational_kernel.rational_bwd(x, dy, num, den, **kwargs, interpret=True)
    for u, v in zip((y, *grads), (want_y, *want_grads), strict=True):
        np.testing.assert_allclose(f64(u), f64(v), rtol=1e-6, atol=1e-6 * np.abs(f64(v)).max())


def _summed_cotangents(monkeypatch, blocks, g):
    """The backward's column sums when every term is the cotangent itself (terms = g): only the
    summation order is left to differ between tilings, so equal bits mean the same order."""

    def passthrough(x, g, a, b):
        return g, [g] * 10

    monkeypatch.setattr(rational_kernel.reference, "derivative_terms", passthrough)
    x = jnp.zeros(g.shape, jnp.float32)
    a, b = jnp.zeros((8, g.shape[1])), jnp.zeros((4, g.shape[1]))
    _, pa, _ = jax.jit(
        lambda x, g: rational_kernel.rational_bwd_tiles(
            x, g, a, b, block_sizes=blocks, interpret=True
        )
    )(x, g)
    return np.asarray(rational_kernel.pairwise_sum(pa)[0])


@pytest.mark.parametrize(
    ("specs", "other"),
    [
        (("8x16l8", "32x16l8", "128x16l8"), "32x16l16"),  # tree: leaves of 8 rows
        (("32x16l8c32-loop", "64x16l8c32-loop", "128x16l8c32-loop"), "64x16l8c64-loop"),
        (("32x16l8c32-loop", "64x16l8c32p1-loop", "128x16l8c32p1-loop"), "64x16l8c64p1-loop"),
        (("32x16l8c32-loop", "64x16l8c32u2-loop", "128x16l8c32u4p1-loop"), "64x16l8c64u8-loop"),
    ],
)
def test_summation_order_independent_of_block_rows(monkeypatch, specs, other):
    """Bitwise-equal column sums for every block_rows holding whole units (a leaf for "tree", a
    chunk of chunk_rows for "loop"), and different bits for a different unit (the check can
    fail)."""
    rng = np.random.default_rng(0)
    g = jnp.asarray(rng.standard_normal((300, 16)) * 10.0 ** rng.uniform(-5, 5, (300, 1)))
    g = g.astype(jnp.float32)

    def sums(spec):
        return _summed_cotangents(monkeypatch, BlockSizes.parse(spec), g)

    first = sums(specs[0])
    for spec in specs[1:]:
        np.testing.assert_array_equal(sums(spec), first, err_msg=spec)
    assert np.any(sums(other) != first)
    np.testing.assert_allclose(first, np.asarray(g, np.float64).sum(axis=0), rtol=1e-5)


def test_block_sizes_fields_take_numpy_ints_and_refuse_other_types():
    with pytest.raises(ValueError, match=r"reduce=\['loop'\]: must be one of"):
        BlockSizes(reduce=["loop"])  # a list: the same error, not a TypeError
    # numpy integers are stored as ints: the same static argument as the int-built tiling
    numpy_built = BlockSizes(block_rows=np.int64(128), leaf_rows=np.int32(16), num_warps=np.int8(8))
    assert numpy_built == BlockSizes(block_rows=128, leaf_rows=16, num_warps=8)
    assert hash(numpy_built) == hash(BlockSizes(block_rows=128, leaf_rows=16, num_warps=8))
    assert type(numpy_built.block_rows) is int
    for bad in (128.0, True, "128"):
        with pytest.raises(ValueError, match="block_rows=.*: must be a power of two"):
            BlockSizes(block_rows=bad)


def test_block_sizes_parse():
    assert BlockSizes.parse("256x64") == BlockSizes(block_rows=256, block_d=64)
    assert BlockSizes.parse("32x128l32w8s2-loop") == BlockSizes(
        block_rows=32, block_d=128, leaf_rows=32, num_warps=8, num_stages=2, reduce="loop"
    )
    for bad in ("256", "256x64q4", "x64", "256x64-"):
        with pytest.raises(ValueError, match="expected <block_rows>x<block_d>"):
            BlockSizes.parse(bad)
    with pytest.raises(ValueError, match=r"reduce='sum': must be one of \['loop', 'tree'\]"):
        BlockSizes.parse("256x64-sum")
    with pytest.raises(ValueError, match="leaf_rows=12: must be a power of two"):
        BlockSizes.parse("256x64l12")
    assert BlockSizes.parse("512x64l16c128f32-loop") == BlockSizes(
        block_rows=512, block_d=64, leaf_rows=16, chunk_rows=128, fwd_rows=32, reduce="loop"
    )
    assert BlockSizes.parse("256x64l16p1-loop") == BlockSizes(
        leaf_rows=16, block_d=64, prefetch=1, reduce="loop"
    )
    with pytest.raises(ValueError, match="prefetch=2: must be 0 or 1"):
        BlockSizes.parse("256x64p2")
    assert BlockSizes.parse("256x64l8u4p1-loop") == BlockSizes(
        block_d=64, unroll=4, prefetch=1, reduce="loop"
    )
    with pytest.raises(ValueError, match="unroll=3: must be a power of two"):
        BlockSizes.parse("256x64u3")


def test_block_sizes_validation():
    with pytest.raises(ValueError, match="block_rows=24: must be a power of two"):
        BlockSizes(block_rows=24)
    with pytest.raises(ValueError, match="block_rows=4: must be >= leaf_rows=8"):
        BlockSizes(block_rows=4)
    with pytest.raises(ValueError, match="chunk_rows=8: must be >= leaf_rows=16"):
        BlockSizes(leaf_rows=16, chunk_rows=8)
    with pytest.raises(ValueError, match="chunk_rows=96: must be a power of two"):
        BlockSizes(chunk_rows=96)
    with pytest.raises(ValueError, match="fwd_rows=24: must be a power of two"):
        BlockSizes(fwd_rows=24)


def test_block_sizes_prefetch_takes_0_or_1_only():
    assert BlockSizes(prefetch=np.int64(1)) == BlockSizes(prefetch=1)
    for bad in (2, -1, True, 1.0, "1"):
        with pytest.raises(ValueError, match=r"prefetch=.*: must be 0 or 1"):
            BlockSizes(prefetch=bad)
