"""The side-by-side helpers of experiments/benches/spec.py, on tiny functions."""

import jax
import jax.numpy as jnp
import pytest

from efficient.bench import BenchCase
from experiments.benches import spec as bench_spec
from experiments.benches.spec import (
    BenchArgs,
    BenchSpec,
    SideBySide,
    group_models,
    time_side_by_side,
)

SPEC = BenchSpec(description="test", run=lambda args: iter(()), models=("a_1", "b_1", "a_2"))


def test_group_models_keeps_the_order_and_validates():
    assert group_models(SPEC, None, lambda key: key[-1]) == [["a_1", "b_1"], ["a_2"]]
    assert group_models(SPEC, ["a_2", "A-1"], lambda key: key[0]) == [["a_2", "a_1"]]
    with pytest.raises(ValueError, match="unknown model 'c_1'"):
        group_models(SPEC, ["c_1"], lambda key: key)


def _rows(made):
    def row(name, scale):
        def make_args():
            made.append(name)
            return (jnp.full((8, 8), scale),)

        case = BenchCase(fn=lambda x: x @ x, args=(jax.ShapeDtypeStruct((8, 8), jnp.float32),),
                         name=name, extra={"k": name})  # fmt: skip
        return SideBySide(case=case, make_args=make_args)

    return [row("x", 1.0), row("y", 2.0)]


def test_timed_rows_share_rounds_and_build_their_arguments_once():
    made = []
    results = list(time_side_by_side(_rows(made), BenchArgs(), warmup=0, repeats=3))
    assert [r.name for r in results] == ["x", "y"] and made == ["x", "y"]
    assert all(r.repeats == 3 and not r.lower_only for r in results)
    assert results[0].extra["interleaved_with"] == ["y"]
    assert results[0].flops == 2 * 8**3


def test_lower_only_and_too_big_rows_never_build_arguments(monkeypatch):
    made = []
    results = list(time_side_by_side(_rows(made), BenchArgs(lower_only=True), warmup=0, repeats=1))
    assert made == [] and all(r.lower_only and r.times_ms == () for r in results)
    monkeypatch.setattr(bench_spec, "_available_bytes", lambda: 16)  # nothing fits
    results = list(time_side_by_side(_rows(made), BenchArgs(), warmup=0, repeats=1))
    assert made == [] and all(r.extra["skipped"].startswith("needs ") for r in results)
    # Without the size check the same rows are timed.
    results = list(time_side_by_side(_rows(made), BenchArgs(), warmup=0, repeats=1,
                                     size_check=False))  # fmt: skip
    assert made == ["x", "y"] and all(r.repeats == 1 for r in results)
