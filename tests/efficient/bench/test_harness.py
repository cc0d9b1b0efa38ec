"""Tests of the timing harness: XLA FLOP counts, timing statistics, JSON, lower-only, tables."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.bench import (
    BenchCase,
    BenchResult,
    CompiledCase,
    MemoryStats,
    append_jsonl,
    benchmark,
    benchmark_interleaved,
    compile_case,
    compile_cases,
    cost_stats,
    environment,
    git_commit,
    materialize,
    memory_stats,
    paired_ratio,
    ratio_cell,
    read_jsonl,
    render_table,
    synthetic_variables,
)
from efficient.bench.report import format_value, inverted_pairs, spearman


def _matmul(a, b):
    return a @ b


def _struct(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def test_matmul_flops_and_bytes_are_exact():
    m, k, n = 64, 48, 32
    r = benchmark(_matmul, _struct(m, k), _struct(k, n), name="mm", lower_only=True)
    assert r.flops == 2 * m * n * k
    assert r.bytes_accessed == 4 * (m * k + k * n + m * n)
    assert r.arithmetic_intensity == pytest.approx(2 * m * n * k / (4 * (m * k + k * n + m * n)))
    assert r.memory.argument_bytes == 4 * (m * k + k * n)
    assert r.memory.output_bytes == 4 * m * n


def test_timing_statistics_and_derived_figures():
    a, b = jnp.ones((96, 64)), _struct(64, 80)
    r = benchmark(_matmul, a, b, name="mm", batch=96, warmup=2, repeats=7)
    assert r.repeats == 7 and r.warmup == 2 and not r.lower_only
    assert all(t > 0 for t in r.times_ms)
    assert r.min_ms <= r.median_ms <= r.max_ms
    assert r.median_ms <= r.p90_ms <= r.max_ms
    assert r.median_ms == pytest.approx(float(np.median(r.times_ms)))
    assert r.std_ms == pytest.approx(float(np.std(r.times_ms)))
    assert r.items_per_s == pytest.approx(96 / (r.median_ms / 1e3))
    assert r.gflops_per_s == pytest.approx(2 * 96 * 64 * 80 / (r.median_ms / 1e3) / 1e9)
    assert r.flops_per_item == pytest.approx(2 * 64 * 80)


def test_benchmarked_function_sees_materialized_arguments():
    seen = []

    def f(x, scale):
        seen.append(scale)  # traced once: a Python side effect at trace time only
        return x * scale

    r = benchmark(f, jnp.arange(4.0), 3.0, name="static", static_argnums=1, repeats=2, warmup=0)
    assert seen == [3.0] and r.repeats == 2


def test_invalid_counts_raise():
    with pytest.raises(ValueError, match="warmup"):
        benchmark(_matmul, _struct(2, 2), _struct(2, 2), name="x", warmup=-1)
    with pytest.raises(ValueError, match="repeats"):
        benchmark(_matmul, _struct(2, 2), _struct(2, 2), name="x", repeats=0)


def test_interleaved_rounds_call_each_case_once_in_shuffled_order():
    calls = []

    def case(tag):
        def fn(x):
            # Runs at call time, not trace time: records the order of the compiled calls.
            jax.experimental.io_callback(lambda: calls.append(tag), None, ordered=True)
            return x * tag

        return BenchCase(fn=fn, args=(jnp.ones(4),), name=f"c{tag}", batch=4, extra={"k": tag})

    results = benchmark_interleaved([case(1), case(2), case(3)], warmup=1, repeats=8, seed=3)
    assert [r.name for r in results] == ["c1", "c2", "c3"]
    assert all(r.repeats == 8 and r.warmup == 1 for r in results)
    assert results[0].extra == {"k": 1, "interleaved_with": ["c2", "c3"]}
    rounds = [tuple(calls[i : i + 3]) for i in range(0, len(calls), 3)]
    assert len(rounds) == 9 and all(sorted(r) == [1, 2, 3] for r in rounds)
    assert len(set(rounds)) > 1  # the order is shuffled, not fixed
    single = benchmark_interleaved([case(5)], warmup=0, repeats=2)[0]
    assert "interleaved_with" not in single.extra and single.repeats == 2


def test_interleaved_rejects_bad_groups():
    case = BenchCase(fn=_matmul, args=(_struct(2, 2), _struct(2, 2)), name="x")
    with pytest.raises(ValueError, match="unique names"):
        benchmark_interleaved([case, case])
    with pytest.raises(ValueError, match="unique names"):
        benchmark_interleaved([])
    with pytest.raises(ValueError, match="repeats"):
        benchmark_interleaved([case], repeats=0)
    with pytest.raises(ValueError, match="compile_workers"):
        benchmark_interleaved([case, BenchCase(fn=_matmul, args=case.args, name="y")],
                              compile_workers=0)  # fmt: skip


def test_interleaved_compiles_on_threads_like_one_by_one():
    """Cases compiled side by side on threads: each keeps its own function, static arguments,
    FLOPs and names (nothing crossed between threads), as when compiled one after another."""

    def scaled(x, power):
        return x**power

    cases = [
        BenchCase(fn=_matmul, args=(_struct(8, 16), _struct(16, 4)), name="mm"),
        BenchCase(fn=scaled, args=(jnp.full(3, 2.0), 3), name="cube", static_argnums=1),
        BenchCase(fn=scaled, args=(jnp.full(3, 2.0), 2), name="square", static_argnums=1),
    ]
    threaded = benchmark_interleaved(cases, warmup=0, repeats=2, compile_workers=3)
    serial = benchmark_interleaved(cases, warmup=0, repeats=2, compile_workers=1)
    assert [r.name for r in threaded] == ["mm", "cube", "square"]
    for a, b in zip(threaded, serial, strict=True):
        assert (a.name, a.flops, a.repeats) == (b.name, b.flops, b.repeats)
        assert a.compile_s > 0 and a.lower_s > 0
    assert threaded[0].flops == 2 * 8 * 16 * 4


def test_a_compiled_case_is_timed_on_its_executable_not_traced_again():
    traces = []

    def scaled(x, power):
        traces.append(power)  # runs at trace time only
        return x**power

    compiled = compile_case(
        BenchCase(fn=scaled, args=(_struct(3), 3), name="cube", static_argnums=1, extra={"k": 1})
    )
    assert isinstance(compiled, CompiledCase) and traces == [3]
    only = compiled.result({"skipped": "why"})
    assert only.lower_only and only.times_ms == () and only.extra == {"k": 1, "skipped": "why"}
    # Real arguments of the compiled shapes, beside a case compiled here: one group, one trace.
    fresh = BenchCase(fn=scaled, args=(jnp.full(3, 2.0), 2), name="square", static_argnums=1)
    cube, square = benchmark_interleaved(
        [compiled.with_args((jnp.full(3, 2.0), 3)), fresh], warmup=0, repeats=2
    )
    assert traces == [3, 2]
    assert (cube.name, cube.repeats, cube.extra) == (
        "cube",
        2,
        {"k": 1, "interleaved_with": ["square"]},
    )
    assert cube.flops == compiled.fields["flops"] and not cube.lower_only
    assert square.extra == {"interleaved_with": ["cube"]}
    with pytest.raises(ValueError, match="unique names"):
        benchmark_interleaved([compiled, dataclasses.replace(fresh, name="cube")])
    # Several at once, on threads: each keeps its own function and static argument.
    cases = [dataclasses.replace(fresh, name=f"p{n}", args=(_struct(3), n)) for n in (4, 5)]
    four, five = compile_cases(cases, compile_workers=2)
    assert sorted(traces[2:]) == [4, 5] and (four.case.name, five.case.name) == ("p4", "p5")
    (timed,) = benchmark_interleaved([five.with_args((jnp.full(3, 2.0), 5))], warmup=0, repeats=1)
    assert timed.name == "p5" and len(traces) == 4


def _timed(name, times, other):
    env = environment()
    return BenchResult(
        name=name, times_ms=tuple(times), env=env, extra={"interleaved_with": [other]}
    )


def _drifting_pair(noise: float):
    """40 rounds whose machine speed varies 3x; a is 10% slower than b in every round, with
    call noise of +-`noise`. Returns (a, b, a_times, b_times)."""
    rng = np.random.default_rng(0)
    drift = rng.uniform(1.0, 3.0, size=40)
    b_times = 100 * drift * rng.uniform(1 - noise, 1 + noise, size=40)
    a_times = 1.1 * 100 * drift * rng.uniform(1 - noise, 1 + noise, size=40)
    return _timed("a", a_times, "b"), _timed("b", b_times, "a"), a_times, b_times


def test_paired_ratio_cancels_round_drift():
    # The ratio of medians wanders with the rounds' speed, the paired ratio does not.
    a, b, a_times, b_times = _drifting_pair(0.01)
    estimate, low, high = paired_ratio(a, b)
    assert estimate == pytest.approx(float(np.median(a_times / b_times)))
    assert low <= estimate <= high
    assert low > 1.08 and high < 1.12
    assert paired_ratio(a, b) == paired_ratio(a, b)  # seeded
    lone = BenchResult(name="b", times_ms=tuple(b_times), env=environment())
    assert paired_ratio(lone, a) is None  # not from one interleaved group
    assert paired_ratio(a, _timed("b", b_times[:5], "a")) is None  # rounds do not align
    with pytest.raises(ValueError, match="confidence"):
        paired_ratio(a, b, confidence=1.0)


def test_ratio_cell_pairs_where_it_can():
    a, b = _timed("a", [110.0, 220.0, 330.0], "b"), _timed("b", [100.0, 200.0, 300.0], "a")
    assert ratio_cell(a, b) == "1.100 [1.100, 1.100]"
    assert ratio_cell(a, b, percent=True) == "+10.0 [+10.0, +10.0]"
    # Timed apart: the ratio of medians, a number.
    lone_a = BenchResult(name="a", times_ms=(110.0, 400.0, 330.0), env=environment())
    lone_b = BenchResult(name="b", times_ms=(100.0, 200.0, 300.0), env=environment())
    assert ratio_cell(lone_a, lone_b) == pytest.approx(330 / 200)
    assert ratio_cell(lone_a, lone_b, percent=True) == pytest.approx(65.0)
    assert ratio_cell(None, b) is None
    assert ratio_cell(a, BenchResult(name="b", lower_only=True, env=environment())) is None


def test_lower_only_does_not_allocate():
    # Two 100k x 100k f32 operands would take 80 GB (and the output 40 GB more).
    before = len(jax.live_arrays())
    big = _struct(100_000, 100_000)
    r = benchmark(_matmul, big, big, name="huge", batch=100_000, lower_only=True)
    assert len(jax.live_arrays()) == before
    assert r.lower_only and r.times_ms == () and r.median_ms is None and r.items_per_s is None
    # XLA accumulates the count in floating point: 2e15 only to ~1e-8 relative.
    assert r.flops == pytest.approx(2 * 100_000**3, rel=1e-6)
    assert r.memory.argument_bytes == 2 * 4 * 100_000**2
    assert r.memory.output_bytes == 4 * 100_000**2


def test_json_round_trip(tmp_path):
    r = benchmark(
        _matmul, _struct(8, 8), _struct(8, 8), name="mm", batch=8, repeats=3, extra={"model": "x"}
    )
    d = json.loads(r.to_json())
    assert d["median_ms"] == pytest.approx(r.median_ms)
    assert d["items_per_s"] == pytest.approx(r.items_per_s)
    assert d["env"]["device_kind"] == jax.devices()[0].device_kind
    assert BenchResult.from_dict(d) == r
    path = tmp_path / "sub" / "results.jsonl"
    append_jsonl([r], path)
    append_jsonl([r, r], path)
    assert len(path.read_text().splitlines()) == 3
    assert read_jsonl(path) == [r, r, r]


def test_materialize_fills_structs_and_keeps_arrays():
    tree = {
        "f": _struct(3, 4),
        "i": _struct(5, dtype=jnp.int32),
        "k": jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
        "a": np.arange(3, dtype=np.float32),
    }
    out = materialize(tree)
    assert out["f"].shape == (3, 4) and out["f"].dtype == jnp.float32
    assert float(jnp.std(out["f"])) > 0
    assert out["i"].dtype == jnp.int32 and not out["i"].any()
    assert jnp.issubdtype(out["k"].dtype, jax.dtypes.prng_key)
    assert isinstance(out["a"], jax.Array) and np.array_equal(out["a"], tree["a"])


class _FakeCompiled:
    def __init__(self, cost, memory):
        self._cost, self._memory = cost, memory

    def cost_analysis(self):
        if isinstance(self._cost, Exception):
            raise self._cost
        return self._cost

    def memory_analysis(self):
        if isinstance(self._memory, Exception):
            raise self._memory
        return self._memory


class _PartialMemory:
    argument_size_in_bytes = 10
    temp_size_in_bytes = 7


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        ({"flops": 6.0, "bytes accessed": 4.0}, (6.0, 4.0)),
        ([{"flops": 2.0, "bytes accessed": 1.0}, {"flops": 3.0}], (5.0, 1.0)),  # old jax: a list
        (None, (None, None)),
        ({"flops": -1.0}, (None, None)),  # XLA's "unknown"
        (NotImplementedError("no cost model"), (None, None)),
    ],
)
def test_cost_stats_is_robust(cost, expected):
    assert cost_stats(_FakeCompiled(cost, None)) == expected


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (None, MemoryStats()),
        (RuntimeError("unsupported"), MemoryStats()),
        (_PartialMemory(), MemoryStats(argument_bytes=10, temp_bytes=7)),
        ([_PartialMemory()], MemoryStats(argument_bytes=10, temp_bytes=7)),
        ({"output_size_in_bytes": 3}, MemoryStats(output_bytes=3)),
    ],
)
def test_memory_stats_is_robust(memory, expected):
    stats = memory_stats(_FakeCompiled(None, memory))
    assert stats == expected
    assert stats.total_bytes is None  # some part is missing


def test_environment_has_versions_and_no_hostname():
    import socket

    env = environment()
    assert env.platform == jax.devices()[0].platform and env.device_count == jax.device_count()
    assert env.jax_version == jax.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", env.timestamp_utc)
    assert env.git_commit is None or re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?", env.git_commit)
    host = socket.gethostname()
    assert len(host) < 4 or host not in json.dumps(BenchResult(name="x", env=env).to_dict())


def _git_repository(path):
    """`path` made a repository with one commit (f.txt); returns a `git -C path` runner."""

    def git(*args):
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)

    git("init", "-q")
    (path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "m")
    return git


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_clean_dirty_and_absent(tmp_path):
    assert git_commit(str(tmp_path)) is None  # not a repository
    git = _git_repository(tmp_path)
    clean = git_commit(str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{4,40}", clean)
    (tmp_path / "untracked.txt").write_text("u")  # untracked files do not make it dirty
    assert git_commit(str(tmp_path)) == clean
    (tmp_path / "f.txt").write_text("b")
    assert git_commit(str(tmp_path)) == clean + "+dirty"
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "n")
    again = git_commit(str(tmp_path))  # the same process sees the new commit (no stale cache)
    assert re.fullmatch(r"[0-9a-f]{4,40}", again) and again != clean


def test_spearman_matches_the_no_ties_formula():
    rng = np.random.default_rng(0)
    x, y = rng.permutation(9).astype(float), rng.permutation(9).astype(float)
    d2 = float(np.sum((x - y) ** 2))  # permutations of 0..8 are their own ranks
    assert spearman(x * 10 + 3, np.exp(y)) == pytest.approx(1 - 6 * d2 / (9 * (81 - 1)))
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # Ties take their average rank: ranks (1.5, 1.5, 3) vs (1, 2, 3).
    tied = np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1]
    assert spearman([5, 5, 9], [1, 2, 3]) == pytest.approx(tied)
    assert np.isnan(spearman([1, 1], [2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1])


def test_inverted_pairs():
    labels = ["small", "mid", "big"]
    macs = [1.0, 2.0, 3.0]
    assert inverted_pairs(labels, macs, [30.0, 20.0, 10.0]) == []  # MACs predict speed
    assert inverted_pairs(labels, macs, [10.0, 30.0, 20.0]) == [("mid", "small"), ("big", "small")]


def test_tables_show_every_cell():
    rows = [["a", 1234567, 0.012345, None], ["bb", 12.0, float("nan"), True]]
    for use_rich in (False, True):
        text = render_table(["name", "n", "x", "y"], rows, title="T", use_rich=use_rich)
        for cell in ("T", "name", "1,234,567", "0.0123", "12", "-", "True"):
            assert cell in text, (use_rich, cell)
    assert format_value(3.14159) == "3.14" and format_value(1500.4) == "1,500"


def test_synthetic_variables_fan_in_scaling():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(256)(x)
            return nn.LayerNorm()(x)

    x = jnp.zeros((1, 512))
    shapes = jax.eval_shape(lambda k: Net().init(k, x), jax.random.key(0))
    v = synthetic_variables(shapes)["params"]
    kernel = np.asarray(v["Dense_0"]["kernel"])
    assert kernel.shape == (512, 256) and kernel.dtype == np.float32
    assert kernel.std() == pytest.approx(1 / np.sqrt(512), rel=0.02)
    assert not np.asarray(v["Dense_0"]["bias"]).any()
    assert (np.asarray(v["LayerNorm_0"]["scale"]) == 1).all()
    assert not np.asarray(v["LayerNorm_0"]["bias"]).any()


def test_narrow_tables_never_cut_names():
    name = "lowformer/deit_small/throughput"
    text = render_table(["name", "median ms", "items/s"], [[name, 1.5, 2000.0]], width=50)
    assert name in text
    wide = render_table(["name", "median ms", "items/s"], [[name, 1.5, 2000.0]], width=1000)
    assert max(len(line) for line in wide.splitlines()) < 80  # natural width, not padded


def test_p90_is_numpys_linear_90th_percentile():
    # Sorted 1, 1, 2, 3, 4, 5, 6, 9: position 0.9 * 7 = 6.3 -> 6 + 0.3 * (9 - 6) = 6.9.
    r = BenchResult(name="t", times_ms=(3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0), env=environment())
    assert r.p90_ms == pytest.approx(6.9)
    assert r.p90_ms == pytest.approx(float(np.percentile(r.times_ms, 90)))
    assert BenchResult(name="t", env=environment()).p90_ms is None


def test_memory_total_subtracts_aliased_bytes():
    stats = MemoryStats(argument_bytes=100, output_bytes=40, temp_bytes=7, alias_bytes=30)
    assert stats.total_bytes == 117  # 100 + 40 + 7 - 30: an aliased output reuses its input
    assert dataclasses.replace(stats, alias_bytes=None).total_bytes == 147


def test_inverted_pairs_ignore_ties():
    labels = ["a", "b", "c"]
    # a and b cost the same: neither is "the costlier", whichever is faster.
    assert inverted_pairs(labels, [2.0, 2.0, 1.0], [10.0, 20.0, 30.0]) == []
    assert inverted_pairs(labels, [2.0, 2.0, 1.0], [20.0, 10.0, 30.0]) == []
    # Equal speed is no inversion either; the costlier and faster one still is.
    assert inverted_pairs(labels, [2.0, 3.0, 1.0], [5.0, 5.0, 5.0]) == []
    assert inverted_pairs(labels, [2.0, 2.0, 1.0], [10.0, 20.0, 15.0]) == [("b", "c")]


def test_spearman_averages_tied_ranks_as_scipy():
    # Average ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): rho = 4.5 / sqrt(4.5 * 5).
    x, y = [1, 2, 2, 3], [1, 2, 3, 4]
    want = 4.5 / np.sqrt(4.5 * 5.0)
    assert spearman(x, y) == pytest.approx(want, rel=1e-12)
    stats = pytest.importorskip("scipy.stats")
    assert want == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, 12), rng.integers(0, 3, 12)  # many ties on both sides
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)


def test_format_value_at_100():
    assert format_value(100.0) == "100" and format_value(-100.0) == "-100"
    # 99.95 <= |x| < 100 rounds to 100 at 3 digits: no trailing "100." from "#.3g".
    assert format_value(99.95) == "100" and format_value(99.97) == "100"
    assert format_value(-99.97) == "-100"
    assert format_value(99.94999999999999) == "99.9" and format_value(99.9) == "99.9"
    assert format_value(12.0) == "12.0" and format_value(100.4) == "100"


def _exact_bootstrap_quantile(ratios, q):
    """The q-quantile (smallest value whose CDF reaches q) of the median over all n^n
    equally likely resamples with replacement."""
    import itertools

    medians = np.sort(
        [np.median(ratios[list(p)]) for p in itertools.product(range(len(ratios)), repeat=5)]
    )
    return float(medians[int(np.ceil(q * len(medians))) - 1])


def test_paired_ratio_interval_is_the_bootstrap_of_the_median():
    """n = 5 rounds, ratios 0.9, 1.05, 1.1, 1.2, 1.5 (out of order). Over all 5^5 resamples the
    median is r_k with P(median <= r_k) = P(Binomial(5, k/5) >= 3) = 0.058, 0.317, 0.683, 0.942:
    the 95% interval is [r1, r5] and the 50% one [r2, r4], each tail 3-7 points from a jump,
    which 20,000 resamples (sd ~0.2-0.3 points) cannot cross."""
    b_times = [100.0, 200.0, 100.0, 50.0, 100.0]
    a_times = [120.0, 180.0, 150.0, 52.5, 110.0]  # ratios 1.2, 0.9, 1.5, 1.05, 1.1
    a, b = _timed("a", a_times, "b"), _timed("b", b_times, "a")
    ratios = np.asarray(a_times) / np.asarray(b_times)
    r = np.sort(ratios)
    for confidence, (low, high) in ((0.95, (r[0], r[4])), (0.5, (r[1], r[3]))):
        tail = (1 - confidence) / 2
        assert (low, high) == (
            _exact_bootstrap_quantile(ratios, tail),
            _exact_bootstrap_quantile(ratios, 1 - tail),
        )
        got = paired_ratio(a, b, confidence=confidence, resamples=20_000, seed=3)
        assert got == pytest.approx((1.1, low, high), rel=1e-12)


def test_paired_ratio_intervals_nest_and_follow_the_seeded_resamples():
    a, b, a_times, b_times = _drifting_pair(0.05)
    intervals = [paired_ratio(a, b, confidence=c) for c in (0.5, 0.9, 0.95)]
    for (e1, low1, high1), (e2, low2, high2) in zip(intervals[:-1], intervals[1:], strict=True):
        assert e1 == e2 and low2 <= low1 < high1 <= high2
    assert intervals[1][1] < intervals[0][1] and intervals[0][2] < intervals[1][2]
    # The documented convention: rounds drawn with numpy's default_rng(seed).integers, the
    # percentile bootstrap (numpy's linear percentiles) of the per-resample median.
    ratios = a_times / b_times
    picks = np.random.default_rng(7).integers(0, 40, size=(500, 40))
    medians = np.sort([np.median(ratios[p]) for p in picks])
    want = np.percentile(medians, [5.0, 95.0])
    got = paired_ratio(a, b, confidence=0.9, resamples=500, seed=7)
    assert got[1:] == pytest.approx(tuple(want), rel=1e-12)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_of_an_installed_copy_is_none_not_the_surrounding_repository(tmp_path):
    """A venv inside the user's own project must not record that project's commit as ours."""
    import pallas_kernels._bench as bench

    _git_repository(tmp_path)
    site = tmp_path / ".venv" / "lib" / "python3.12" / "site-packages"
    (site / "pallas_kernels").mkdir(parents=True)
    (site / "pallas_kernels" / "__init__.py").write_text("")
    shutil.copy(bench.__file__, site / "pallas_kernels" / "_bench.py")
    env = {k: v for k, v in os.environ.items() if k != "EFFICIENT_GIT_COMMIT"}
    code = "import pallas_kernels._bench as b; print(b.__file__); print(b.git_commit())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)},
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out == [str(site / "pallas_kernels" / "_bench.py"), "None"]
    assert git_commit(str(tmp_path)) is not None  # asked explicitly, the repository answers
    # From this checkout (where the tests run) the default is the checkout's commit.
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=pathlib.Path(bench.__file__).parents[1],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if head and "EFFICIENT_GIT_COMMIT" not in os.environ:
        assert git_commit().removesuffix("+dirty") == head
