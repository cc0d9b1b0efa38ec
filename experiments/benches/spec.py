"""The bench-spec types: the shared CLI options and a named benchmark."""

from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib
import sys
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import jax

from efficient.bench import (
    BenchCase,
    BenchResult,
    CompiledCase,
    benchmark_interleaved,
    compile_cases,
)
from efficient.checks import check_choice, check_field_types, validates_arguments

__all__ = [
    "BenchArgs",
    "BenchSpec",
    "SideBySide",
    "group_models",
    "platform",
    "protocol",
    "resolve_models",
    "skip_if_too_big",
    "time_side_by_side",
]


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchArgs:
    """Options shared by every bench; None means "the spec's protocol default".

    Attributes:
        batch: Items per call for throughput.
        latency_batch: Items per call for latency (0 skips the latency measurement).
        repeats: Timed calls per measurement.
        warmup: Untimed calls per measurement.
        models: Subset of the spec's model keys (None: all).
        image_size: Square input resolution, for image models.
        text_len: Text tokens after the visual tokens, for multimodal prefill rows (slowfast).
        lower_only: Compile only: FLOPs and memory, no allocation, no timing.
        precision: `jax.default_matmul_precision` for the run ("default": the backend's choice,
            which permits TF32 for fp32 on recent NVIDIA GPUs, as cuDNN convolutions do in PyTorch).
        out: JSON-lines results file; figures are saved next to it.
    """

    batch: int | None = None
    latency_batch: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    models: tuple[str, ...] | None = None
    image_size: int | None = None
    text_len: int | None = None
    lower_only: bool = False
    precision: Literal["default", "high", "highest"] = "default"
    out: pathlib.Path = pathlib.Path("runs/bench/bench.jsonl")

    def __post_init__(self):
        check_field_types(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchSpec:
    """A named benchmark.

    `run` yields results one at a time: the CLI appends each to the results file as it arrives, so
    an interrupted run keeps what it measured. `report` then prints the paper's own table and
    analysis and saves its figures.

    Attributes:
        description: One line for `--list`.
        run: Yields results for the given options.
        models: Keys accepted by `--models` (empty: the spec has no model subsets).
        report: Prints the spec's own table/analysis and saves figures after the run.
    """

    description: str
    run: Callable[[BenchArgs], Iterable[BenchResult]]
    models: tuple[str, ...] = ()
    report: Callable[[Sequence[BenchResult], BenchArgs], None] | None = None


def resolve_models(spec: BenchSpec, requested: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a `--models` subset against a spec (case-insensitive, "-" and "." ignored).

    Args:
        spec: The bench.
        requested: Names given by the user, or None for all.

    Returns:
        The spec's keys, in the order requested.

    Raises:
        ValueError: Naming the unknown model and the closest known ones.
    """
    if requested is None:
        return spec.models
    canon = {_canonical(m): m for m in spec.models}
    out = []
    for name in requested:
        key = canon.get(_canonical(name))
        if key is None:
            close = difflib.get_close_matches(_canonical(name), list(canon), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(canon[c] for c in close)}?" if close else ""
            raise ValueError(
                f"unknown model {name!r}{hint} (known: {', '.join(spec.models) or 'none'})"
            )
        out.append(key)
    return tuple(out)


def group_models(
    spec: BenchSpec, requested: Sequence[str] | None, group_of: Callable[[str], Hashable]
) -> list[list[str]]:
    """`resolve_models`, then the keys grouped by `group_of(key)` (groups and keys in order):
    the models a bench times side by side."""
    groups: dict[Hashable, list[str]] = {}
    for key in resolve_models(spec, requested):
        groups.setdefault(group_of(key), []).append(key)
    return list(groups.values())


def train_step(loss: Callable[..., Any], optimizer: Any) -> Callable[..., tuple]:
    """`step(params, opt_state, *batch) -> (params, opt_state, loss)`: `jax.value_and_grad` of
    `loss(params, *batch)`, then one update of the Optax `optimizer`."""
    import optax

    def step(params, opt_state, *batch):
        value, grads = jax.value_and_grad(loss)(params, *batch)
        # Optax mixes Python floats with int32 counters, which "strict" promotion rejects.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(".", "")


# (warmup, repeats) per platform for benches whose slowest CPU step takes seconds to a minute:
# on 2 CPU cores the median of 3 discards one slow call.
LONG_STEP_PROTOCOL = {"cpu": (1, 3), "accelerator": (5, 20)}
# A step is timed only if XLA's buffer estimate fits this share of the free memory (the host's on
# CPU, the device's on an accelerator): an out-of-memory kill would end the whole bench, and an
# out-of-memory error its whole group of interleaved rows, not just the row.
MEMORY_SHARE = 0.8


def platform() -> Literal["cpu", "accelerator"]:
    """The key of per-platform bench defaults: "cpu", or "accelerator" for a GPU or TPU."""
    return "cpu" if jax.default_backend() == "cpu" else "accelerator"


def protocol(
    args: BenchArgs, defaults: Mapping[Any, tuple[int, int]] = LONG_STEP_PROTOCOL, mode=None
) -> tuple[int, int]:
    """(warmup, repeats): the platform's defaults unless --warmup / --repeats say otherwise.

    Args:
        args: The run's options.
        defaults: (warmup, repeats) by `platform()`, or by (platform, mode) when `mode` is given.
        mode: e.g. "train" or "decode", for benches whose modes differ in step time.

    Raises:
        ValueError: `mode` is not one of the modes in `defaults` for `platform()`.
    """
    kind = platform()
    if mode is not None:
        modes = [key[1] for key in defaults if isinstance(key, tuple) and key[0] == kind]
        check_choice("protocol", "mode", mode, modes)
    warmup, repeats = defaults[kind if mode is None else (kind, mode)]
    return (
        warmup if args.warmup is None else args.warmup,
        repeats if args.repeats is None else args.repeats,
    )


def _available_bytes() -> int | None:
    """Free memory for the next step: the host's on CPU, the first device's elsewhere (its pool
    limit less the bytes in use, from `Device.memory_stats`); None where the platform won't say."""
    if jax.default_backend() == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def skip_if_too_big(compiled: BenchResult, name: str) -> BenchResult | None:
    """`compiled` marked "skipped" if its buffers exceed MEMORY_SHARE of the free memory."""
    need, free = compiled.memory.total_bytes, _available_bytes()
    if not need or not free or need <= MEMORY_SHARE * free:
        return None
    skipped = f"needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    print(f"{name}: not run, {skipped}", file=sys.stderr)
    return dataclasses.replace(compiled, extra={**compiled.extra, "skipped": skipped})


@dataclasses.dataclass(frozen=True, kw_only=True)
class SideBySide:
    """One row of a side-by-side comparison (`time_side_by_side`).

    Attributes:
        case: The function, its name and metadata; `case.args` may hold `jax.ShapeDtypeStruct`s
            (enough to compile: FLOPs, memory, the size check).
        make_args: Builds the arguments to time with (synthetic weights, optimizer state); None
            times on `case.args` (structs materialised by the harness). Called only for rows
            that are timed, so a lower-only or skipped row allocates nothing.
    """

    case: BenchCase
    make_args: Callable[[], tuple] | None = None


def time_side_by_side(
    rows: Sequence[SideBySide],
    args: BenchArgs,
    *,
    warmup: int,
    repeats: int,
    size_check: bool = True,
) -> Iterable[BenchResult]:
    """Compile each row, then time the runnable ones together in interleaved rounds.

    With `--lower-only` every row is only compiled. Otherwise, with `size_check` where the
    platform reports its free memory (the host on CPU, `Device.memory_stats` on a GPU or TPU),
    the rows are compiled first (on threads off CPU, `compile_cases`) and each is kept
    compiled-only ("skipped" says why) where XLA's buffer estimate exceeds `MEMORY_SHARE` of
    it; the others keep their executables. The runnable rows run in `benchmark_interleaved`
    rounds (one call of each per round, shuffled), so their per-round ratios (`paired_ratio`)
    are free of machine drift.

    Yields:
        One result per row: compiled-only ones once the rows are compiled, the timed ones at
        the end.
    """
    timed: list[BenchCase | CompiledCase] = []
    size_check = size_check and _available_bytes() is not None
    compiled: list[CompiledCase | None] = [None] * len(rows)
    if args.lower_only or size_check:
        names = ", ".join(row.case.name for row in rows)
        print(f"compiling {names} ...", file=sys.stderr)
        compiled = list(compile_cases([row.case for row in rows]))
    for row, precompiled in zip(rows, compiled, strict=True):
        case: BenchCase | CompiledCase = row.case
        if precompiled is not None:
            result = precompiled.result()
            skipped = None if args.lower_only else skip_if_too_big(result, row.case.name)
            if args.lower_only or skipped:
                yield skipped or result
                continue
            case = precompiled
        if row.make_args is not None:
            if isinstance(case, CompiledCase):
                case = case.with_args(row.make_args())
            else:
                case = dataclasses.replace(case, args=row.make_args())
        timed.append(case)
    if timed:
        names = ", ".join(c.case.name if isinstance(c, CompiledCase) else c.name for c in timed)
        print(f"{warmup} warm-up + {repeats} timed rounds of {names} ...", file=sys.stderr)
        yield from benchmark_interleaved(timed, warmup=warmup, repeats=repeats)
