"""Benchmark of group_rational: XLA path (and Pallas, PyTorch on GPU) vs jax.nn.gelu, as JSON.

KAT (arXiv 2409.10594) MLP shapes: B=128, T=197, D in {192, 384, 768} (the MLP input) and 4x that
(the hidden width), G=8; FlashKAT (arXiv 2505.13813) §5 for the GPU comparison.

    python -m pallas_kernels.rational.bench [--quick] [--section auto|cpu|gpu] [--dims 768 ...]
                                            [--dtypes float32 bfloat16] [--out PATH]

Timing and provenance come from `pallas_kernels/_bench.py` (`pallas_kernels` imports nothing of
`efficient`, DESIGN.md).
"""

import argparse
import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import arguments
from pallas_kernels._bench import (
    add_compile_workers_argument,
    environment,
    failed_rows,
    time_fn,
    time_rows,
    time_torch_cuda,
)
from pallas_kernels.rational import BlockSizes, api, init_coefficients, kernel

__all__ = ["Case", "main"]

KAT_DIMS = (192, 384, 768, 768, 1536, 3072)  # KAT-T/S/B input widths, then 4x (hidden)
_BASELINES = ("copy", "gelu", "torch")  # the rows that are not group_rational
_MODES = ("fwd", "fwd_bwd")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One tensor [batch, tokens, width] with `groups` groups."""

    batch: int = 128
    tokens: int = 197
    width: int = 768
    groups: int = 8
    dtype: str = "float32"

    @property
    def elements(self) -> int:
        return self.batch * self.tokens * self.width


def _inputs(case: Case):
    rng = np.random.default_rng(0)
    shape = (case.batch, case.tokens, case.width)
    x = jnp.asarray(rng.standard_normal(shape, np.float32), case.dtype)
    dy = jnp.asarray(rng.standard_normal(shape, np.float32), case.dtype)
    numerator, denominator = init_coefficients("swish", case.groups)
    return x, dy, numerator, denominator


def _input_shapes(case: Case):
    """`_inputs`' shapes and dtypes, for lowering without allocating."""
    x = jax.ShapeDtypeStruct((case.batch, case.tokens, case.width), jnp.dtype(case.dtype))
    numerator, denominator = init_coefficients("swish", case.groups)
    return x, x, numerator, denominator


def _functions(implementation: str):
    """(forward, forward+backward) with the signature (x, dy, numerator, denominator)."""
    if implementation == "gelu":

        def fwd(x, dy, num, den):
            return jax.nn.gelu(x)

        def fwd_bwd(x, dy, num, den):
            y, vjp = jax.vjp(jax.nn.gelu, x)
            return y, vjp(dy)

        return fwd, fwd_bwd
    if implementation == "copy":  # x + 1: one read and one write, the bandwidth yardstick
        return (lambda x, dy, num, den: x + 1), None

    block_sizes = None
    if ":" in implementation:  # e.g. "pallas:256x64l16-loop": a BlockSizes.parse spec
        implementation, tiling = implementation.split(":")
        block_sizes = BlockSizes.parse(tiling)

    def op(x, num, den):
        return api.group_rational(
            x, num, den, implementation=implementation, block_sizes=block_sizes
        )

    def fwd(x, dy, num, den):
        return op(x, num, den)

    def fwd_bwd(x, dy, num, den):
        y, vjp = jax.vjp(op, x, num, den)
        return y, vjp(dy)

    return fwd, fwd_bwd


def _torch_time(case: Case, mode: str, warmup: int, repeats: int) -> dict | None:
    """The same kernel-form rational in PyTorch with autograd on the same GPU, if available."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dtype = getattr(torch, case.dtype)
    shape = (case.batch, case.tokens, case.width)
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn(shape, device="cuda", dtype=dtype)
    num = torch.randn(1, 6, device="cuda", requires_grad=True)
    den = torch.randn(case.groups, 4, device="cuda", requires_grad=True)
    k = case.width // case.groups

    def run():
        xg = x.float().view(-1, case.groups, k)
        a = num.expand(case.groups, 6)[None, :, :, None]  # [1, G, 6, 1]
        p = a[:, :, 5]
        for i in range(4, -1, -1):
            p = p * xg + a[:, :, i]
        ax = xg.abs()
        b = den.abs()[None, :, :, None]
        q = b[:, :, 3]
        for j in range(2, -1, -1):
            q = q * ax + b[:, :, j]
        y = (p / (q * ax + 1.0)).view(shape).to(dtype)
        if mode == "fwd_bwd":
            torch.autograd.grad(y, (x, num, den), dy)
        return y

    return time_torch_cuda(run, warmup=warmup, repeats=repeats)


def _check_implementation(implementation: str, label: str = "implementation=") -> None:
    """Raise a ValueError, `label` and the value first, unless `implementation` names a row this
    bench runs: a baseline, or one of `api.IMPLEMENTATIONS` with an optional ":SPEC" tiling."""
    kind, colon, tiling = (
        implementation.partition(":") if isinstance(implementation, str) else ("", "", "")
    )
    if kind not in api.IMPLEMENTATIONS and (kind not in _BASELINES or colon):
        raise ValueError(
            f"{label}{implementation!r}: one of {', '.join(_BASELINES)}, or one of "
            f"{', '.join(api.IMPLEMENTATIONS)} with an optional :SPEC (BlockSizes.parse)"
        )
    if colon:
        try:
            BlockSizes.parse(tiling)
        except ValueError as e:
            raise ValueError(f"{label}{implementation!r}: {e}") from None


def _timed_fn(implementation: str, mode: str):
    """The JAX function a row times (None: the torch row, or no such mode)."""
    if implementation == "torch":
        return None
    fwd, fwd_bwd = _functions(implementation)
    return fwd if mode == "fwd" else fwd_bwd


def run_case(
    case: Case,
    implementation: str,
    mode: str,
    warmup: int,
    repeats: int,
    compiled: tuple | None = None,
) -> dict:
    """Time one case/implementation/mode ("fwd" or "fwd_bwd") and return its record.

    compiled: (executable, compile seconds) from an `AheadCompiler`; None compiles here.

    Raises:
        ValueError: `implementation` is not a row this bench runs (`--implementations`), or
            `mode` is neither "fwd" nor "fwd_bwd".
    """
    _check_implementation(implementation)
    arguments.check_choice("run_case", "mode", mode, _MODES)
    record = dataclasses.asdict(case) | {"implementation": implementation, "mode": mode}
    kind, _, tiling = implementation.partition(":")
    if kind.rpartition("+")[2] in ("pallas", "interpret"):  # the tiling that ran (defaults
        # resolved for this backend), for the kernels and the mixed "xla+pallas"
        blocks = BlockSizes.parse(tiling) if tiling else kernel.default_block_sizes()
        record["block_sizes"] = dataclasses.asdict(blocks)
    item = jnp.dtype(case.dtype).itemsize
    # Bytes the op must move: fwd reads x, writes y; bwd also reads x, dy and writes dx.
    io = (2 if mode == "fwd" else 5) * case.elements * item
    if implementation == "torch":
        timing = _torch_time(case, mode, warmup, repeats)
        if timing is None:
            return record | {"skipped": "torch with CUDA is not importable"}
    else:
        fn = _timed_fn(implementation, mode)
        if fn is None:
            return record | {"skipped": "forward only"}
        timing = time_fn(fn, *_inputs(case), warmup=warmup, repeats=repeats, compiled=compiled)
    return record | timing | {"gb_per_s": io / timing["median_ms"] / 1e6}


def _print(r: dict) -> None:
    head = f"D={r['width']:5} {r['dtype']:8} {r['implementation']:9} {r['mode']:7}"
    if "skipped" in r:
        print(f"{head} skipped: {r['skipped']}", flush=True)
        return
    print(f"{head} {r['median_ms']:9.3f} ms {r['gb_per_s']:7.1f} GB/s", flush=True)


def _ratios(results: list[dict], baseline: str) -> list[dict]:
    """Per case and mode: time of each implementation / time of the baseline."""
    table: dict[tuple, dict[str, float]] = {}
    for r in results:
        if "median_ms" in r:
            key = (r["batch"], r["tokens"], r["width"], r["dtype"], r["mode"])
            table.setdefault(key, {})[r["implementation"]] = r["median_ms"]
    out = []
    for (batch, tokens, width, dtype, mode), times in table.items():
        if baseline not in times:
            continue
        for impl, ms in times.items():
            if impl != baseline:
                ratio = ms / times[baseline]
                out.append(
                    {
                        "shape": [batch, tokens, width],
                        "dtype": dtype,
                        "mode": mode,
                        "implementation": impl,
                        f"time_over_{baseline}": ratio,
                    }
                )
                print(f"D={width:5} {dtype:8} {mode:7} {impl:9} / {baseline}: {ratio:5.2f}x")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line (tools/gpu_bench.sh's arguments are parsed by it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.rational.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="B=8, two widths, f32, 3 repeats")
    parser.add_argument("--section", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--dims", type=int, nargs="*", default=None, help="widths D to run")
    parser.add_argument("--dtypes", nargs="*", default=None, choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--implementations",
        nargs="*",
        default=None,
        help="subset/order: copy gelu xla pallas xla+pallas torch, or pallas:SPEC / interpret:SPEC "
        "(a BlockSizes.parse tiling, e.g. 256x64l16-loop)",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/rational.json")
    )
    add_compile_workers_argument(parser)
    return parser


def main(argv=None) -> int:
    """CLI entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    section = args.section
    if section == "auto":
        section = "gpu" if jax.default_backend() in ("gpu", "tpu") else "cpu"
    dims = args.dims or ((192, 768) if args.quick else tuple(sorted(set(KAT_DIMS))))
    dtypes = args.dtypes or (("float32",) if args.quick else ("float32", "bfloat16"))
    batch = 8 if args.quick else 128
    repeats = args.repeats or (3 if args.quick else 20)
    warmup = 1 if args.quick else 3
    for implementation in args.implementations or ():
        try:
            _check_implementation(implementation, "--implementations ")
        except ValueError as e:
            parser.error(str(e))
    if args.implementations:
        implementations = tuple(args.implementations)
    elif section == "cpu":
        implementations = ("gelu", "xla")
    else:
        implementations = ("copy", "gelu", "xla", "pallas", "xla+pallas", "torch")
    env = environment()
    print(json.dumps(env))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        (Case(batch=batch, width=width, dtype=dtype), mode, implementation)
        for width in dims
        for dtype in dtypes
        for mode in _MODES
        for implementation in implementations
    ]

    def job(row):
        case, mode, implementation = row
        fn = _timed_fn(implementation, mode)
        return None if fn is None else (fn, _input_shapes(case))

    def header(row):
        case, mode, implementation = row
        return (
            {"section": section}
            | dataclasses.asdict(case)
            | {
                "implementation": implementation,
                "mode": mode,
            }
        )

    def run(row, compiled):
        case, mode, implementation = row
        record = run_case(case, implementation, mode, warmup, repeats, compiled)
        return {"section": section} | record

    results = time_rows(
        rows, job=job, run=run, header=header, show=_print, out=args.out, env=env,
        workers=args.compile_workers,
    )  # fmt: skip
    ratios = _ratios(results, "gelu")
    if section == "gpu":
        ratios += _ratios(results, "xla")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": env, "results": results, "ratios": ratios}, indent=1))
    print(f"wrote {args.out}")
    return failed_rows(results)


if __name__ == "__main__":
    sys.exit(main())
