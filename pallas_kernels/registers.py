"""Registers, spills and shared memory of the GPU kernels, from a machine without a GPU.

A Triton kernel that spills registers to local memory, or that holds so many registers that few
programs fit on an SM, is slow whatever its arithmetic; ptxas says which, at compile time. This
lowers an op's forward and backward for an sm_90 GPU (jax's Pallas-Triton lowering, with a fake
device description, as `pallas_kernels.aot` does for TPU), keeps each kernel's Triton IR,
compiles that IR to PTX with the `triton` package, and runs the ptxas bundled with it:

    pip install triton    # any environment; point --triton-python at it
    python -m pallas_kernels.registers --rational default 256x64 --fft default h8m8w8-bf16 \\
        --fft-sizes 1024 4096 [--triton-python /path/to/python] [--out PATH]

Each row: kernel, warps, registers per thread, spill stores / loads (bytes per thread), stack
frame and shared memory (bytes per program), and the PTX's count of `ld.global` instructions
and of `cp.async` copies (global to shared memory, asynchronous: what Triton emits when it
software-pipelines a loop's loads; 0 means none of the loads is pipelined). An approximation
of what runs: jax hands the same IR to XLA's own copy of Triton, whose version and passes differ
from the `triton` package's; and nothing here is timed. Use it to rank candidate tilings before
a GPU session, not as a result.
"""

import argparse
import contextlib
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import types

import jax
import jax.numpy as jnp

from pallas_kernels import platform
from pallas_kernels._bench import add_result, block_sizes_spec, environment
from pallas_kernels.fft_conv import BlockSizes as FftBlockSizes
from pallas_kernels.fft_conv import api as fft_api
from pallas_kernels.rational import BlockSizes as RationalBlockSizes
from pallas_kernels.rational import api as rational_api
from pallas_kernels.rational import init_coefficients
from pallas_kernels.rational import kernel as rational_kernel

__all__ = ["build_parser", "fake_gpu", "main", "parse_ptxas", "ptx_loads", "triton_modules"]

DEFAULT = "default"  # a spec meaning the op's default tiling on GPU

# Runs in the environment that has `triton`: TTIR file -> PTX -> `ptxas -v`; prints JSON.
_COMPILE = r"""
import json, pathlib, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
path, warps, stages, arch, timeout = sys.argv[1:6]
capability = int("".join(c for c in arch if c.isdigit()))  # sm_90a -> 90
compiled = triton.compile(
    path, target=GPUTarget("cuda", capability, 32),
    options={"num_warps": int(warps), "num_stages": int(stages)},
)
ptx = pathlib.Path(path).with_suffix(".ptx")
ptx.write_text(compiled.asm["ptx"])
ptxas = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
run = subprocess.run(
    [str(ptxas), "-v", "--gpu-name", arch, str(ptx), "-o", "/dev/null"],
    capture_output=True, text=True, timeout=float(timeout),
)
print(json.dumps({"triton": triton.__version__, "shared": compiled.metadata.shared,
                  "ptxas": run.stderr, "returncode": run.returncode}))
"""


@contextlib.contextmanager
def fake_gpu(compute_capability: int = 90):
    """Lower for a CUDA GPU this machine does not have, inside the block: jax's Triton lowering
    asks the local device for its compute capability (answered here), and the kernels trace for
    "gpu" (`platform.compiling_for`). Yields jax's private Triton registration module.

    Raises:
        RuntimeError: jax's private hooks moved (a jax this was not written against).
    """
    try:
        from jax._src.pallas.triton import pallas_call_registration as registration

        saved = registration.gpu_info_lib
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"jax {jax.__version__}: its private Triton hooks moved ({e})") from e
    info = types.SimpleNamespace(compute_capability=compute_capability)
    registration.gpu_info_lib = types.SimpleNamespace(get_gpu_info=lambda: info)
    try:
        with platform.compiling_for("gpu"):
            yield registration
    finally:
        registration.gpu_info_lib = saved


def triton_modules(fn, *args, compute_capability: int = 90) -> list[str]:
    """The Triton IR (text) of every Pallas kernel in `jax.jit(fn)` lowered for a CUDA GPU.

    Args:
        fn: A function whose trace calls the kernels (traced for "gpu": `platform.current()`).
        *args: Arrays or `jax.ShapeDtypeStruct`s.
        compute_capability: The target GPU's (90: H100/H200).

    Returns:
        One module per pallas_call, in lowering order.
    """
    modules = []
    with fake_gpu(compute_capability) as registration:
        lower = registration.lowering.lower_jaxpr_to_triton_module

        def capture(*a, **kw):
            result = lower(*a, **kw)
            modules.append(result.module.operation.get_asm())
            return result

        registration.lowering.lower_jaxpr_to_triton_module = capture
        try:
            jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
        finally:
            registration.lowering.lower_jaxpr_to_triton_module = lower
    return modules


_PTXAS_FIELDS = {
    "stack_frame": r"(\d+) bytes stack frame",
    "spill_stores": r"(\d+) bytes spill stores",
    "spill_loads": r"(\d+) bytes spill loads",
    "registers": r"Used (\d+) registers",
    "barriers": r"used (\d+) barriers",
}


def parse_ptxas(text: str) -> dict:
    """The numbers of `ptxas -v` output for one entry function (None where absent)."""
    found = {}
    for name, pattern in _PTXAS_FIELDS.items():
        match = re.search(pattern, text)
        found[name] = int(match[1]) if match else None
    return found


def ptx_loads(ptx: str) -> dict:
    """`ld.global` instructions and `cp.async` copies (global to shared memory, asynchronous:
    what Triton emits when it software-pipelines loads) in PTX text; the copies' commit_group /
    wait_group bookkeeping does not count."""
    copies = re.findall(r"\bcp\.async\.(?:bulk\.)?(?:ca|cg|shared|tensor)\b", ptx)
    return {"global_loads": len(re.findall(r"\bld\.global\b", ptx)), "cp_async": len(copies)}


def _kernel_name(module: str) -> str:
    match = re.search(r"tt\.func (?:public )?@([\w$.]+)", module)
    return match[1] if match else "?"


def _rational_fn(width: int, spec: str):
    if spec == DEFAULT:
        with platform.compiling_for("gpu"):
            blocks = rational_kernel.default_block_sizes()
    else:
        blocks = RationalBlockSizes.parse(spec)
    numerator, denominator = init_coefficients("swish", 8)
    x = jax.ShapeDtypeStruct((128, 197, width), jnp.bfloat16)

    def loss(x, numerator, denominator):
        y = rational_api.group_rational(
            x, numerator, denominator, implementation="pallas", block_sizes=blocks
        )
        return y.astype(jnp.float32).sum()

    return jax.value_and_grad(loss, argnums=(0, 1, 2)), (x, numerator, denominator), blocks


def _fft_fn(size: int, spec: str):
    blocks = FftBlockSizes() if spec == DEFAULT else FftBlockSizes.parse(spec)
    u = jax.ShapeDtypeStruct((64, 768, size), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((768, size), jnp.float32)

    def loss(u, k, pregate, postgate):
        y = fft_api.fft_conv(
            u, k, pregate=pregate, postgate=postgate, implementation="pallas", block_sizes=blocks
        )
        return y.astype(jnp.float32).sum()

    return jax.value_and_grad(loss, argnums=(0, 1, 2, 3)), (u, k, u, u), blocks


def _compile(module: str, blocks, args, workdir: pathlib.Path, index: int) -> dict:
    path = workdir / f"kernel{index}.ttir"
    path.write_text(module)
    command = [
        args.triton_python,
        "-c",
        _COMPILE,
        str(path),
        str(blocks.num_warps),
        str(blocks.num_stages),
        args.arch,
        str(args.timeout),
    ]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout + 120)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout + 120} s"}
    if run.returncode:
        return {"error": (run.stderr.strip().splitlines() or ["?"])[-1][:300]}
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if out["returncode"]:
        return {"error": "ptxas: " + (out["ptxas"].strip().splitlines() or ["?"])[-1][:300]}
    counts = ptx_loads(path.with_suffix(".ptx").read_text())
    return (
        {"triton": out["triton"], "shared_bytes": out["shared"]}
        | counts
        | parse_ptxas(out["ptxas"])
    )


def _line(r: dict) -> str:
    head = f"{r['op']:14} {r['size']:6} {r['spec']:22} {r['kernel']:22} w{r['num_warps']}"
    if "error" in r:
        return f"{head}  ERROR {r['error']}"
    return (
        f"{head}  {r['registers']:>3} regs  spills {r['spill_stores']:>6} / {r['spill_loads']:>6} B"
        f"  stack {r['stack_frame']:>6} B  shared {r['shared_bytes']:>6} B"
        f"  ld.global {r['global_loads']:>3}  cp.async {r['cp_async']:>3}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.registers", description=__doc__.splitlines()[0]
    )
    rational_spec = block_sizes_spec(
        lambda s: s == DEFAULT or RationalBlockSizes.parse(s)  # type: ignore[func-returns-value]
    )
    fft_spec = block_sizes_spec(lambda s: s == DEFAULT or FftBlockSizes.parse(s))
    parser.add_argument(
        "--rational",
        nargs="*",
        default=(),
        type=rational_spec,
        help="group_rational tilings at [128, 197, D] bf16 (rational.BlockSizes.parse specs, or "
        "'default': the GPU default)",
    )
    parser.add_argument("--rational-dims", type=int, nargs="+", default=(768,))
    parser.add_argument(
        "--fft",
        nargs="*",
        default=(),
        type=fft_spec,
        help="fft_conv kernel options, gated, B=64 H=768 bf16 (fft_conv.BlockSizes.parse specs "
        "such as h8m8w8-bf16, or 'default')",
    )
    parser.add_argument("--fft-sizes", type=int, nargs="+", default=(1024,))
    parser.add_argument("--arch", default="sm_90a", help="ptxas --gpu-name (sm_90a: H100/H200)")
    parser.add_argument(
        "--triton-python",
        default=sys.executable,
        help="a Python with the `triton` package (it is not a dependency of this project)",
    )
    parser.add_argument("--timeout", type=int, default=300, help="seconds per ptxas run")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("bench_results/registers.json")
    )
    return parser


def main(argv=None) -> int:
    """CLI entry point: one line per kernel, JSON rewritten after each."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.rational and not args.fft:
        parser.error("nothing to compile: give --rational and/or --fft specs")
    try:
        probe = subprocess.run([args.triton_python, "-c", "import triton"], capture_output=True)
        missing = probe.returncode != 0
    except OSError:
        missing = True
    if missing:
        parser.error(
            f"--triton-python {args.triton_python}: cannot import triton (pip install triton, "
            "in this or another environment, and point --triton-python at its python)"
        )
    cases = [
        ("group_rational", d, s, _rational_fn) for d in args.rational_dims for s in args.rational
    ]
    cases += [("fft_conv", n, s, _fft_fn) for n in args.fft_sizes for s in args.fft]
    env = environment() | {"arch": args.arch, "lowered_with": f"jax {jax.__version__}"}
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for op, size, spec, make in cases:
            fn, fn_args, blocks = make(size, spec)
            for module in triton_modules(fn, *fn_args):
                record = {
                    "op": op,
                    "size": size,
                    "spec": spec,
                    "kernel": _kernel_name(module),
                    "num_warps": blocks.num_warps,
                    "num_stages": blocks.num_stages,
                } | _compile(module, blocks, args, pathlib.Path(tmp), len(results))
                print(_line(record), flush=True)
                add_result(args.out, env, results, record)
    print(f"{len(results)} kernels; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
