"""Where the compiled rational backward goes wrong: its raw outputs against float64, per tile.

`python -m pallas_kernels.check` says whether `group_rational`'s gradients match; on an H200 the
default tiling's did not (README, GPU: dx 4.9e-2, coefficient gradients 1.0 relative error,
different between runs; the cause found since: jax 0.11's Triton lowering left the partial last
row tile unmasked, now masked by the kernels). This tool, which confirms that on a GPU, looks
one level down, at what the backward pallas_call writes
(`kernel.rational_bwd_tiles`: dx [R, D] and each row tile's ten per-column coefficient sums
[T, 8 + 4, D]), against the same quantities in float64 on the CPU, and reports for each tiling
and row count:

- dx: relative error, how many rows are wrong, which row tiles they fall in, and whether they
  are confined to the last (partial) tile;
- the per-tile sums: how many (tile, column block) slots are wrong, how many of those hold exact
  zeros (never written) or non-finite values;
- two runs of the same executable: bitwise equal or not (a race or uninitialized memory);
- the whole backward (kernel + XLA's reduction in one executable) against those raw outputs
  reduced in float64: whether anything outside the kernel corrupts the result.

    python -m pallas_kernels.rational.diagnose                       # GPU suspects, defaults
    python -m pallas_kernels.rational.diagnose --tilings 256x64 256x64l16-loop --rows 25216 32768

On CPU the kernels run in interpret mode (where every case must come out clean: the tests run
that). Exit status 1 if any case is wrong.
"""

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import arguments
from pallas_kernels._bench import add_result, block_sizes_spec, environment, exit_status
from pallas_kernels.rational import kernel, presets, reference

__all__ = ["build_parser", "diagnose", "main"]

# Per element, relative to the largest |value| of the output (f32 arithmetic against f64).
DX_TOL = {"float32": 1e-5, "bfloat16": 2.0**-7}
SUM_TOL = 1e-5  # a tile's sum, relative to the sum of the terms' magnitudes in that slot


def _inputs(rows: int, width: int, groups: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    numerator, denominator = presets.init_coefficients("swish", groups)
    numerator = np.asarray(numerator) + 0.01 * rng.standard_normal((groups, 6))
    x = jnp.asarray(2 * rng.standard_normal((rows, width)), dtype)
    dy = jnp.asarray(rng.standard_normal((rows, width)), dtype)
    return x, dy, jnp.asarray(numerator, jnp.float32), jnp.asarray(denominator, jnp.float32)


def _truth(x, dy, a, b, block_rows: int):
    """dx [R, D], per-tile sums [T, 10, D] and their magnitudes, all float64 on the CPU."""
    cpu = jax.devices("cpu")[0]
    with jax.enable_x64(True), jax.default_device(cpu):
        to64 = lambda v: jnp.asarray(np.asarray(v, np.float64))  # noqa: E731
        xs, gs, a64, b64 = map(to64, (jnp.asarray(x, jnp.float32), dy, a, b))
        rows_a = [a64[i : i + 1] for i in range(reference.NUM_NUMERATOR)]
        rows_b = [b64[j : j + 1] for j in range(reference.NUM_DENOMINATOR)]
        dx, terms = reference.derivative_terms(xs, gs, rows_a, rows_b)
        terms = jnp.stack(terms, axis=1)  # [R, 10, D]
        pad = -terms.shape[0] % block_rows
        tiles = jnp.pad(terms, ((0, pad), (0, 0), (0, 0))).reshape(-1, block_rows, *terms.shape[1:])
        return np.asarray(dx), np.asarray(tiles.sum(axis=1)), np.asarray(jnp.abs(tiles).sum(axis=1))


def _interpret() -> bool:
    return jax.default_backend() == "cpu"


def diagnose(spec: str, rows: int, *, width: int = 192, dtype: str = "float32") -> dict:
    """One tiling at one row count: the record that `main` prints and saves."""
    arguments.check_choice("diagnose", "dtype", dtype, DX_TOL)
    blocks = kernel.BlockSizes.parse(spec)
    x, dy, numerator, denominator = _inputs(rows, width, 8, dtype)
    a, b = kernel.column_coefficients(numerator, denominator, width)
    block_rows, bd = kernel._tiles(rows, width, blocks)
    call = jax.jit(
        lambda *args: kernel.rational_bwd_tiles(*args, block_sizes=blocks, interpret=_interpret())
    )
    first = [np.asarray(v) for v in call(x, dy, a, b)]
    again = [np.asarray(v) for v in call(x, dy, a, b)]
    dx, pa, pb = first
    sums = np.concatenate([pa[:, : reference.NUM_NUMERATOR], pb], axis=1)  # [T, 10, D]
    want_dx, want_sums, magnitude = _truth(x, dy, a, b, block_rows)

    dx = dx.astype(np.float64)
    dx_bad = np.abs(dx - want_dx) > DX_TOL[dtype] * np.abs(want_dx).max() + ~np.isfinite(dx)
    bad_rows = np.flatnonzero(dx_bad.any(axis=1))
    num_tiles = sums.shape[0]
    last_tile_rows = rows - (num_tiles - 1) * block_rows
    # Per (tile, column block) slot of the sums.
    err = np.abs(sums - want_sums) > SUM_TOL * magnitude + 1e-30
    err |= ~np.isfinite(sums)
    slots = lambda v: v.reshape(num_tiles, v.shape[1], -1, bd).transpose(0, 2, 1, 3)  # noqa: E731
    bad_slots = slots(err).any(axis=(2, 3))  # [T, D / bd]
    zero_slots = (slots(sums) == 0).all(axis=(2, 3)) & bad_slots
    nonfinite_slots = (~np.isfinite(slots(sums))).any(axis=(2, 3))
    bitwise = [
        bool(np.array_equal(u, v, equal_nan=True)) for u, v in zip(first, again, strict=True)
    ]
    rel = lambda got, want: float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))  # noqa: E731
    record = {
        "tiling": spec,
        "rows": rows,
        "width": width,
        "dtype": dtype,
        "block_rows": block_rows,
        "block_d": bd,
        "row_tiles": num_tiles,
        "last_tile_rows": last_tile_rows,
        "dx_rel_err": rel(np.nan_to_num(dx), want_dx),
        "dx_bad_rows": len(bad_rows),
        "dx_bad_row_tiles": sorted({int(r) // block_rows for r in bad_rows})[:20],
        "dx_bad_only_in_last_tile": bool(len(bad_rows))
        and bool(bad_rows.min() >= rows - last_tile_rows),
        "sums_rel_err": rel(np.nan_to_num(sums), want_sums),
        "sum_slots": int(bad_slots.size),
        "sum_slots_bad": int(bad_slots.sum()),
        "sum_slots_bad_all_zero": int(zero_slots.sum()),
        "sum_slots_nonfinite": int(nonfinite_slots.sum()),
        "sum_bad_tiles": sorted({int(t) for t in np.flatnonzero(bad_slots.any(axis=1))})[:20],
        "bitwise_rerun": dict(zip(("dx", "sums_a", "sums_b"), bitwise, strict=True)),
    }
    # The whole backward (the pallas_call, then XLA's fixed-order reduction in one executable)
    # against the raw outputs above reduced in float64: if the raw outputs are right and this is
    # wrong, the fault is outside the kernel (buffers, scheduling).
    full = jax.jit(
        lambda x, dy: kernel.rational_bwd(
            x, dy, numerator, denominator, block_sizes=blocks, interpret=_interpret()
        )
    )
    full_dx, full_a, full_b = (np.asarray(v, np.float64) for v in full(x, dy))
    cols = sums.astype(np.float64).sum(axis=0)  # [10, D]
    groups = denominator.shape[0]
    by_group = cols.reshape(10, groups, -1).sum(axis=-1).T  # [G, 10]
    record["whole_backward_vs_raw"] = {
        "dx": rel(full_dx.reshape(dx.shape), dx),
        "sums": rel(np.concatenate([full_a, full_b], axis=1), by_group),
    }
    whole_ok = all(e <= 1e-5 for e in record["whole_backward_vs_raw"].values())
    record["ok"] = not len(bad_rows) and not bad_slots.any() and all(bitwise) and whole_ok
    return record


def _line(r: dict) -> str:
    if "error" in r:
        return f"FAIL {r['tiling']} rows={r['rows']}: {r['error']}"
    where = ""
    if r["dx_bad_rows"]:
        where = (
            " (last tile only)"
            if r["dx_bad_only_in_last_tile"]
            else f" tiles {r['dx_bad_row_tiles']}"
        )
    reruns = ",".join(k for k, v in r["bitwise_rerun"].items() if not v) or "all"
    whole = r["whole_backward_vs_raw"]
    return (
        f"{'ok  ' if r['ok'] else 'FAIL'} {r['tiling']:16} rows={r['rows']:6} {r['dtype']:8} "
        f"tiles={r['row_tiles']}x{r['width'] // r['block_d']} last={r['last_tile_rows']} | "
        f"dx err {r['dx_rel_err']:.1e}, {r['dx_bad_rows']} bad rows{where} | sums err "
        f"{r['sums_rel_err']:.1e}, {r['sum_slots_bad']}/{r['sum_slots']} bad slots "
        f"({r['sum_slots_bad_all_zero']} all zero, {r['sum_slots_nonfinite']} non-finite) | "
        f"rerun {'bitwise' if reruns == 'all' else 'differs: ' + reruns} | whole backward vs "
        f"raw: dx {whole['dx']:.0e}, sums {whole['sums']:.0e}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line (tools/gpu_bench.sh's arguments are parsed by it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.rational.diagnose", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--tilings",
        nargs="+",
        default=("256x64l16-loop", "32x64l32", "256x64"),  # fastest to compile first
        type=block_sizes_spec(kernel.BlockSizes.parse),
        help="kernel.BlockSizes.parse specs",
    )
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=(128 * 197, 2**15),
        help="row counts (128 x 197 = 25216: a partial 256-row tile; 2^15: none)",
    )
    parser.add_argument("--width", type=int, default=192, help="D (8 groups)")
    parser.add_argument("--dtype", choices=tuple(DX_TOL), default="float32")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/rational_diagnose.json")
    )
    return parser


def main(argv=None) -> int:
    """CLI entry point: one line per case, JSON written after each, exit 1 on any wrong case."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.width < 8 or args.width % 8:
        parser.error(f"--width {args.width}: must be a positive multiple of 8 (8 groups)")
    if min(args.rows) < 1:
        parser.error(f"--rows {args.rows}: each must be >= 1")
    env = environment()
    print(json.dumps(env), flush=True)
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.tilings:
        for rows in args.rows:
            try:
                record = diagnose(spec, rows, width=args.width, dtype=args.dtype)
            except Exception as e:  # a tiling that fails to compile is a finding too
                record = {
                    "tiling": spec,
                    "rows": rows,
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}"[:500],
                }
            print(_line(record), flush=True)
            add_result(args.out, env, results, record)
    return exit_status(results, args.out, "clean")


if __name__ == "__main__":
    sys.exit(main())
