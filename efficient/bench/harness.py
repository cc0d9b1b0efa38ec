"""Timing harness: compile once, read XLA cost/memory analysis, warm up, time, summarise."""

import concurrent.futures
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels._bench import git_commit  # one implementation for both benches

__all__ = [
    "BenchCase",
    "BenchResult",
    "CompiledCase",
    "Environment",
    "MemoryStats",
    "append_jsonl",
    "benchmark",
    "benchmark_interleaved",
    "compile_case",
    "compile_cases",
    "cost_stats",
    "environment",
    "git_commit",
    "materialize",
    "memory_stats",
    "read_jsonl",
    "synthetic_variables",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryStats:
    """Buffer sizes of one compiled executable, from `Compiled.memory_analysis()`.

    Attributes:
        argument_bytes: Size of the input buffers.
        output_bytes: Size of the output buffers.
        temp_bytes: Scratch buffers XLA allocates during the call (activations for a forward pass).
        generated_code_bytes: Size of the generated code.
        alias_bytes: Output bytes that alias (reuse) input buffers.
        peak_bytes: XLA's peak-memory estimate where the backend reports one.
    """

    argument_bytes: int | None = None
    output_bytes: int | None = None
    temp_bytes: int | None = None
    generated_code_bytes: int | None = None
    alias_bytes: int | None = None
    peak_bytes: int | None = None

    @property
    def total_bytes(self) -> int | None:
        """Arguments + outputs + temporaries - aliased bytes: the device memory one call needs."""
        parts = (self.argument_bytes, self.output_bytes, self.temp_bytes)
        if any(p is None for p in parts):
            return None
        return sum(parts) - (self.alias_bytes or 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Environment:
    """Where and with what a measurement was taken (no hostname).

    Attributes:
        device_kind: `jax.devices()[0].device_kind`, e.g. "NVIDIA H100 80GB HBM3" or "cpu".
        platform: "cpu", "gpu" or "tpu".
        device_count: `jax.device_count()`.
        jax_version: `jax.__version__`.
        jaxlib_version: `jaxlib.__version__`.
        git_commit: Short hash of the repository holding `efficient`, "+dirty" when tracked files
            differ from it; None when `efficient` does not run from its own checkout (installed).
        timestamp_utc: ISO-8601 UTC time of the measurement, to the second.
        python_version: `platform.python_version()`.
        cpu_model: The host CPU's model name (the "device" for CPU timings); None if unknown.
        cpu_count: CPU cores this process may use.
    """

    device_kind: str
    platform: str
    device_count: int
    jax_version: str
    jaxlib_version: str
    git_commit: str | None
    timestamp_utc: str
    python_version: str
    cpu_model: str | None = None
    cpu_count: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchResult:
    """One benchmarked function on one set of argument shapes.

    Times are in milliseconds per call; `times_ms` is empty for a `lower_only` result. Derived
    figures are properties and are also written by `to_dict`.

    Attributes:
        name: What was timed, e.g. "lowformer/b0/throughput".
        batch: Items per call (images, sequences), used for `items_per_s`; None if not meaningful.
        flops: XLA's FLOP count for one call (None if the backend gives none).
        bytes_accessed: XLA's bytes-accessed estimate for one call.
        memory: Buffer sizes of the compiled executable.
        lower_s: Seconds to trace and lower.
        compile_s: Seconds to compile.
        warmup: Untimed calls before timing.
        times_ms: Wall-clock time of each timed call.
        lower_only: True when nothing was run.
        env: Device, versions, commit and time of the measurement.
        extra: Free-form, JSON-serialisable metadata of the caller (model name, paper figures, ...).
    """

    name: str
    batch: int | None = None
    flops: float | None = None
    bytes_accessed: float | None = None
    memory: MemoryStats = dataclasses.field(default_factory=MemoryStats)
    lower_s: float = 0.0
    compile_s: float = 0.0
    warmup: int = 0
    times_ms: tuple[float, ...] = ()
    lower_only: bool = False
    env: Environment
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def repeats(self) -> int:
        """Number of timed calls."""
        return len(self.times_ms)

    @property
    def median_ms(self) -> float | None:
        """Median time per call (the headline figure)."""
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def min_ms(self) -> float | None:
        """Fastest call."""
        return min(self.times_ms) if self.times_ms else None

    @property
    def max_ms(self) -> float | None:
        """Slowest call."""
        return max(self.times_ms) if self.times_ms else None

    @property
    def p90_ms(self) -> float | None:
        """90th percentile (linear interpolation, numpy's default)."""
        return float(np.percentile(self.times_ms, 90)) if self.times_ms else None

    @property
    def std_ms(self) -> float | None:
        """Population standard deviation of the call times."""
        return float(np.std(self.times_ms)) if self.times_ms else None

    @property
    def items_per_s(self) -> float | None:
        """Throughput: `batch` / median seconds per call."""
        if self.batch is None or not self.times_ms:
            return None
        return self.batch / (self.median_ms / 1e3)

    @property
    def gflops_per_s(self) -> float | None:
        """Achieved GFLOP/s: XLA FLOPs / median seconds per call."""
        if self.flops is None or not self.times_ms:
            return None
        return self.flops / (self.median_ms / 1e3) / 1e9

    @property
    def flops_per_item(self) -> float | None:
        """XLA FLOPs per item (per image, per sequence)."""
        if self.flops is None or not self.batch:
            return None
        return self.flops / self.batch

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte accessed (XLA's estimates); compare with the device's FLOP/byte ridge."""
        if self.flops is None or not self.bytes_accessed:
            return None
        return self.flops / self.bytes_accessed

    _DERIVED = (
        "repeats",
        "median_ms",
        "min_ms",
        "max_ms",
        "p90_ms",
        "std_ms",
        "items_per_s",
        "gflops_per_s",
        "flops_per_item",
        "arithmetic_intensity",
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict: the fields plus the derived figures."""
        out = dataclasses.asdict(self)
        out["times_ms"] = list(self.times_ms)
        out["extra"] = dict(self.extra)
        for k in self._DERIVED:
            out[k] = getattr(self, k)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchResult":
        """Inverse of `to_dict` (derived figures are recomputed; unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["memory"] = _from_known(MemoryStats, d.get("memory") or {})
        kw["env"] = _from_known(Environment, d["env"])
        kw["times_ms"] = tuple(float(t) for t in d.get("times_ms", ()))
        kw["extra"] = dict(d.get("extra") or {})
        return cls(**kw)

    def to_json(self) -> str:
        """One line of JSON (`to_dict`)."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _from_known(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------
# Environment


@functools.cache
def _cpu_model() -> str | None:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> Environment:
    """Describe the current device, software versions, commit and time (no hostname)."""
    import jaxlib

    device = jax.devices()[0]
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    return Environment(
        device_kind=str(device.device_kind),
        platform=str(device.platform),
        device_count=jax.device_count(),
        jax_version=jax.__version__,
        jaxlib_version=getattr(jaxlib, "__version__", "unknown"),
        git_commit=git_commit(),
        timestamp_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        python_version=platform.python_version(),
        cpu_model=_cpu_model(),
        cpu_count=cpus,
    )


# ---------------------------------------------------------------------------------------------
# Compiled-executable analysis


def _as_dict(analysis: Any) -> dict[str, Any]:
    """Normalise `cost_analysis()` output: a dict (jax >= 0.4.30), a list of dicts, or None."""
    if analysis is None:
        return {}
    if isinstance(analysis, Mapping):
        return dict(analysis)
    if isinstance(analysis, Sequence):
        merged: dict[str, Any] = {}
        for part in analysis:  # one dict per computation: sum the numeric entries
            for k, v in (part or {}).items():
                if isinstance(v, int | float):
                    merged[k] = merged.get(k, 0.0) + v
        return merged
    return {}


def cost_stats(compiled: Any) -> tuple[float | None, float | None]:
    """FLOPs and bytes accessed of a `jax.stages.Compiled`, or None where XLA reports none.

    Args:
        compiled: The result of `jax.jit(f).lower(...).compile()`.

    Returns:
        `(flops, bytes_accessed)`.
    """
    try:
        cost = _as_dict(compiled.cost_analysis())
    except (NotImplementedError, RuntimeError):  # XlaRuntimeError is a RuntimeError
        cost = {}

    def get(key: str) -> float | None:
        v = cost.get(key)
        return float(v) if isinstance(v, int | float) and v >= 0 else None

    return get("flops"), get("bytes accessed")


_MEMORY_FIELDS = {
    "argument_bytes": "argument_size_in_bytes",
    "output_bytes": "output_size_in_bytes",
    "temp_bytes": "temp_size_in_bytes",
    "generated_code_bytes": "generated_code_size_in_bytes",
    "alias_bytes": "alias_size_in_bytes",
    "peak_bytes": "peak_memory_in_bytes",
}


def memory_stats(compiled: Any) -> MemoryStats:
    """Buffer sizes of a `jax.stages.Compiled` (fields None where the backend reports nothing).

    Args:
        compiled: The result of `jax.jit(f).lower(...).compile()`.

    Returns:
        A `MemoryStats`.
    """
    try:
        mem = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):  # unsupported on some backends and versions
        mem = None
    if isinstance(mem, Sequence) and not isinstance(mem, str | bytes):
        mem = mem[0] if mem else None
    if mem is None:
        return MemoryStats()

    def get(attr: str) -> int | None:
        v = mem.get(attr) if isinstance(mem, Mapping) else getattr(mem, attr, None)
        return int(v) if isinstance(v, int | float) and v >= 0 else None

    return MemoryStats(**{ours: get(theirs) for ours, theirs in _MEMORY_FIELDS.items()})


# ---------------------------------------------------------------------------------------------
# Running


def materialize(tree: Any, key: jax.Array | None = None) -> Any:
    """Replace every `jax.ShapeDtypeStruct` leaf with an array on the default device.

    Floating (and complex) leaves are standard normal, integer and boolean leaves zero, typed PRNG
    keys `jax.random.key(0)`. Other leaves are `jax.device_put` (so host-to-device copies happen
    here, not in the timed calls).

    Args:
        tree: A pytree of arrays and/or `jax.ShapeDtypeStruct`s.
        key: PRNG key for the normal leaves (default `jax.random.key(0)`).

    Returns:
        The same pytree with device arrays at the leaves.
    """
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(0) if key is None else key, max(len(leaves), 1))
    out = []
    for k, leaf in zip(keys, leaves, strict=False):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            dtype = leaf.dtype
            if jnp.issubdtype(dtype, jax.dtypes.prng_key):
                leaf = jax.random.split(jax.random.key(0), leaf.shape) if leaf.shape else k
            elif jnp.issubdtype(dtype, jnp.inexact):
                leaf = jax.random.normal(k, leaf.shape, dtype)
            else:
                leaf = jnp.zeros(leaf.shape, dtype)
        out.append(jax.device_put(leaf))
    return jax.tree.unflatten(treedef, out)


def synthetic_variables(shapes: Any, seed: int = 0) -> Any:
    """Random weights with the shapes of `shapes`, made on the host without compiling `init`.

    Timing does not depend on weight values as long as activations stay finite and normal (no
    denormals), so this stands in for `Module.init` in benchmarks: a jitted `init` of a LowFormer
    takes about a minute to compile on 2 CPU cores. Kernels (2+ axes) are LeCun-normal: std
    1/sqrt(fan-in), fan-in = all but the last axis. Vectors named "scale" are one, other vectors
    (biases) zero.

    Args:
        shapes: The pytree of `jax.ShapeDtypeStruct`s from `jax.eval_shape(module.init, ...)`.
        seed: numpy seed.

    Returns:
        The same pytree with device arrays.
    """
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        # The last dict key names the parameter; boxed leaves (nn.Partitioned) add a `.value`.
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        name = str(keys[-1]) if keys else ""
        if len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) / np.sqrt(max(fan_in, 1))
        elif name == "scale":
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jax.device_put(value.astype(leaf.dtype))

    return jax.tree_util.tree_map_with_path(make, shapes)


def _shape_struct(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    # A committed jax.Array keeps its placement; host data goes to the default device.
    sharding = x.sharding if isinstance(x, jax.Array) else None
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchCase:
    """One function and its example arguments, to time beside others (`benchmark_interleaved`).

    Attributes:
        fn: The function to time; jitted by the harness (an already-jitted function is fine).
        args: Example positional arguments: arrays and/or `jax.ShapeDtypeStruct`s (pytrees).
        name: Label of the result; unique within one interleaved group.
        batch: Items per call, for items/s and per-item FLOPs.
        static_argnums: Passed to `jax.jit`; those arguments are passed through untouched.
        extra: JSON-serialisable metadata stored in the result.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    name: str
    batch: int | None = None
    static_argnums: int | Sequence[int] = ()
    extra: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompiledCase:
    """A `BenchCase` compiled once (`compile_case`): read its FLOPs and memory (`result`) before
    deciding to run it, then time it with `benchmark_interleaved` without compiling it again.

    Attributes:
        case: The case; `with_args` swaps its arguments for others of the same shapes (e.g. real
            weights for the shape structs it was compiled on).
        executable: The compiled executable; it takes the non-static arguments.
        fields: The `BenchResult` fields known before timing (FLOPs, memory, compile times).
    """

    case: BenchCase
    executable: Any
    fields: Mapping[str, Any]

    def with_args(self, args: tuple[Any, ...]) -> "CompiledCase":
        """The same executable on other arguments of the same shapes and dtypes."""
        return dataclasses.replace(self, case=dataclasses.replace(self.case, args=args))

    def result(self, extra: Mapping[str, Any] | None = None) -> BenchResult:
        """The compile-only result (`lower_only`), with `extra` added to the case's metadata."""
        fields = {**self.fields, "extra": {**self.fields["extra"], **(extra or {})}}
        return BenchResult(**fields, lower_only=True, env=environment())


def _static(case: BenchCase) -> set[int]:
    static_argnums = case.static_argnums
    return {static_argnums} if isinstance(static_argnums, int) else set(static_argnums)


def _call_args(case: BenchCase) -> list[Any]:
    """The arguments a compiled executable takes: the non-static ones."""
    static = _static(case)
    return [a for i, a in enumerate(case.args) if i not in static]


def _lower(case: BenchCase) -> tuple[Any, float]:
    """(lowered computation, seconds to lower)."""
    static = _static(case)
    jitted = jax.jit(case.fn, static_argnums=tuple(sorted(static)))
    # Lower on shape structs only: tracing never touches (or keeps alive) argument data.
    shapes = [a if i in static else jax.tree.map(_shape_struct, a) for i, a in enumerate(case.args)]
    t0 = time.perf_counter()
    lowered = jitted.lower(*shapes)
    return lowered, time.perf_counter() - t0


def _compile_lowered(case: BenchCase, lowered: Any, lower_s: float):
    """(compiled executable, its non-static argument templates, BenchResult fields so far)."""
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    flops, bytes_accessed = cost_stats(compiled)
    fields = dict(
        name=case.name,
        batch=case.batch,
        flops=flops,
        bytes_accessed=bytes_accessed,
        memory=memory_stats(compiled),
        lower_s=lower_s,
        compile_s=t2 - t1,
        extra=dict(case.extra or {}),
    )
    # The compiled executable takes only the non-static arguments.
    return compiled, _call_args(case), fields


def _compile(case: BenchCase) -> tuple[Any, list[Any], dict[str, Any]]:
    """(compiled executable, its non-static argument templates, BenchResult fields so far)."""
    return _compile_lowered(case, *_lower(case))


def compile_cases(
    cases: Sequence[BenchCase], *, compile_workers: int | None = None
) -> list[CompiledCase]:
    """Step 1 of `benchmark`'s protocol alone: jit, lower on shape structs, compile, analyse.

    Nothing is materialised or run. `benchmark_interleaved` takes the results in place of the
    cases and reuses their executables.

    Args:
        cases: The cases to compile.
        compile_workers: Cases compiled at once, on threads; None: as `benchmark_interleaved`.
    """
    return [
        CompiledCase(case=case, executable=executable, fields=fields)
        for case, (executable, _, fields) in zip(
            cases, _compile_all(cases, compile_workers), strict=True
        )
    ]


def compile_case(case: BenchCase) -> CompiledCase:
    """`compile_cases` of one case."""
    return compile_cases([case])[0]


def _compile_all(cases: Sequence[BenchCase], workers: int | None) -> list[tuple]:
    """`_compile` of every case; on `workers` threads at once where that helps.

    XLA releases the GIL while it compiles, so on a many-core accelerator host the cases of a
    group (train steps: 10-20 s each on a GPU machine) compile side by side. Lowering stays on
    this thread, one case after another. None: one thread on a CPU backend (XLA:CPU already
    compiles on every core, and its compiles would compete with each other), else up to half
    the cores, at most 8.
    """
    if workers is None:
        cores = len(os.sched_getaffinity(0))
        workers = 1 if jax.default_backend() == "cpu" else max(1, min(8, cores // 2))
    if workers < 1:
        raise ValueError(f"compile_workers must be >= 1, got {workers}")
    if workers == 1 or len(cases) == 1:
        return [_compile(case) for case in cases]
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(cases))) as pool:
        futures = [pool.submit(_compile_lowered, case, *_lower(case)) for case in cases]
        return [future.result() for future in futures]


def benchmark(
    fn: Callable[..., Any],
    *args: Any,
    name: str,
    batch: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    lower_only: bool = False,
    static_argnums: int | Sequence[int] = (),
    extra: Mapping[str, Any] | None = None,
) -> BenchResult:
    """Compile `fn` once on `args`, analyse it, and (unless `lower_only`) time it.

    The protocol (one for every paper; a paper's own settings are choices of the arguments):

    1. `fn` is wrapped in `jax.jit`, lowered on the example arguments and compiled once. The
       compiled executable is what is timed, so no call can trigger a recompile, and the compile
       time is reported separately (`lower_s`, `compile_s`).
    2. FLOPs and bytes accessed come from `Compiled.cost_analysis()` (XLA's count on the optimised
       HLO: a dot or convolution counts 2 FLOPs per multiply-accumulate, elementwise ops one per
       element, so FLOPs / 2 slightly over-counts the MACs papers report). Buffer sizes come from
       `Compiled.memory_analysis()`. Both are read defensively: older jax returns a list with one
       dict per computation, some backends return None or omit keys, which gives None fields, not
       errors.
    3. Arguments that are `jax.ShapeDtypeStruct`s are materialised (normal floats, zero integers,
       key 0) and every argument is placed on the default device before timing, so host-to-device
       copies are never timed. With `lower_only=True` nothing is materialised or run: FLOPs and
       memory of configurations too big for the machine at hand come from step 1 alone.
    4. `warmup` untimed calls, then `repeats` timed calls. Each call is timed on its own with
       `time.perf_counter()` around `compiled(*args)` followed by `jax.block_until_ready` on the
       output, i.e. wall-clock time including Python dispatch, as a user of the function sees it.
       The median is the headline figure (robust to the odd slow call from a shared machine); min,
       p90, max and the standard deviation come with it.
    5. To compare functions, `benchmark_interleaved` times them in rounds (one call of each per
       round), so that a machine's drift slows all of them alike and their per-round ratios
       (`report.paired_ratio`) are far tighter than a ratio of separately measured medians.

    Args:
        fn: The function to time; jitted here (an already-jitted function is fine).
        *args: Example positional arguments: arrays and/or `jax.ShapeDtypeStruct`s (pytrees).
        name: Label of the result.
        batch: Items per call, for items/s and per-item FLOPs.
        warmup: Untimed calls after compiling (>= 0).
        repeats: Timed calls (>= 1 unless `lower_only`).
        lower_only: Only lower and compile: FLOPs and memory without allocating or running.
        static_argnums: Passed to `jax.jit`; those arguments are passed through untouched.
        extra: JSON-serialisable metadata stored in the result.

    Returns:
        A `BenchResult`.

    Raises:
        ValueError: If `warmup` < 0, or `repeats` < 1 when timing.
    """
    case = BenchCase(
        fn=fn, args=args, name=name, batch=batch, static_argnums=static_argnums, extra=extra
    )
    if lower_only:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        return compile_case(case).result()
    return benchmark_interleaved([case], warmup=warmup, repeats=repeats)[0]


def benchmark_interleaved(
    cases: Sequence[BenchCase | CompiledCase],
    *,
    warmup: int = 3,
    repeats: int = 10,
    seed: int = 0,
    compile_workers: int | None = None,
) -> list[BenchResult]:
    """Compile every case, then time them all in rounds: one call of each per round.

    Steps 1-3 of `benchmark`'s protocol per case. Then `warmup` untimed rounds and `repeats`
    timed rounds; each round calls every case once, in an order shuffled per round (seeded), and
    times each call on its own as in `benchmark`. A slow spell of a shared machine, a frequency
    change or a neighbour's job then hits every case of a round, so per-round ratios between the
    cases (`report.paired_ratio`) cancel it where a ratio of medians timed minutes apart cannot.
    Each result's `times_ms[i]` is its call in round i; `extra["interleaved_with"]` names the
    other cases of the group (absent for a single case).

    Args:
        cases: The functions to compare; names must be unique. A `CompiledCase` is timed with
            its executable, not compiled again.
        warmup: Untimed rounds after compiling (>= 0).
        repeats: Timed rounds (>= 1).
        seed: Seed of the per-round call order.
        compile_workers: Cases compiled at once, on threads (nothing is timed until all are
            compiled). None: 1 on a CPU backend, else half the cores up to 8.

    Returns:
        One `BenchResult` per case, in `cases` order.

    Raises:
        ValueError: If `warmup` < 0, `repeats` < 1, `compile_workers` < 1, no cases or repeated
            names.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 when timing, got {repeats}")
    names = [c.case.name if isinstance(c, CompiledCase) else c.name for c in cases]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"cases: need at least one, with unique names; got names {names}")
    fresh = iter(_compile_all([c for c in cases if isinstance(c, BenchCase)], compile_workers))
    prepared = []
    for c in cases:
        if isinstance(c, CompiledCase):
            compiled, templates, fields = c.executable, _call_args(c.case), dict(c.fields)
        else:
            compiled, templates, fields = next(fresh)
        prepared.append((compiled, [materialize(a) for a in templates], fields))
    rng = np.random.default_rng(seed)
    times: list[list[float]] = [[] for _ in cases]
    for round_index in range(warmup + repeats):
        for i in rng.permutation(len(cases)):
            compiled, call_args, _ = prepared[i]
            start = time.perf_counter()
            jax.block_until_ready(compiled(*call_args))
            if round_index >= warmup:
                times[i].append((time.perf_counter() - start) * 1e3)
    results = []
    for (_, _, fields), case_times in zip(prepared, times, strict=True):
        if len(cases) > 1:
            others = [n for n in names if n != fields["name"]]
            fields = {**fields, "extra": {**fields["extra"], "interleaved_with": others}}
        results.append(
            BenchResult(**fields, warmup=warmup, times_ms=tuple(case_times), env=environment())
        )
    return results


# ---------------------------------------------------------------------------------------------
# Results files


def append_jsonl(results: Iterable[BenchResult], path: str | os.PathLike[str]) -> pathlib.Path:
    """Append one JSON line per result to `path` (parents created).

    Args:
        results: Results to write.
        path: A `.jsonl` file.

    Returns:
        The path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in results:
            f.write(r.to_json() + "\n")
    return path


def read_jsonl(path: str | os.PathLike[str]) -> list[BenchResult]:
    """Read the results of a `.jsonl` file written by `append_jsonl` (blank lines skipped).

    Args:
        path: The file.

    Returns:
        The results in file order.
    """
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    return [BenchResult.from_dict(json.loads(line)) for line in lines if line.strip()]
