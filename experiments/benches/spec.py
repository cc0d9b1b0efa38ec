"""The bench-spec types: the shared CLI options and a named benchmark."""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from efficient.bench import BenchResult

__all__ = ["BenchArgs", "BenchSpec", "resolve_models"]


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
    lower_only: bool = False
    precision: Literal["default", "high", "highest"] = "default"
    out: pathlib.Path = pathlib.Path("runs/bench/bench.jsonl")


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


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(".", "")
