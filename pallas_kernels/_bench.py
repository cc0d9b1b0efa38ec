"""Timing and provenance shared by the kernel benchmarks (`pallas_kernels/<op>/bench.py`).

`pallas_kernels` imports nothing of `efficient` (DESIGN.md), so the kernels carry this small
helper — jit, compile excluded, warm-ups, `block_until_ready`, median; device, CPU model, jax
version and git commit — instead of using `efficient.bench`.
"""

import datetime
import os
import pathlib
import platform
import statistics
import subprocess
import time

import jax

__all__ = ["environment", "time_fn", "time_torch_cuda"]


def environment() -> dict:
    """Device, versions, commit and time of the measurement (no hostname)."""
    cpu = None
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=root, capture_output=True
        ).returncode
        commit = (commit + ("+dirty" if dirty else "")) or None
    except OSError:
        commit = None
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "cpu_model": cpu,
        "cpu_count": len(os.sched_getaffinity(0)),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "git_commit": commit,
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def time_fn(fn, *args, warmup: int = 3, repeats: int = 20) -> dict:
    """Compile `jax.jit(fn)` once, read XLA's cost/memory analysis, warm up, time the median."""
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returns one dict per computation
        cost = cost[0] if cost else {}
    try:
        temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        temp_bytes = None
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "flops": cost.get("flops"),
        "bytes_accessed": cost.get("bytes accessed"),
        "temp_bytes": temp_bytes,
    }


def time_torch_cuda(run, *, warmup: int, repeats: int) -> dict:
    """Median and minimum ms of `run()` (a PyTorch CUDA baseline), synchronising the device."""
    import torch  # only the GPU baselines need it

    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}
