"""`python -m experiments.bench NAME [options]`: time models/kernels under one protocol."""

from __future__ import annotations

import argparse
import difflib
import pathlib
import sys
from collections.abc import Sequence

import jax

from efficient.bench import BenchResult, append_jsonl, print_results
from experiments.benches import BENCHES, BenchArgs, BenchSpec, resolve_models

_EPILOG = """\
examples:
  python -m experiments.bench --list
  python -m experiments.bench lowformer                      # the paper's protocol, all models
  python -m experiments.bench lowformer --models b0,deit_tiny --batch 32 --repeats 5
  python -m experiments.bench lowformer --lower-only         # FLOPs/memory only, nothing allocated
  python -m experiments.bench slowfast --text-len 256        # multimodal prefill text length
Unset options take the bench's protocol defaults, which depend on the bench and the platform
(e.g. --warmup 1 --repeats 3 on CPU, 5 and 20 on an accelerator, for the long train steps of
hyena and tim4rec); each run prints the warm-up and timed calls it uses before timing.
Results are appended to runs/bench/NAME.jsonl (one JSON object per measurement).
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description="Time models/kernels (jit, warm-up, block_until_ready, median) and append "
        "the results, with compiled FLOPs and memory, to a JSON-lines file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="bench name (see --list)")
    p.add_argument("--list", action="store_true", help="list the benches and exit")
    p.add_argument("--batch", type=_positive, help="items per call for throughput")
    p.add_argument(
        "--latency-batch", type=_non_negative, help="items per call for latency (0: skip latency)"
    )
    p.add_argument("--repeats", type=_positive, help="timed calls per measurement")
    p.add_argument("--warmup", type=_non_negative, help="untimed calls per measurement")
    p.add_argument("--models", help="comma-separated subset of the bench's models")
    p.add_argument("--image-size", type=_positive, help="square input resolution (image models)")
    p.add_argument(
        "--precision",
        choices=("default", "high", "highest"),
        default="default",
        help="jax.default_matmul_precision (default: the backend's; TF32 on recent NVIDIA GPUs)",
    )
    p.add_argument(
        "--text-len",
        type=_positive,
        help="text tokens after the visual tokens (slowfast's prefill rows; default 128)",
    )
    p.add_argument("--out", type=pathlib.Path, help="results file (default runs/bench/NAME.jsonl)")
    p.add_argument(
        "--lower-only", action="store_true", help="compile only: FLOPs and memory, no timing"
    )
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name (default `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 2 for a bad name or option, 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    if args.list:
        width = max(len(n) for n in BENCHES)
        for name, spec in BENCHES.items():
            print(f"{name:<{width}}  {spec.description}")
        return 0
    if args.name is None:
        return _fail("give a bench NAME or --list")
    spec = BENCHES.get(args.name)
    if spec is None:
        close = difflib.get_close_matches(args.name, list(BENCHES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return _fail(f"unknown bench {args.name!r}{hint} (see --list)")
    models = None
    if args.models:
        try:
            models = resolve_models(spec, [m for m in args.models.split(",") if m.strip()])
        except ValueError as e:
            return _fail(str(e))
    options = BenchArgs(
        batch=args.batch,
        latency_batch=args.latency_batch,
        repeats=args.repeats,
        warmup=args.warmup,
        models=models,
        image_size=args.image_size,
        text_len=args.text_len,
        lower_only=args.lower_only,
        precision=args.precision,
        out=args.out or pathlib.Path("runs/bench") / f"{args.name}.jsonl",
    )
    return _run(args.name, spec, options)


def _run(name: str, spec: BenchSpec, options: BenchArgs) -> int:
    results = []
    try:
        with jax.default_matmul_precision(options.precision):
            for r in spec.run(options):
                append_jsonl([r], options.out)
                results.append(r)
                print(_progress_line(r), flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(results)} result(s) saved to {options.out}", file=sys.stderr)
        return 130
    if not results:
        return _fail("the bench produced no results")
    print()
    print_results(results, title=f"{name}: {len(results)} measurement(s)")
    if spec.report is not None:
        spec.report(results, options)
    print(f"results appended to {options.out}")
    return 0


def _progress_line(r: BenchResult) -> str:
    flops = "-" if r.flops is None else f"{r.flops / 1e9:,.2f} GFLOP"
    if r.lower_only:
        done = (
            f"compiled in {r.compile_s:.1f} s" if r.compile_s else f"lowered in {r.lower_s:.1f} s"
        )
        return f"{r.name}: {done}, {flops} per call (not run)"
    rate = "" if r.items_per_s is None else f", {r.items_per_s:,.1f} items/s"
    return f"{r.name}: median {r.median_ms:,.2f} ms over {r.repeats} calls{rate}, {flops} per call"


if __name__ == "__main__":
    sys.exit(main())
