"""Which of the kernels' DFT matmuls go wrong on a GPU: each dot alone, against float64.

On an H200 (README, GPU 2026-11-28) every bf16-dot variant of the default N = 4K plan (16 x 16 x
16) came out wrong (relative error 1.0), while the same plan in f32 and order-2 plans with
radices >= 32 in bf16 were right, and interpret mode on the CPU (which spells the bf16 rounding
out) is right: a GPU compilation fault, cause unknown, so `kernel._check_supported` refuses the
bf16 dots outside the checked plans. This tool looks one level down. It runs the one matmul the
kernels do everywhere — `monarch._apply(mat, x, axis, two_d=True, dot=kind)`, contracting one
digit axis of a [n, n], [n, n, n] or heads-stacked [4, n, n] tile with an [n, n] matrix, in the
same 2-D dots, transposes and reshapes — inside a `pallas_call` of its own, and compares it with
float64 numpy on the same inputs (rounded to bfloat16 first for the bf16 kinds, whose
products are then exact and only the f32 accumulation rounds). The table says which
(arithmetic, radix, tile, axis) are wrong; a wrong row isolates the fault to that dot shape.
If every dot is right, the second stage runs whole transforms of a plan (`monarch.forward` then
`inverse_real` of the product with a spectrum: the kernels' arithmetic without their tiling),
by default N = 4K as 16 x 16 x 16 (the failing plan) and 64 x 64 (right on the H200), against
the same transform on the CPU in f32 at the highest precision (einsums, not 2-D dots): a wrong
transform whose dots are all right points at the twiddle products, transposes or reshapes
between the dots.

    python -m pallas_kernels.fft_conv.diagnose                       # all kinds the backend has
    python -m pallas_kernels.fft_conv.diagnose --kinds bf16 --radices 16 32
    python -m pallas_kernels.fft_conv.diagnose --kinds bf16 --plans 16x16x16 64x64 32x32

On CPU the dots run in interpret mode, where every case must come out right (the tests run
that). Exit status 1 if any case is wrong.
"""

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from pallas_kernels import arguments, platform
from pallas_kernels._bench import add_result, environment, exit_status
from pallas_kernels.fft_conv import kernel, monarch

__all__ = ["build_parser", "cases", "diagnose", "diagnose_transform", "main"]

# Error of one dot relative to max |reference|: f32 accumulation of K <= 128 exact (bf16) or
# f32-rounded products is ~1e-6; tf32 rounds its inputs to 10 bits (~1e-3); a fault is O(1).
TOLERANCE = {"f32": 1e-5, "tf32x3": 1e-5, "bf16x3": 1e-4, "bf16": 1e-5, "tf32": 2e-3}
# A whole transform rounds every level's inputs: ~levels x the input rounding (bf16 2^-8,
# tf32 2^-11) relative to the output's largest value; a fault is O(1).
TRANSFORM_TOLERANCE = {"f32": 1e-5, "tf32x3": 1e-5, "bf16x3": 1e-4, "bf16": 3e-2, "tf32": 5e-3}
_GPU_ONLY = ("tf32", "tf32x3")  # XLA:CPU has no TF32


def cases(radices, kinds):
    """(kind, n, tile shape, axis) for every contraction the kernels' plans use."""
    for kind in kinds:
        for n in radices:
            tiles = [((n, n), (0, 1)), ((4, n, n), (1, 2))]  # a head; 4 stacked (heads_per_dot)
            if n <= 32:  # an order-3 head (16^3: the failing N = 4K plan)
                tiles.append(((n, n, n), (0, 1, 2)))
            for tile, axes in tiles:
                for axis in axes:
                    yield kind, n, tile, axis


def _round_bf16(a: np.ndarray) -> np.ndarray:
    return np.asarray(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))


def _reference(mat: np.ndarray, x: np.ndarray, axis: int, kind: str) -> np.ndarray:
    """mat contracted with x's `axis` in float64 (inputs rounded to bf16 for "bf16")."""
    if kind == "bf16":
        mat, x = _round_bf16(mat), _round_bf16(x)
    y = np.tensordot(mat.astype(np.float64), x.astype(np.float64), axes=([1], [axis]))
    return np.moveaxis(y, 0, axis)


def diagnose(kind: str, n: int, tile: tuple[int, ...], axis: int, seed: int = 0) -> dict:
    """One dot in its own pallas_call against float64: the record of one case."""
    arguments.check_choice("diagnose", "kind", kind, TOLERANCE)
    interpret = platform.current() == "cpu"
    rng = np.random.default_rng(seed)
    # A DFT matrix's real plane: the values the kernels multiply by (|entries| <= 1).
    mat = np.cos(2 * np.pi * np.outer(np.arange(n), np.arange(n)) / n).astype(np.float32)
    x = rng.standard_normal(tile).astype(np.float32)

    def body(mat_ref, x_ref, o_ref):
        o_ref[...] = monarch._apply(mat_ref[...], x_ref[...], axis, two_d=True, dot=kind)

    call = pl.pallas_call(
        body,
        out_shape=jax.ShapeDtypeStruct(tile, jnp.float32),
        grid=(1,),
        in_specs=[
            pl.BlockSpec((n, n), lambda i: (0, 0)),
            pl.BlockSpec(tile, lambda i: (0,) * len(tile)),
        ],
        out_specs=pl.BlockSpec(tile, lambda i: (0,) * len(tile)),
        compiler_params=kernel._compiler_params(kernel.BlockSizes(), interpret),
        interpret=interpret,
        name="fft_conv_dot",
    )
    run = jax.jit(call)
    got = np.asarray(run(mat, x), np.float64)
    again = np.asarray(run(mat, x), np.float64)
    want = _reference(mat, x, axis, kind)
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got - want))) / scale if np.all(np.isfinite(got)) else float("inf")
    return {
        "kind": kind,
        "radix": n,
        "tile": list(tile),
        "axis": axis,
        "rel_err": err,
        "tolerance": TOLERANCE[kind],
        "bitwise_rerun": bool(np.array_equal(got, again, equal_nan=True)),
        "ok": bool(err <= TOLERANCE[kind]),
    }


def _plan(factors: tuple[int, ...]) -> monarch.MonarchPlan:
    """A full-length plan: every row of the input and output present."""
    fft_size = int(np.prod(factors))
    return monarch.MonarchPlan(
        fft_size=fft_size, factors=factors, rows_in=factors[0], rows_out=factors[0]
    )


def _transform(x, s_re, s_im, mats, kind: str, two_d: bool = True):
    """Re(IDFT(DFT(x) * spectrum)) in digit layout, and DFT(x)'s planes."""
    dft = monarch.forward(x, mats, two_d=two_d, dot=kind)
    y = monarch.inverse_real(monarch.cmul(dft, (s_re, s_im)), mats, two_d=two_d, dot=kind)
    return y, dft[0], dft[1]


def diagnose_transform(kind: str, factors: tuple[int, ...], seed: int = 0) -> dict:
    """DFT and the convolution's inverse of one plan in one pallas_call against float64."""
    arguments.check_choice("diagnose_transform", "kind", kind, TRANSFORM_TOLERANCE)
    interpret = platform.current() == "cpu"
    plan = _plan(factors)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(plan.in_shape).astype(np.float32)
    spectrum = [
        (rng.standard_normal(plan.spectrum_shape) / plan.fft_size).astype(np.float32)
        for _ in range(2)
    ]
    mats = monarch.monarch_matrices(plan)
    flat, treedef = jax.tree.flatten(mats)

    def body(x_ref, sr_ref, si_ref, *refs):
        m = jax.tree.unflatten(treedef, [r[...] for r in refs[: len(flat)]])
        y_ref, fr_ref, fi_ref = refs[len(flat) :]
        y, fr, fi = _transform(x_ref[...], sr_ref[...], si_ref[...], m, kind)
        y_ref[...], fr_ref[...], fi_ref[...] = y, fr, fi

    def whole(shape):
        zeros = (0,) * len(shape)
        return pl.BlockSpec(shape, lambda i: zeros)

    shapes = (plan.out_shape, plan.spectrum_shape, plan.spectrum_shape)
    call = pl.pallas_call(
        body,
        out_shape=[jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes],
        grid=(1,),
        in_specs=[whole(a.shape) for a in (x, *spectrum, *flat)],
        out_specs=[whole(shape) for shape in shapes],
        compiler_params=kernel._compiler_params(kernel.BlockSizes(), interpret),
        interpret=interpret,
        name="fft_conv_transform",
    )
    run = jax.jit(call)
    got = [np.asarray(a, np.float64) for a in run(x, *spectrum, *flat)]
    again = [np.asarray(a, np.float64) for a in run(x, *spectrum, *flat)]
    # The reference: the same transform on the CPU in f32 at the highest precision, spelled with
    # einsums (not the kernels' 2-D dots); its own error (~1e-7) is far below every tolerance.
    with jax.default_device(jax.devices("cpu")[0]):
        operands = [jnp.asarray(a) for a in (x, *spectrum)]
        want = _transform(*operands, mats, "f32", two_d=False)
        want = [np.asarray(a, np.float64) for a in want]
    errors = {}
    for name, g, w in zip(("y", "dft_re", "dft_im"), got, want, strict=True):
        finite = np.all(np.isfinite(g))
        errors[name] = float(np.max(np.abs(g - w)) / np.max(np.abs(w))) if finite else np.inf
    tolerance = TRANSFORM_TOLERANCE[kind]
    return {
        "kind": kind,
        "plan": "x".join(map(str, factors)),
        "rel_err": errors,
        "tolerance": tolerance,
        "bitwise_rerun": all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(got, again, strict=True)
        ),
        "ok": all(e <= tolerance for e in errors.values()),
    }


def _line(r: dict) -> str:
    if "plan" in r:
        if "error" in r:
            return f"FAIL {r['kind']:6} plan {r['plan']}: {r['error']}"
        errs = ", ".join(f"{k} {v:.1e}" for k, v in r["rel_err"].items())
        return (
            f"{'ok  ' if r['ok'] else 'FAIL'} {r['kind']:6} plan {r['plan']:9} | rel err {errs} "
            f"(tol {r['tolerance']:.0e}) | rerun {'bitwise' if r['bitwise_rerun'] else 'differs'}"
        )
    if "error" in r:
        return (
            f"FAIL {r['kind']:6} n={r['radix']:3} tile={r['tile']} axis={r['axis']}: {r['error']}"
        )
    return (
        f"{'ok  ' if r['ok'] else 'FAIL'} {r['kind']:6} n={r['radix']:3} "
        f"tile={'x'.join(map(str, r['tile'])):9} axis={r['axis']} | rel err {r['rel_err']:.1e} "
        f"(tol {r['tolerance']:.0e}) | rerun {'bitwise' if r['bitwise_rerun'] else 'differs'}"
    )


def _factors(spec: str) -> tuple[int, ...]:
    """An argparse type: "16x16x16" -> (16, 16, 16), each radix a power of two in [2, 256]."""
    try:
        factors = tuple(int(f) for f in spec.split("x"))
    except ValueError:
        factors = ()
    if not factors or any(f < 2 or f > 256 or f & (f - 1) for f in factors):
        raise argparse.ArgumentTypeError(
            f"{spec!r}: radices joined by x, each a power of two in [2, 256] (e.g. 16x16x16)"
        )
    return factors


def build_parser() -> argparse.ArgumentParser:
    """The command line (tools/gpu_bench.sh's arguments are parsed by it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.fft_conv.diagnose", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=tuple(monarch.DOT_PRECISIONS),
        default=None,
        help="dot arithmetics (default: all the backend has; the tf32 kinds need a GPU)",
    )
    parser.add_argument(
        "--radices", nargs="+", type=int, choices=(16, 32, 64, 128), default=(16, 32, 64, 128)
    )
    parser.add_argument(
        "--plans",
        nargs="*",
        type=_factors,
        default=((16, 16, 16), (64, 64)),
        help="whole transforms, radices joined by x (e.g. 16x16x16); default 16x16x16 64x64; "
        "the flag with no value: the dots only",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/fft_conv_diagnose.json")
    )
    return parser


def main(argv=None) -> int:
    """CLI entry point: one line per case, JSON written after each, exit 1 on any wrong case."""
    parser = build_parser()
    args = parser.parse_args(argv)
    kinds = args.kinds or tuple(monarch.DOT_PRECISIONS)
    if platform.current() == "cpu":
        if args.kinds and set(args.kinds) & set(_GPU_ONLY):
            parser.error(f"--kinds {' '.join(_GPU_ONLY)} need a GPU (XLA:CPU has no TF32)")
        kinds = tuple(k for k in kinds if k not in _GPU_ONLY)
    env = environment()
    print(json.dumps(env), flush=True)
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for kind, n, tile, axis in cases(args.radices, kinds):
        try:
            record = diagnose(kind, n, tile, axis)
        except Exception as e:  # a dot that fails to compile is a finding too
            head = {"kind": kind, "radix": n, "tile": list(tile), "axis": axis, "ok": False}
            record = head | {"error": f"{type(e).__name__}: {e}"[:500]}
        print(_line(record), flush=True)
        add_result(args.out, env, results, record)
    for kind in kinds:
        for factors in args.plans:
            try:
                record = diagnose_transform(kind, factors)
            except Exception as e:
                head = {"kind": kind, "plan": "x".join(map(str, factors)), "ok": False}
                record = head | {"error": f"{type(e).__name__}: {e}"[:500]}
            print(_line(record), flush=True)
            add_result(args.out, env, results, record)
    return exit_status(results, args.out, "right")


if __name__ == "__main__":
    sys.exit(main())
