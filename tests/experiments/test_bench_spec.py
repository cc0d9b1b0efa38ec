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


class _Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


@pytest.mark.parametrize(
    ("stats", "free"),
    [
        ({"bytes_limit": 80 * 2**30, "bytes_in_use": 2**30}, 79 * 2**30),
        ({"bytes_limit": 2**30}, 2**30),
        ({"bytes_in_use": 5}, None),  # no pool limit: unknown
        (None, None),  # the platform keeps no statistics
    ],
)
def test_free_memory_on_an_accelerator_is_the_device_pool_left(monkeypatch, stats, free):
    monkeypatch.setattr(bench_spec.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(bench_spec.jax, "local_devices", lambda: [_Device(stats)])
    assert bench_spec.platform() == "accelerator"
    assert bench_spec._available_bytes() == free


def test_rows_are_timed_without_a_size_check_where_free_memory_is_unknown(monkeypatch):
    made = []
    monkeypatch.setattr(bench_spec, "_available_bytes", lambda: None)
    results = list(time_side_by_side(_rows(made), BenchArgs(), warmup=0, repeats=1))
    assert made == ["x", "y"] and all(r.repeats == 1 and "skipped" not in r.extra for r in results)


def test_protocol_picks_the_platform_and_mode_defaults_unless_overridden():
    defaults = {
        ("cpu", "train"): (1, 3),
        ("accelerator", "train"): (5, 20),
        ("cpu", "eval"): (0, 2),
    }
    assert bench_spec.protocol(BenchArgs(), defaults, "train") == (1, 3)
    assert bench_spec.protocol(BenchArgs(warmup=4), defaults, "eval") == (4, 2)
    assert bench_spec.protocol(BenchArgs(repeats=9)) == (1, 9)  # LONG_STEP_PROTOCOL on CPU
    with pytest.raises(ValueError, match=r"mode='trian': must be one of \['eval', 'train'\]"):
        bench_spec.protocol(BenchArgs(), defaults, "trian")


def test_bench_args_refuse_an_unknown_precision():
    with pytest.raises(ValueError, match="precision='hihg': expected one of 'default'"):
        BenchArgs(precision="hihg")


def test_a_size_checked_row_is_timed_on_the_executable_of_its_check():
    traces = []

    def row(name):
        def fn(x):
            traces.append(name)  # at trace time only
            return x @ x

        case = BenchCase(fn=fn, args=(jax.ShapeDtypeStruct((8, 8), jnp.float32),), name=name)
        return SideBySide(case=case, make_args=lambda: (jnp.ones((8, 8)),))

    results = list(time_side_by_side([row("x"), row("y")], BenchArgs(), warmup=0, repeats=2))
    assert bench_spec._available_bytes() is not None  # the size check ran
    assert sorted(traces) == ["x", "y"] and all(r.repeats == 2 for r in results)
