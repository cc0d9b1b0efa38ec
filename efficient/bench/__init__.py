"""Timing harness: compiled FLOPs/bytes/memory, warm-up, block_until_ready, median; tables."""

from efficient.bench.harness import (
    BenchCase,
    BenchResult,
    Environment,
    MemoryStats,
    append_jsonl,
    benchmark,
    benchmark_interleaved,
    cost_stats,
    environment,
    git_commit,
    materialize,
    memory_stats,
    read_jsonl,
    synthetic_variables,
)
from efficient.bench.report import (
    environment_line,
    paired_ratio,
    print_results,
    print_table,
    ratio_cell,
    render_table,
)

__all__ = [
    "BenchCase",
    "BenchResult",
    "Environment",
    "MemoryStats",
    "append_jsonl",
    "benchmark",
    "benchmark_interleaved",
    "cost_stats",
    "environment",
    "environment_line",
    "git_commit",
    "materialize",
    "memory_stats",
    "paired_ratio",
    "print_results",
    "print_table",
    "ratio_cell",
    "read_jsonl",
    "render_table",
    "synthetic_variables",
]
