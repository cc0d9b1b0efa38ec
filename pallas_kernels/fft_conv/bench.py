"""Benchmark of fft_conv: Monarch (XLA, Pallas) vs jnp.fft (and torch.fft on GPU), as JSON.

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), Table 1, and the repository's benchmarks/benchmark_flashfftconv.py (its
baseline is torch.fft in fp32).

    python -m pallas_kernels.fft_conv.bench [--quick] [--section auto|cpu|gpu|sparse|all] \
        [--out PATH]
    python -m pallas_kernels.fft_conv.bench --section gpu --sizes 1024 4096 --gated-only \
        --implementations jnp_fft pallas:h16b8w4 pallas:h2b4w8    # a tiling sweep

Implementations: "monarch_xla", "jnp_fft", "torch_fft" (GPU, forward), "pallas" (default
`BlockSizes`) and "pallas:<spec>" (`BlockSizes.parse`: h = heads per program, b = batch rows per
backward program, w = warps, s = stages, ...), or "pallas:<forward spec>/<backward spec>" for
different tilings per pass (`fft_conv(backward_block_sizes=...)`). A "+saved" suffix on a Monarch
row ("pallas:h4m4w8-bf16+saved", "monarch_xla+saved") runs it with `save_residuals=True`.

Timing and provenance come from `pallas_kernels/_bench.py` (`pallas_kernels` imports nothing of
`efficient`, DESIGN.md).
"""

import argparse
import dataclasses
import functools
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
from pallas_kernels.fft_conv import api, kernel, reference, vjp

__all__ = ["Case", "main"]

_MODES = ("fwd", "fwd_bwd")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One timed configuration (L = N/2 causal unless `circular`: L = N, as the paper's bench)."""

    fft_size: int
    batch: int
    heads: int
    dtype: str = "float32"
    gated: bool = False
    circular: bool = False
    kept_frequencies: int | None = None
    partial_taps: int | None = None

    @property
    def length(self) -> int:
        return self.fft_size if self.circular else self.fft_size // 2


def _inputs(case: Case):
    rng = np.random.default_rng(0)
    dtype = jnp.dtype(case.dtype)
    shape = (case.batch, case.heads, case.length)
    u = jnp.asarray(rng.standard_normal(shape) * 0.02, dtype)
    k = jnp.asarray(rng.standard_normal((case.heads, case.length)) * 0.02, jnp.float32)
    gates = [jnp.asarray(rng.standard_normal(shape), dtype) for _ in range(2)]
    return u, k, *(gates if case.gated else (None, None))


def _input_shapes(case: Case):
    """`_inputs`' shapes and dtypes, for lowering without allocating."""
    u = jax.ShapeDtypeStruct((case.batch, case.heads, case.length), jnp.dtype(case.dtype))
    k = jax.ShapeDtypeStruct((case.heads, case.length), jnp.float32)
    return u, k, *((u, u) if case.gated else (None, None))


def _conv(case: Case, implementation: str):
    """y = f(u, k, pregate, postgate) for one implementation of the case."""
    n = case.fft_size
    if implementation == "jnp_fft":
        ref = functools.partial(
            reference.fft_conv_reference,
            fft_size=n,
            partial_taps=case.partial_taps,
            kept_frequencies=case.kept_frequencies,
        )
        return lambda u, k, pregate, postgate: ref(u, k, pregate=pregate, postgate=postgate)
    implementation, save = split_saved(implementation)
    name, _, spec = implementation.partition(":")
    forward, backward = _tilings(spec)
    config = vjp.ConvConfig(
        fft_size=n,
        seq_len=case.length,
        filter_len=case.partial_taps or case.length,
        kept_frequencies=case.kept_frequencies,
        implementation="xla" if name == "monarch_xla" else "pallas",
        block_sizes=forward,
        backward_block_sizes=backward,
        save_residuals=save,
    )

    def conv(u, k, pregate, postgate):
        if case.partial_taps is not None:
            k = k[:, : case.partial_taps]
        return vjp.monarch_conv(config, u, k, pregate, postgate)

    return conv


def split_saved(implementation: str) -> tuple[str, bool]:
    """(the row's implementation or spec, whether it saves the backward's residuals: a "+saved"
    suffix; `pallas_kernels.check` reads its variants so too)."""
    base, plus, flag = implementation.partition("+")
    if plus and flag != "saved":
        raise ValueError(f"{implementation!r}: the only suffix is +saved")
    return base, bool(plus)


def _check_implementation(implementation: str, label: str = "implementation=") -> None:
    """Raise a ValueError, `label` and the value first, unless `implementation` names a row this
    bench runs (module docstring); a bad spec fails here, not after an hour of rows."""
    what = f"{label}{implementation!r}"
    usage = "use monarch_xla[+saved], jnp_fft, torch_fft, pallas[:spec][+saved]"
    if not isinstance(implementation, str):
        raise ValueError(f"{what}: {usage}")
    try:
        base, save = split_saved(implementation)
    except ValueError:
        raise ValueError(f"{what}: the only suffix is +saved") from None
    name, _, spec = base.partition(":")
    if (
        name not in ("monarch_xla", "jnp_fft", "torch_fft", "pallas")
        or (spec and name != "pallas")
        or (save and name not in ("monarch_xla", "pallas"))
    ):
        raise ValueError(f"{what}: {usage}")
    if spec:
        try:
            _tilings(spec)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None


def _tilings(spec: str) -> tuple[kernel.BlockSizes, kernel.BlockSizes | None]:
    """A "pallas:" row's spec: "" (defaults), "FWD" (both passes) or "FWD/BWD"."""
    forward, slash, backward = spec.partition("/")
    if slash and not backward:
        raise ValueError(f"{spec!r}: expected FORWARD/BACKWARD, e.g. h8m8w8-bf16/h4m4w8-bf16")
    return (
        kernel.BlockSizes.parse(forward) if forward else kernel.BlockSizes(),
        kernel.BlockSizes.parse(backward) if backward else None,
    )


def _fwd_bwd(conv):
    def loss(u, k, pregate, postgate):
        y = conv(u, k, pregate, postgate)
        return jnp.sum(y.astype(jnp.float32) * u.astype(jnp.float32))

    return jax.grad(loss, argnums=(0, 1))


def _torch_time(case: Case, repeats: int, warmup: int) -> dict | None:
    """FlashFFTConv's PyTorch baseline (fp32 complex FFT) on the same GPU, if torch has CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    n, length = case.fft_size, case.length
    dtype = getattr(torch, case.dtype)
    u = torch.randn(case.batch, case.heads, length, device="cuda", dtype=dtype) * 0.02
    k = torch.randn(case.heads, length, device="cuda", dtype=torch.float32) * 0.02
    pre = torch.randn_like(u) if case.gated else None
    post = torch.randn_like(u) if case.gated else None

    def run():
        x = u.float() * pre.float() if pre is not None else u.float()
        y = torch.fft.ifft(torch.fft.fft(x, n=n) * torch.fft.fft(k, n=n), n=n).real[..., :length]
        if post is not None:
            y = y * post.float()
        return y.to(dtype)

    return time_torch_cuda(run, warmup=warmup, repeats=repeats)


def _io_bytes(case: Case) -> int:
    """Bytes the op must move at least: u, gates, y in u's dtype, k in f32."""
    tensors = 4 if case.gated else 2
    item = jnp.dtype(case.dtype).itemsize
    return tensors * case.batch * case.heads * case.length * item + case.heads * case.length * 4


def _skip_reason(case: Case, implementation: str, mode: str) -> str | None:
    if implementation == "torch_fft" and mode != "fwd":
        return "torch baseline is forward only here"
    if implementation.endswith("+saved") and mode == "fwd":
        return "save_residuals changes forward + backward only (the forward row is the same)"
    if implementation.startswith("pallas") and case.fft_size > api._max_pallas_size():
        return f"the kernel supports N <= {api._max_pallas_size()} here"
    return None


def _timed_fn(case: Case, implementation: str, mode: str):
    """The JAX function a row times (None: a torch or skipped row)."""
    if implementation == "torch_fft" or _skip_reason(case, implementation, mode):
        return None
    conv = _conv(case, implementation)
    return conv if mode == "fwd" else _fwd_bwd(conv)


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
        ValueError: `implementation` is not a row this bench runs (module docstring), or `mode`
            is neither "fwd" nor "fwd_bwd".
    """
    _check_implementation(implementation)
    arguments.check_choice("run_case", "mode", mode, _MODES)
    record = dataclasses.asdict(case) | {
        "length": case.length,
        "implementation": implementation,
        "mode": mode,
    }
    if reason := _skip_reason(case, implementation, mode):
        return record | {"skipped": reason}
    if implementation == "torch_fft":
        timing = _torch_time(case, repeats, warmup)
        if timing is None:
            return record | {"skipped": "torch with CUDA is not importable"}
        return record | timing
    fn = _timed_fn(case, implementation, mode)
    record |= time_fn(fn, *_inputs(case), warmup=warmup, repeats=repeats, compiled=compiled)
    record["gb_per_s"] = _io_bytes(case) / record["median_ms"] / 1e6
    return record


def _sections(
    quick: bool, sizes: tuple[int, ...] | None = None, gated: tuple[bool, ...] = (False, True)
) -> dict[str, list[tuple[Case, tuple[str, ...], tuple[str, ...]]]]:
    cpu_sizes = (256, 1024, 4096) if quick else (256, 512, 1024, 2048, 4096, 8192, 16384)
    cpu_sizes = sizes or cpu_sizes
    cpu = [
        (
            Case(fft_size=n, batch=2, heads=64 if n > 1024 or quick else 128),
            ("monarch_xla", "jnp_fft"),
            _MODES,
        )
        for n in cpu_sizes
    ]
    sparse_n = 4096
    sparse = [
        (
            Case(fft_size=sparse_n, batch=2, heads=64, kept_frequencies=p, partial_taps=t),
            ("monarch_xla",),
            ("fwd",),
        )
        for p, t in ((None, None), (2048, None), (1024, None), (512, None), (None, 256))
    ]
    gpu_sizes = (256, 1024, 4096) if quick else (256, 512, 1024, 2048, 4096, 8192, 16384)
    gpu_sizes = sizes or gpu_sizes
    gpu = [
        (
            Case(fft_size=n, batch=64, heads=768, dtype="bfloat16", gated=g, circular=True),
            ("pallas", "monarch_xla", "jnp_fft", "torch_fft"),
            _MODES,
        )
        for n in gpu_sizes
        for g in gated
    ]
    return {"cpu": cpu, "sparse": sparse, "gpu": gpu}


def build_parser() -> argparse.ArgumentParser:
    """The command line (tools/gpu_bench.sh's arguments are parsed by it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.fft_conv.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer sizes (256, 1K, 4K), 5 repeats, 1 warm-up, and on CPU B x H = 2 x 64",
    )
    parser.add_argument(
        "--section",
        choices=("auto", "cpu", "sparse", "gpu", "all"),
        default="auto",
        help="auto: gpu on a GPU, else cpu + sparse",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/fft_conv.json")
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="FFT sizes N to run")
    parser.add_argument(
        "--implementations",
        nargs="*",
        default=None,
        help="replace each section's implementations (e.g. jnp_fft pallas:h4b8w8)",
    )
    parser.add_argument("--gated-only", action="store_true", help="GPU section: gated cases only")
    add_compile_workers_argument(parser)
    return parser


def main(argv=None) -> int:
    """CLI entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for impl in args.implementations or ():
        try:
            _check_implementation(impl, "--implementations ")
        except ValueError as e:
            parser.error(str(e))
    sections = _sections(
        args.quick,
        tuple(args.sizes) if args.sizes else None,
        (True,) if args.gated_only else (False, True),
    )
    if args.implementations:
        sections = {
            name: [(case, tuple(args.implementations), modes) for case, _, modes in rows]
            for name, rows in sections.items()
        }
    if args.section == "auto":
        names = ["gpu"] if jax.default_backend() == "gpu" else ["cpu", "sparse"]
    elif args.section == "all":
        names = list(sections)
    else:
        names = [args.section]
    repeats = args.repeats or (5 if args.quick else 20)
    warmup = 1 if args.quick else 3
    env = environment()
    print(json.dumps(env))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        (name, case, mode, implementation)
        for name in names
        for case, implementations, modes in sections[name]
        for mode in modes
        for implementation in implementations
    ]

    def job(row):
        _, case, mode, implementation = row
        fn = _timed_fn(case, implementation, mode)
        return None if fn is None else (fn, _input_shapes(case))

    def header(row):
        name, case, mode, implementation = row
        return (
            {"section": name}
            | dataclasses.asdict(case)
            | {
                "implementation": implementation,
                "mode": mode,
            }
        )

    def run(row, compiled):
        name, case, mode, implementation = row
        return {"section": name} | run_case(case, implementation, mode, warmup, repeats, compiled)

    results = time_rows(
        rows, job=job, run=run, header=header, show=_print, out=args.out, env=env,
        workers=args.compile_workers,
    )  # fmt: skip
    _print_ratios(results)
    print(f"wrote {args.out}")
    return failed_rows(results)


def _print(r: dict) -> None:
    if "skipped" in r:
        print(
            f"{r['section']:6} N={r['fft_size']:6} {r['implementation']:12} {r['mode']:7} "
            f"skipped: {r['skipped']}",
            flush=True,
        )
        return
    flops = r.get("flops")
    extra = f"  flops={flops:.3g}" if flops else ""
    sparse = ""
    if r["kept_frequencies"] or r["partial_taps"]:
        sparse = f" P={r['kept_frequencies']} taps={r['partial_taps']}"
    print(
        f"{r['section']:6} N={r['fft_size']:6} B={r['batch']} H={r['heads']} "
        f"{'gated' if r['gated'] else 'plain':5} {r['implementation']:12} {r['mode']:7}{sparse} "
        f"{r['median_ms']:9.3f} ms (min {r['min_ms']:.3f}){extra}",
        flush=True,
    )


def _print_ratios(results: list[dict]) -> None:
    """jnp.fft time / other time per N and mode, from medians and minima (> 1: jnp.fft slower)."""
    by_key = {}
    for r in results:
        if "median_ms" in r and r["section"] in ("cpu", "gpu"):
            key = (r["section"], r["fft_size"], r["gated"], r["mode"])
            by_key.setdefault(key, {})[r["implementation"]] = (r["median_ms"], r["min_ms"])
    for (section, n, gated, mode), t in sorted(by_key.items()):
        if "jnp_fft" not in t:
            continue
        (ref_med, ref_min) = t["jnp_fft"]
        parts = [
            f"{impl} {ref_med / med:5.2f}x (min {ref_min / low:5.2f}x)"
            for impl, (med, low) in t.items()
            if impl != "jnp_fft"
        ]
        print(f"{section} N={n:6} {'gated' if gated else 'plain'} {mode:7} jnp.fft / impl: {parts}")


if __name__ == "__main__":
    sys.exit(main())
