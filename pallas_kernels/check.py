"""Correctness of the compiled kernels on this machine's backend, against the jnp references.

The unit tests run the kernels in interpret mode on CPU; this runs them compiled (Triton on GPU,
Mosaic on TPU) at the benchmark shapes, forward and every gradient, and prints the relative error
||out - ref|| / ||ref|| of each against the float32 jnp reference at "highest" matmul precision:

    python -m pallas_kernels.check [--quick] [--fft-variants r128-tf32x3 r128-bf16 ...] [--out PATH]

`--fft-variants` adds fft_conv cases at N = 1024 and 4096 (`--fft-variant-sizes`; 256 with
--quick) with those kernel options (`fft_conv.BlockSizes.parse` specs: larger radices,
tensor-core matmul arithmetic; a "+saved" suffix, e.g. "h4m4w8-bf16+saved", runs it with
`save_residuals=True`). A spec that starts with "-" (the default tiling, e.g. "-bf16") reads
as an option: write it "r32-bf16" (the same plan) or pass a single one as "--fft-variants=-bf16".
A variant the GPU path refuses (bf16 dots outside the plans seen
right) is a failed case with the ValueError's message.

Exit status 1 if any error exceeds its tolerance (float32 inputs 2e-3: Triton's float32 dots may
use TF32; bfloat16/float16 inputs, and 10- or 8-bit-mantissa matmuls ("tf32", "bf16"), 2e-2: the
FlashFFTConv tests' atol 1e-2 on unit-scale outputs), a result is not finite, or the rational
coefficient gradients differ bit for bit between two runs.
On CPU the kernels run in interpret mode (slow: use --quick).
"""

import argparse
import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import arguments
from pallas_kernels._bench import add_result, block_sizes_spec, environment, exit_status
from pallas_kernels.fft_conv import BlockSizes
from pallas_kernels.fft_conv import api as fft_api
from pallas_kernels.fft_conv import reference as fft_reference
from pallas_kernels.fft_conv.bench import split_saved
from pallas_kernels.rational import BlockSizes as RationalBlockSizes
from pallas_kernels.rational import api as rational_api
from pallas_kernels.rational import init_coefficients
from pallas_kernels.rational import reference as rational_reference

__all__ = ["check_fft_conv", "check_rational", "main"]

TOLERANCE = {"float32": 2e-3, "bfloat16": 2e-2, "float16": 2e-2}


def _rel_err(out, ref) -> float:
    out = np.asarray(jnp.asarray(out, jnp.float32), np.float64)
    ref = np.asarray(jnp.asarray(ref, jnp.float32), np.float64)
    if not np.all(np.isfinite(out)):
        return float("inf")
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def _implementation() -> str:
    return "interpret" if jax.default_backend() == "cpu" else "pallas"


def check_fft_conv(
    fft_size: int, *, batch: int, heads: int, dtype: str, gated: bool, block_sizes: str = ""
) -> dict:
    """Causal y, du, dk (and dpregate, dpostgate if gated) of `fft_conv` vs jnp.fft; block_sizes
    is a `BlockSizes.parse` spec ("" for the defaults), "+saved" for `save_residuals=True`."""
    arguments.check_choice("check_fft_conv", "dtype", dtype, TOLERANCE)
    blocks, save = _fft_variant(block_sizes)
    length = fft_size // 2
    rng = np.random.default_rng(fft_size + gated)
    shape = (batch, heads, length)
    u = jnp.asarray(rng.standard_normal(shape), dtype)
    k = jnp.asarray(rng.standard_normal((heads, length)) / np.sqrt(length), jnp.float32)
    gates = [jnp.asarray(rng.standard_normal(shape), dtype) for _ in range(2)] if gated else []
    dy = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def loss(conv, u, k, *gates):
        pre, post = gates if gates else (None, None)
        y = conv(u, k, pregate=pre, postgate=post)
        return jnp.sum(y.astype(jnp.float32) * dy), y

    fast = functools.partial(
        fft_api.fft_conv,
        fft_size=fft_size,
        implementation=_implementation(),
        block_sizes=blocks,
        save_residuals=save,
    )
    ref = functools.partial(fft_reference.fft_conv_reference, fft_size=fft_size)
    argnums = tuple(range(1, 3 + len(gates)))
    grads_of = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True), static_argnums=0)
    (fast_grads, fast_y) = grads_of(fast, u, k, *gates)
    with jax.default_matmul_precision("highest"):
        (ref_grads, ref_y) = grads_of(ref, u, k, *gates)
    names = ("du", "dk", "dpregate", "dpostgate")[: len(argnums)]
    errors = {"y": _rel_err(fast_y, ref_y)}
    errors |= {n: _rel_err(a, b) for n, a, b in zip(names, fast_grads, ref_grads, strict=True)}
    tolerance = TOLERANCE["bfloat16" if blocks.dot in ("tf32", "bf16") else dtype]
    return {
        "op": "fft_conv",
        "fft_size": fft_size,
        "batch": batch,
        "heads": heads,
        "dtype": dtype,
        "gated": gated,
        "block_sizes": block_sizes,
        "rel_err": errors,
        "tolerance": tolerance,
        "ok": all(e <= tolerance for e in errors.values()),
    }


def _fft_variant(spec: str) -> tuple[BlockSizes, bool]:
    """A --fft-variants spec: (its tiling, whether it saves the backward's residuals)."""
    spec, save = split_saved(spec)
    return (BlockSizes.parse(spec) if spec else BlockSizes()), save


def check_rational(
    width: int, *, rows: int, dtype: str, shared: bool, block_sizes: str = ""
) -> dict:
    """F(x), dx, dnumerator, ddenominator of `group_rational` vs the jnp reference, and
    bitwise-identical coefficient gradients over two runs; block_sizes is a
    `rational.BlockSizes.parse` spec ("" for the defaults)."""
    arguments.check_choice("check_rational", "dtype", dtype, TOLERANCE)
    groups = 8
    numerator, denominator = init_coefficients("swish", groups)
    rng = np.random.default_rng(width)
    if not shared:
        numerator = numerator + jnp.asarray(0.01 * rng.standard_normal((groups, 6)), jnp.float32)
    x = jnp.asarray(2 * rng.standard_normal((rows, width)), dtype)
    dy = jnp.asarray(rng.standard_normal((rows, width)), jnp.float32)

    def loss(fn, x, num, den):
        y = fn(x, num, den)
        return jnp.sum(y.astype(jnp.float32) * dy), y

    fast = functools.partial(
        rational_api.group_rational,
        implementation=_implementation(),
        block_sizes=RationalBlockSizes.parse(block_sizes) if block_sizes else None,
    )
    grads_of = jax.jit(jax.grad(loss, argnums=(1, 2, 3), has_aux=True), static_argnums=0)
    fast_grads, fast_y = grads_of(fast, x, numerator, denominator)
    again, _ = grads_of(fast, x, numerator, denominator)
    with jax.default_matmul_precision("highest"):
        ref_grads, ref_y = grads_of(
            rational_reference.group_rational_reference, x, numerator, denominator
        )
    names = ("dx", "dnumerator", "ddenominator")
    errors = {"y": _rel_err(fast_y, ref_y)}
    errors |= {n: _rel_err(a, b) for n, a, b in zip(names, fast_grads, ref_grads, strict=True)}
    bitwise = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(fast_grads[1:], again[1:], strict=True)
    )
    # The coefficient gradients sum rows * width / G terms: allow the f32 rounding of that sum.
    tolerance = TOLERANCE[dtype]
    return {
        "op": "group_rational",
        "rows": rows,
        "width": width,
        "dtype": dtype,
        "shared_numerator": shared,
        "block_sizes": block_sizes,
        "rel_err": errors,
        "bitwise_reproducible": bitwise,
        "tolerance": tolerance,
        "ok": bitwise and all(e <= tolerance for e in errors.values()),
    }


def _cases(
    quick: bool,
    fft_variants: tuple[str, ...] = (),
    rational_variants: tuple[str, ...] = (),
    ops: tuple[str, ...] = ("rational", "fft_conv"),
    fft_variant_sizes: tuple[int, ...] = (1024, 4096),
):
    if quick:
        yield functools.partial(check_fft_conv, 256, batch=1, heads=4, dtype="float32", gated=True)
        yield functools.partial(check_rational, 64, rows=24, dtype="float32", shared=True)
        for spec in fft_variants:
            yield functools.partial(
                check_fft_conv, 256, batch=1, heads=4, dtype="bfloat16", gated=True,
                block_sizes=spec,
            )  # fmt: skip
        for spec in rational_variants:
            yield functools.partial(
                check_rational, 64, rows=27, dtype="float32", shared=False, block_sizes=spec
            )
        return
    # Cheapest compiles first: a time-limited run reports as many cases as it can.
    for width in (192, 768, 3072) if "rational" in ops else ():
        for dtype in ("float32", "bfloat16"):
            yield functools.partial(
                check_rational, width, rows=128 * 197, dtype=dtype, shared=width != 768
            )
    fft = functools.partial(check_fft_conv, batch=2, heads=64)
    if "fft_conv" in ops:
        # The tensor-core variants (the candidates for the GPU default) before the default
        # tiling, whose f32 FMA dots compile for minutes from N = 4K (ptxas, spilling).
        for spec in fft_variants:
            for n in fft_variant_sizes:
                yield functools.partial(fft, n, dtype="bfloat16", gated=True, block_sizes=spec)
        for n in (256, 1024):
            for dtype, gated in (("float32", False), ("bfloat16", True)):
                yield functools.partial(fft, n, dtype=dtype, gated=gated)
    # Each variant with a partial last row tile (128 x 197 + 3 rows) and without (2^15 rows): the
    # tree tiling failed on an H200 at 128 x 197 rows (README: jax 0.11's Triton lowering left
    # the partial tile unmasked).
    for spec in rational_variants if "rational" in ops else ():
        for rows in (128 * 197 + 3, 2**15):
            yield functools.partial(
                check_rational, 768, rows=rows, dtype="float32", shared=False, block_sizes=spec
            )
    if "fft_conv" not in ops:
        return
    for n in (4096, 16_384, 32_768):
        for dtype, gated in (("float32", False), ("bfloat16", True)):
            yield functools.partial(fft, n, dtype=dtype, gated=gated)


def _line(r: dict) -> str:
    what = (
        f"fft_conv N={r['fft_size']:6} {'gated' if r['gated'] else 'plain'}"
        + (f" {r['block_sizes']}" if r["block_sizes"] else "")
        if r["op"] == "fft_conv"
        else f"rational D={r['width']:5} {'shared' if r['shared_numerator'] else 'per-G'}"
        + (f" {r['block_sizes']}" if r.get("block_sizes") else "")
    )
    errors = " ".join(f"{k}={v:.1e}" for k, v in r["rel_err"].items())
    bits = "" if "bitwise_reproducible" not in r else f" bitwise={r['bitwise_reproducible']}"
    return f"{'ok  ' if r['ok'] else 'FAIL'} {what} {r['dtype']:8} {errors}{bits}"


def build_parser() -> argparse.ArgumentParser:
    """The command line (tools/gpu_bench.sh's arguments are parsed by it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="two tiny cases (CPU interpret)")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/check.json")
    )
    parser.add_argument(
        "--fft-variants",
        nargs="*",
        default=(),
        type=block_sizes_spec(_fft_variant),
        help="BlockSizes specs for extra fft_conv cases at --fft-variant-sizes (e.g. r128-bf16; "
        "h4m4w8-bf16+saved with save_residuals=True)",
    )
    parser.add_argument(
        "--fft-variant-sizes",
        type=int,
        nargs="+",
        default=(1024, 4096),
        help="the FFT sizes N of the --fft-variants cases",
    )
    parser.add_argument(
        "--ops",
        nargs="+",
        choices=("rational", "fft_conv"),
        default=("rational", "fft_conv"),
        help="which kernels to check (full run only)",
    )
    parser.add_argument(
        "--rational-variants",
        nargs="*",
        default=(),
        type=block_sizes_spec(RationalBlockSizes.parse),
        help="rational BlockSizes specs for extra group_rational cases at D = 768, f32, 128 x 197 "
        "+ 3 and 2^15 rows (e.g. 256x64l16-loop)",
    )
    return parser


def main(argv=None) -> int:
    """CLI entry point: print one line per case, write JSON, return 1 on any failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = environment()
    print(json.dumps(env), flush=True)
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.fft_variant_sizes:
        if n < 256 or n & (n - 1):
            parser.error(f"--fft-variant-sizes {n}: a power of two >= 256")
    cases = _cases(
        args.quick,
        tuple(args.fft_variants),
        tuple(args.rational_variants),
        tuple(args.ops),
        tuple(args.fft_variant_sizes),
    )
    for case in cases:
        try:
            record = case()
        except Exception as e:  # report every case, even when one fails to compile
            record = {
                "op": case.func.__name__,
                "args": [*case.args, *map(str, case.keywords.items())],
                "ok": False,
                "error": f"{type(e).__name__}: {str(e)[:500]}",
            }
            print(f"FAIL {record['op']} {record['args']}: {record['error']}", flush=True)
        else:
            print(_line(record), flush=True)
        add_result(args.out, env, results, record)
    return exit_status(results, args.out, "ok")


if __name__ == "__main__":
    sys.exit(main())
