"""Timing and provenance shared by the kernel benchmarks (`pallas_kernels/<op>/bench.py`).

`pallas_kernels` imports nothing of `efficient` (DESIGN.md), so the kernels carry this small
helper — jit, compile excluded, warm-ups, `block_until_ready`, median; device, CPU model, jax
version and git commit — instead of using `efficient.bench`.
"""

import argparse
import concurrent.futures
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
    "AheadCompiler",
    "add_compile_workers_argument",
    "add_result",
    "block_sizes_spec",
    "environment",
    "exit_status",
    "time_fn",
    "time_rows",
    "failed_rows",
    "git_commit",
    "time_torch_cuda",
]


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """Short commit hash of the code that runs, asked of git on every call (two `git` processes,
    milliseconds): a notebook that commits between runs records each run's own commit.

    Args:
      repo: a directory inside a git work tree. None: this project's checkout, and only when the
        code runs from one: an installed copy (site-packages) gets None, not the commit of
        whatever repository the environment happens to sit in.

    Returns:
      e.g. "2af2292", "2af2292+dirty" when tracked files have uncommitted changes (untracked
      files do not count, as with `git describe --dirty`), or None when git or the repository is
      absent. The environment variable EFFICIENT_GIT_COMMIT overrides it.
    """
    if os.environ.get("EFFICIENT_GIT_COMMIT"):
        # A copy of the tree sent elsewhere (a remote GPU) names its commit: it may sit inside
        # another checkout whose HEAD is not the code that runs.
        return os.environ["EFFICIENT_GIT_COMMIT"]
    root = pathlib.Path(__file__).resolve().parents[1]  # the checkout, when there is one
    cwd = root if repo is None else pathlib.Path(repo)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        if repo is None and pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None  # installed inside some other repository's tree (a venv in a project)
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


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
    commit = git_commit()
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


def _analysis(compiled) -> dict:
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returns one dict per computation
        cost = cost[0] if cost else {}
    try:
        temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        temp_bytes = None
    return {
        "flops": cost.get("flops"),
        "bytes_accessed": cost.get("bytes accessed"),
        "temp_bytes": temp_bytes,
    }


def time_fn(fn, *args, warmup: int = 3, repeats: int = 20, compiled=None) -> dict:
    """Compile `jax.jit(fn)` once, read XLA's cost/memory analysis, warm up, time the median.

    Each sample queues enough calls to last ~2 ms before one `block_until_ready` and reports the
    time per call (`calls_per_sample` says how many). `compiled`: (executable of `fn` on
    arguments shaped like `args`, its compile seconds), compiled beforehand (`AheadCompiler`);
    None compiles here.
    """
    if compiled is None:
        start = time.perf_counter()
        executable = jax.jit(fn).lower(*args).compile()
        compiled = executable, time.perf_counter() - start
    executable, compile_s = compiled
    timing = _samples(
        lambda: executable(*args), jax.block_until_ready, warmup=warmup, repeats=repeats
    )
    return timing | _analysis(executable) | {"compile_s": compile_s}


class AheadCompiler:
    """Compiles the rows of a benchmark on a pool of threads while earlier rows are timed.

    A GPU session's benches spend most of their minutes compiling (a Triton kernel or a train
    step: 5-20 s each, some kernels minutes; README, GPU), one row after another on one of the
    machine's 16 cores. XLA releases the GIL while it compiles, so `workers` threads compile
    that many rows at once. Lowering (tracing, Python) happens in `submit`, on the caller's
    thread, so that a row being timed never waits for the GIL behind a tracing thread.

    `workers=0` compiles nothing ahead (`get` returns None and `time_fn` compiles inline): the
    choice on a CPU backend, where a compile in the background would slow the row being timed.
    """

    def __init__(self, workers: int):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self._pool = concurrent.futures.ThreadPoolExecutor(workers) if workers else None
        self._jobs: dict = {}

    @staticmethod
    def default_workers() -> int:
        """Half the cores on an accelerator (the rest time rows and run XLA's own threads);
        0 on CPU."""
        if jax.default_backend() == "cpu":
            return 0
        return max(1, min(8, len(os.sched_getaffinity(0)) // 2))

    def submit(self, key, fn, *shapes) -> None:
        """Lower `jax.jit(fn)` on `shapes` (`jax.ShapeDtypeStruct`s or arrays) now, compile it
        on the pool; a lowering error is raised again by `get(key)`."""
        if self._pool is None:
            return
        try:
            lowered = jax.jit(fn).lower(*shapes)
        except Exception as e:  # noqa: BLE001 — re-raised for its row by get()
            future = concurrent.futures.Future()
            future.set_exception(e)
            self._jobs[key] = future
            return
        self._jobs[key] = self._pool.submit(self._compile, lowered)

    @staticmethod
    def _compile(lowered):
        start = time.perf_counter()
        compiled = lowered.compile()
        return compiled, time.perf_counter() - start

    def next_ready(self, keys):
        """The first of `keys` (in their order) that can be timed now: compiled (or failed), or
        never submitted; waits for the first compile of `keys` to finish if none can."""
        keys = list(keys)
        while True:
            for key in keys:
                if key not in self._jobs or self._jobs[key].done():
                    return key
            concurrent.futures.wait(
                [self._jobs[key] for key in keys],
                return_when=concurrent.futures.FIRST_COMPLETED,
            )

    def get(self, key) -> tuple | None:
        """(compiled executable, compile seconds) of `key`, waiting for it; None if `key` was
        never submitted (or workers=0). Raises what its lowering or compile raised."""
        if key not in self._jobs:
            return None
        return self._jobs.pop(key).result()

    def shutdown(self) -> None:
        """Cancel the compiles not started; those running finish in the background."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def add_compile_workers_argument(parser: argparse.ArgumentParser) -> None:
    """The benches' --compile-workers option (`time_rows`' workers), checked when parsed."""

    def workers(text: str) -> int:
        value = int(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be an int >= 0, got {value}")
        return value

    workers.__name__ = "compile workers"  # argparse names the type in its message
    parser.add_argument(
        "--compile-workers",
        type=workers,
        default=None,
        help="rows compiled ahead on this many threads, each timed as soon as it is compiled "
        "(default: half the cores, at most 8, on an accelerator; 0, inline, on CPU)",
    )


def time_rows(
    rows, *, job, run, header, show, out: pathlib.Path, env: dict, workers: int | None = None
) -> list[dict]:
    """Time every row of a benchmark, compiling ahead on threads; return the records.

    Rows come in order, except that one still compiling lets compiled ones go first. After each
    row its record is shown and `out` rewritten as {"env", "results"}, so a run stopped by a time
    limit keeps its rows.

    Args:
        rows: The rows, in their preferred order.
        job: row -> (function, argument shapes) to compile ahead, or None (nothing to compile:
            a PyTorch or skipped row).
        run: (row, compiled) -> the row's record; compiled is (executable, seconds) or None.
        header: row -> the fields naming the row, the record of a row whose compile or run
            raised (with "skipped": the error, and "error": True; a GPU session must not end
            on one failure, but its exit status says one happened: `failed_rows`).
        show: record -> None (prints it).
        out: The JSON file.
        env: `environment()`, stored with the records.
        workers: Compile threads (`AheadCompiler`); None: `AheadCompiler.default_workers()`.
    """
    ahead = AheadCompiler(AheadCompiler.default_workers() if workers is None else workers)
    results: list[dict] = []
    try:
        for i, row in enumerate(rows):
            if (spec := job(row)) is not None:
                fn, shapes = spec
                ahead.submit(i, fn, *shapes)
        todo = list(range(len(rows)))
        while todo:
            i = ahead.next_ready(todo)
            todo.remove(i)
            try:
                record = run(rows[i], ahead.get(i))
            except Exception as e:  # noqa: BLE001 — reported as the row's record
                reason = f"{type(e).__name__}: {str(e)[:300]}"
                record = header(rows[i]) | {"skipped": reason, "error": True}
            show(record)
            add_result(out, env, results, record)
    finally:
        ahead.shutdown()
    return results


def failed_rows(results: list[dict]) -> int:
    """The exit status of a bench CLI: 1 (and a line saying how many) if any row raised
    (`time_rows`), else 0. Rows skipped on purpose (no torch, a mode a row does not change)
    do not count."""
    failed = sum(bool(r.get("error")) for r in results)
    if failed:
        print(f"{failed} of {len(results)} rows failed (their 'skipped' field says why)")
    return 1 if failed else 0


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
