"""Timing and provenance shared by the kernel benchmarks (`pallas_kernels/<op>/bench.py`).

`pallas_kernels` imports nothing of `efficient` (DESIGN.md), so the kernels carry this small
helper — jit, compile excluded, warm-ups, `block_until_ready`, median; device, CPU model, jax
version and git commit — instead of using `efficient.bench`.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time

import jax

__all__ = [
    "add_result",
    "block_sizes_spec",
    "environment",
    "exit_status",
    "time_fn",
    "time_torch_cuda",
]


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
    root = pathlib.Path(__file__).resolve().parents[1]  # the repository
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=root, capture_output=True
        ).returncode
        commit = (commit + ("+dirty" if dirty else "")) if commit else None
    except OSError:
        commit = None
    # A copy of the tree sent elsewhere (a remote GPU) names its commit: it may sit inside
    # another checkout whose HEAD is not the code that runs.
    commit = os.environ.get("EFFICIENT_GIT_COMMIT") or commit
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


def _calls_per_sample(call, target_ms: float = 2.0, most: int = 100) -> int:
    """Calls per timed sample so that one sample lasts ~target_ms (1 for slow calls).

    A sub-millisecond GPU kernel timed one call at a time measures the host's dispatch and sync
    as much as the kernel; queueing several calls before one sync amortises that.
    """
    start = time.perf_counter()
    call()
    once_ms = (time.perf_counter() - start) * 1e3
    return max(1, min(most, int(target_ms / max(once_ms, 1e-3))))


def _samples(call, sync, *, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        sync(call())
    inner = _calls_per_sample(lambda: sync(call()))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner - 1):
            call()
        sync(call())
        times.append((time.perf_counter() - start) * 1e3 / inner)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "calls_per_sample": inner}


def time_fn(fn, *args, warmup: int = 3, repeats: int = 20) -> dict:
    """Compile `jax.jit(fn)` once, read XLA's cost/memory analysis, warm up, time the median.

    Each sample queues enough calls to last ~2 ms before one `block_until_ready` and reports the
    time per call (`calls_per_sample` says how many).
    """
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returns one dict per computation
        cost = cost[0] if cost else {}
    try:
        temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        temp_bytes = None
    timing = _samples(
        lambda: compiled(*args), jax.block_until_ready, warmup=warmup, repeats=repeats
    )
    return timing | {
        "flops": cost.get("flops"),
        "bytes_accessed": cost.get("bytes accessed"),
        "temp_bytes": temp_bytes,
    }


def time_torch_cuda(run, *, warmup: int, repeats: int) -> dict:
    """Median and minimum ms of `run()` (a PyTorch CUDA baseline), timed as `time_fn` times."""
    import torch  # only the GPU baselines need it

    def sync(_):
        torch.cuda.synchronize()

    return _samples(run, sync, warmup=warmup, repeats=repeats)


def add_result(out: pathlib.Path, env: dict, results: list[dict], record: dict) -> None:
    """Append `record` and rewrite `out` as {"env", "results"}: a run stopped by a time limit
    keeps the rows it has."""
    results.append(record)
    out.write_text(json.dumps({"env": env, "results": results}, indent=1))


def exit_status(results: list[dict], out: pathlib.Path, passed: str) -> int:
    """Print "k/n <passed>; wrote <out>"; 1 if any record is not "ok", else 0."""
    failed = sum(not r["ok"] for r in results)
    print(f"{len(results) - failed}/{len(results)} {passed}; wrote {out}")
    return 1 if failed else 0


def block_sizes_spec(parse):
    """An argparse `type` that accepts a spec string if `parse` (a `BlockSizes.parse`) does, so a
    bad spec is a usage error naming the flag before any case runs; the string is kept."""

    def check(spec: str) -> str:
        try:
            parse(spec)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return spec

    check.__name__ = "block sizes spec"  # argparse names the type in its message
    return check
