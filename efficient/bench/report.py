"""Tables of benchmark results: rich when installed, aligned plain text otherwise."""

import io
import math
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from efficient.bench.harness import BenchResult

__all__ = [
    "RESULT_COLUMNS",
    "device_label",
    "environment_line",
    "format_value",
    "inverted_pairs",
    "paired_ratio",
    "print_results",
    "print_table",
    "ratio_cell",
    "render_table",
    "spearman",
]


def format_value(value: Any) -> str:
    """Compact cell text: "-" for None/NaN, 3 significant digits below 100, thousands grouped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    # 99.95 and up round to 100 at 3 digits, where "#.3g" would print "100." with a dot.
    if isinstance(value, int) or abs(value) >= 99.95:
        return f"{value:,.0f}"
    return f"{value:#.3g}"


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


# (header, getter) pairs of the generic results table.
RESULT_COLUMNS: tuple[tuple[str, Callable[[BenchResult], Any]], ...] = (
    ("name", lambda r: r.name),
    ("batch", lambda r: r.batch),
    ("median ms", lambda r: r.median_ms),
    ("min ms", lambda r: r.min_ms),
    ("p90 ms", lambda r: r.p90_ms),
    ("std ms", lambda r: r.std_ms),
    ("n", lambda r: r.repeats),
    ("items/s", lambda r: r.items_per_s),
    ("GFLOP/item", lambda r: None if r.flops_per_item is None else r.flops_per_item / 1e9),
    ("GFLOP/s", lambda r: r.gflops_per_s),
    ("FLOP/byte", lambda r: r.arithmetic_intensity),
    ("temp MiB", lambda r: _mb(r.memory.temp_bytes)),
    ("compile s", lambda r: r.compile_s),
)


def _width(file: Any) -> int:
    # A pipe, file or CI log gets the table's natural width: wrapped cells help no one there.
    if not getattr(file, "isatty", lambda: False)():
        return 1000
    return max(shutil.get_terminal_size(fallback=(160, 24)).columns, 80)


def render_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
    use_rich: bool | None = None,
    width: int | None = None,
) -> str:
    """Render rows as a table (first column left-aligned, the others right-aligned).

    Args:
        columns: Header cells.
        rows: Row cells, any values (formatted by `format_value`).
        title: Line above the table.
        caption: Line below the table.
        use_rich: Force (True) or avoid (False) rich; default: rich if importable.
        width: Line width for rich; default the terminal's, or unlimited when stdout is not a
            terminal.

    Returns:
        The table text, ending in a newline.
    """
    cells = [[format_value(v) for v in row] for row in rows]
    if use_rich is not False:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if use_rich:
                raise
        else:
            table = Table(
                title=title, caption=caption, title_justify="left", caption_justify="left"
            )
            first = max([len(r[0]) for r in cells if r] + [len(columns[0]) if columns else 0])
            for i, c in enumerate(columns):
                if i == 0:  # names are never cut
                    table.add_column(c, justify="left", no_wrap=True, min_width=first)
                else:
                    table.add_column(c, justify="right")
            for row in cells:
                table.add_row(*row)
            buf = io.StringIO()
            width = _width(sys.stdout) if width is None else width
            Console(file=buf, width=width, force_terminal=False, color_system=None).print(table)
            return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(row: Sequence[str]) -> str:
        parts = [
            s.ljust(w) if i == 0 else s.rjust(w)
            for i, (s, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    if caption:
        out.append(caption)
    return "\n".join(out) + "\n"


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
    file: io.TextIOBase | None = None,
) -> None:
    """Print `render_table(columns, rows, ...)` to `file` (default stdout)."""
    file = file or sys.stdout
    text = render_table(columns, rows, title=title, caption=caption, width=_width(file))
    file.write(text)


def print_results(
    results: Sequence[BenchResult],
    *,
    title: str | None = None,
    columns: Mapping[str, Callable[[BenchResult], Any]] | None = None,
    file: io.TextIOBase | None = None,
) -> None:
    """Print the generic results table, captioned with the device, versions and commit.

    Args:
        results: Results to show, one row each.
        title: Line above the table.
        columns: Header -> getter; default `RESULT_COLUMNS`.
        file: Where to print (default stdout).
    """
    cols = dict(columns or RESULT_COLUMNS)
    rows = [[get(r) for get in cols.values()] for r in results]
    caption = environment_line(results[0]) if results else None
    print_table(list(cols), rows, title=title, caption=caption, file=file)


def device_label(result: BenchResult) -> str:
    """Short device name: the accelerator's kind, or the CPU model and core count."""
    e = result.env
    if e.platform == "cpu" and e.cpu_model:
        return f"{e.cpu_model} ({e.cpu_count} cores)"
    return e.device_kind


def environment_line(result: BenchResult) -> str:
    """One line naming the device, jax version, commit and time of a result."""
    e = result.env
    device = f"{e.device_kind} x{e.device_count} ({e.platform})"
    if e.platform == "cpu" and e.cpu_model:
        device += f", {e.cpu_model}, {e.cpu_count} cores"
    return (
        f"{device}; jax {e.jax_version}, jaxlib {e.jaxlib_version}; "
        f"commit {e.git_commit or 'unknown'}; {e.timestamp_utc}"
    )


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):  # ties share their average rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def spearman(x: Sequence[float | int] | np.ndarray, y: Sequence[float | int] | np.ndarray) -> float:
    """Spearman rank correlation (numpy only; ties get average ranks).

    Args:
        x: First variable, e.g. MACs per image.
        y: Second variable, e.g. measured throughput; same length as `x`.

    Returns:
        rho in [-1, 1]; NaN when fewer than 2 points or a variable is constant.

    Raises:
        ValueError: If the lengths differ.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(xa) < 2:
        return float("nan")
    rx, ry = _ranks(xa), _ranks(ya)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def inverted_pairs(
    labels: Sequence[str], cost: Sequence[float | int], speed: Sequence[float | int]
) -> list[tuple[str, str]]:
    """Pairs in which the costlier item is also the faster one (cost does not predict speed).

    Args:
        labels: Item names.
        cost: e.g. MACs per image (higher = more work).
        speed: e.g. images per second (higher = faster).

    Returns:
        `(costlier_and_faster, cheaper_and_slower)` label pairs, ordered by the costlier item's
        cost; ties in either variable are not inversions.
    """
    order = sorted(range(len(labels)), key=lambda i: cost[i])
    return [
        (labels[i], labels[j])
        for i in order
        for j in order
        if cost[i] > cost[j] and speed[i] > speed[j]
    ]


def paired_ratio(
    a: BenchResult,
    b: BenchResult,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float] | None:
    """a's time over b's, round by round, for two results of one `benchmark_interleaved` group.

    The estimate is the median over rounds of a.times_ms[i] / b.times_ms[i]; the interval is a
    percentile bootstrap of that median (rounds resampled with replacement, seeded). Pairing by
    round cancels what slows a whole round (machine drift, a neighbour's job), which is what
    makes a few-percent difference between two ~100 ms CPU steps measurable at all.

    Args:
        a: The numerator's result.
        b: The denominator's result, timed in the same rounds.
        confidence: Coverage of the interval, in (0, 1).
        resamples: Bootstrap resamples (>= 1).
        seed: Seed of the resampling.

    Returns:
        (median ratio, interval low, interval high), or None when a and b were not timed in the
        same interleaved rounds (then only their medians compare).

    Raises:
        ValueError: If `confidence` is not in (0, 1) or `resamples` < 1.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    paired = b.name in a.extra.get("interleaved_with", ()) and a.repeats == b.repeats
    if not paired or a.repeats == 0:
        return None
    ratios = np.asarray(a.times_ms) / np.asarray(b.times_ms)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ratios), size=(resamples, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(np.median(ratios)), float(low), float(high)


def ratio_cell(a: BenchResult | None, b: BenchResult | None, *, percent: bool = False):
    """a's step time over b's, for a table cell.

    Args:
        a: The numerator's result (None or compiled-only: no cell).
        b: The denominator's result.
        percent: Give the excess over b in % ("+4.1") instead of the ratio ("1.041").

    Returns:
        "estimate [low, high]" (`paired_ratio`'s 95% interval) when a and b were timed in the
        same interleaved rounds; else the ratio of their medians as a float; None when either
        has no times.
    """
    if a is None or b is None or not a.median_ms or not b.median_ms:
        return None
    paired = paired_ratio(a, b)
    if paired is None:
        ratio = a.median_ms / b.median_ms
        return 100 * (ratio - 1) if percent else ratio
    if percent:
        estimate, low, high = (100 * (x - 1) for x in paired)
        return f"{estimate:+.1f} [{low:+.1f}, {high:+.1f}]"
    return "{:.3f} [{:.3f}, {:.3f}]".format(*paired)
