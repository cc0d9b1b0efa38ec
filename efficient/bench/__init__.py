"""Timing harness: compiled FLOPs/bytes/memory, warm-up, block_until_ready, median; tables."""

from efficient.bench.harness import (
    BenchResult,
    Environment,
    MemoryStats,
    append_jsonl,
    benchmark,
    cost_stats,
    environment,
    git_commit,
    materialize,
    memory_stats,
    read_jsonl,
    synthetic_variables,
)
from efficient.bench.report import environment_line, print_results, print_table, render_table

__all__ = [
    "BenchResult",
    "Environment",
    "MemoryStats",
    "append_jsonl",
    "benchmark",
    "cost_stats",
    "environment",
    "environment_line",
    "git_commit",
    "materialize",
    "memory_stats",
    "print_results",
    "print_table",
    "read_jsonl",
    "render_table",
    "synthetic_variables",
]
