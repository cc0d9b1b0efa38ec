"""The kernel benchmarks run end to end in quick mode and write JSON with provenance."""

import dataclasses
import json

import jax
import pytest

from pallas_kernels.fft_conv import bench as fft_conv_bench
from pallas_kernels.rational import bench as rational_bench
from tests.pallas_kernels.fft_conv.common import equations


@pytest.mark.parametrize("bench", [fft_conv_bench, rational_bench], ids=["fft_conv", "rational"])
def test_quick_bench_writes_results(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--section", "cpu", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["env"]["platform"] == "cpu" and report["env"]["jax_version"]
    rows = report["results"]
    assert rows and all(r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] for r in rows)


@pytest.mark.parametrize("bench", [fft_conv_bench, rational_bench], ids=["fft_conv", "rational"])
def test_rows_compiled_ahead_on_threads_time_like_inline(bench, tmp_path):
    """--compile-workers: every row still comes back once, with its compile time, and the same
    FLOPs as the inline compile (GPU sessions use threads; CPU defaults to inline)."""
    size = ["--sizes", "256"] if bench is fft_conv_bench else ["--dims", "64"]
    rows = {}
    for workers in ("0", "2"):
        out = tmp_path / f"bench{workers}.json"
        bench.main(["--quick", "--section", "cpu", *size, "--out", str(out)]
                   + ["--compile-workers", workers])  # fmt: skip
        results = json.loads(out.read_text())["results"]
        rows[workers] = {(r["implementation"], r["mode"]): r for r in results}
        assert len(rows[workers]) == len(results)  # no row twice
        assert all(r["median_ms"] > 0 and r["compile_s"] > 0 for r in results)
    assert rows["0"].keys() == rows["2"].keys()
    for bad in ("-1", "two"):  # a usage error naming the option, before any row
        with pytest.raises(SystemExit):
            bench.main(["--quick", "--section", "cpu", "--compile-workers", bad])
    for key, row in rows["2"].items():
        assert row["flops"] == rows["0"][key]["flops"], key


def test_ahead_compiler_order_errors_and_inline_mode():
    import jax
    import jax.numpy as jnp

    from pallas_kernels._bench import AheadCompiler

    x = jax.ShapeDtypeStruct((4,), jnp.float32)
    ahead = AheadCompiler(2)
    ahead.submit("double", lambda v: 2 * v, x)
    ahead.submit("bad", lambda v: v @ jnp.ones((3, 3)), x)  # a shape error while lowering
    assert ahead.next_ready(["never-submitted", "double"]) == "never-submitted"
    assert ahead.get("never-submitted") is None
    compiled, seconds = ahead.get("double")
    assert seconds > 0 and list(compiled(jnp.arange(4.0))) == [0.0, 2.0, 4.0, 6.0]
    assert ahead.next_ready(["bad"]) == "bad"
    with pytest.raises(TypeError):
        ahead.get("bad")
    ahead.shutdown()
    inline = AheadCompiler(0)
    inline.submit("double", lambda v: 2 * v, x)
    assert inline.get("double") is None  # time_fn compiles it
    with pytest.raises(ValueError, match="workers"):
        AheadCompiler(-1)


def test_rational_bench_records_the_tiling_that_ran(tmp_path):
    out = tmp_path / "bench.json"
    rational_bench.main(
        ["--quick", "--section", "cpu", "--dims", "64", "--out", str(out), "--implementations"]
        + ["xla", "interpret", "interpret:32x64l8c32-loop"]
    )
    rows = {r["implementation"]: r for r in json.loads(out.read_text())["results"]}
    assert "block_sizes" not in rows["xla"]
    assert rows["interpret"]["block_sizes"]["reduce"] == "tree"  # the CPU default
    loop = rows["interpret:32x64l8c32-loop"]["block_sizes"]
    assert (loop["block_rows"], loop["chunk_rows"], loop["reduce"]) == (32, 32, "loop")


def test_check_passes_in_interpret_mode_and_fails_on_a_wrong_kernel(tmp_path, monkeypatch):
    from pallas_kernels import check
    from pallas_kernels.rational import api

    out = tmp_path / "check.json"
    assert check.main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and all(r["ok"] and max(r["rel_err"].values()) < 1e-5 for r in rows)
    # A kernel that computes the wrong function must be reported, not pass silently.
    op = api.group_rational
    monkeypatch.setattr(api, "group_rational", lambda *args, **kw: 1.01 * op(*args, **kw))
    assert check.main(["--quick", "--out", str(out)]) == 1
    rational = json.loads(out.read_text())["results"][1]
    assert not rational["ok"] and rational["rel_err"]["y"] > 5e-3


def test_fft_conv_bench_implementations_override(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--quick", "--section", "cpu", "--sizes", "256", "--out", str(out)]
    assert fft_conv_bench.main([*args, "--implementations", "jnp_fft"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert {r["implementation"] for r in rows} == {"jnp_fft"} and len(rows) == 2  # fwd, fwd_bwd
    for bad in (
        "pallas:h4x", "cufft", "jnp_fft:h4", "pallas:h4/", "pallas:h4/h4x", "jnp_fft+saved",
        "pallas+save", "monarch_xla+saved+saved",
    ):  # fmt: skip
        with pytest.raises(SystemExit):  # checked before any row is timed
            fft_conv_bench.main([*args, "--implementations", bad])


@pytest.mark.parametrize("bench", [fft_conv_bench, rational_bench])
def test_run_case_refuses_unknown_modes_and_implementations(bench):
    case = bench.Case(fft_size=256, batch=1, heads=1) if bench is fft_conv_bench else bench.Case()
    good = "jnp_fft" if bench is fft_conv_bench else "xla"
    # Each was timed as another row: the forward alone, or the Pallas kernels.
    for mode in ("fwdbwd", "backward"):
        with pytest.raises(ValueError, match=rf"run_case.mode='{mode}': must be one of"):
            bench.run_case(case, good, mode, 0, 1)
    for bad in ("palas", "monarch_xl", "xla:h4", "gelu:32x64"):
        with pytest.raises(ValueError, match=f"implementation='{bad}': "):
            bench.run_case(case, bad, "fwd", 0, 1)


def test_check_refuses_an_unknown_dtype():
    from pallas_kernels import check

    # Each was a TypeError from numpy.
    with pytest.raises(ValueError, match=r"check_rational.dtype='flaot32': .*'float32'"):
        check.check_rational(64, rows=8, dtype="flaot32", shared=True)
    with pytest.raises(ValueError, match=r"check_fft_conv.dtype='flaot32': .*'float32'"):
        check.check_fft_conv(256, batch=1, heads=1, dtype="flaot32", gated=False)


def test_fft_conv_bench_fails_when_a_row_raises(tmp_path, capsys):
    """Compiled Pallas rows cannot run on CPU: every row runs (and says why it failed, on the
    terminal too), and the exit status is 1."""
    out = tmp_path / "bench.json"
    args = ["--quick", "--section", "cpu", "--sizes", "256", "--out", str(out)]
    assert fft_conv_bench.main([*args, "--implementations", "jnp_fft", "pallas:h4b8w8"]) == 1
    printed = capsys.readouterr().out
    assert "skipped: ValueError" in printed and "2 of 4 rows failed" in printed


def test_fft_conv_bench_tilings_per_pass():
    """ "pallas:FWD/BWD" rows tile the backward kernel apart from the forward one."""
    BlockSizes = fft_conv_bench.kernel.BlockSizes
    assert fft_conv_bench._tilings("") == (BlockSizes(), None)
    assert fft_conv_bench._tilings("h8m8w8-bf16") == (BlockSizes.parse("h8m8w8-bf16"), None)
    assert fft_conv_bench._tilings("h8m8w8-bf16/h4m4w8-bf16") == (
        BlockSizes.parse("h8m8w8-bf16"),
        BlockSizes.parse("h4m4w8-bf16"),
    )
    case = fft_conv_bench.Case(fft_size=1024, batch=2, heads=4, gated=True)
    step = fft_conv_bench._fwd_bwd(fft_conv_bench._conv(case, "pallas:h2/h4b2"))
    jaxpr = jax.make_jaxpr(step)(*fft_conv_bench._input_shapes(case)).jaxpr  # traced, not compiled
    grids = [e.params["grid_mapping"].grid for e in equations(jaxpr) if "grid_mapping" in e.params]
    assert grids == [(2, 2), (1, 1)]  # forward (B, H / 2); backward (B / 2, H / 4)
    with pytest.raises(ValueError, match="both passes need the same plan"):
        fft_conv_bench._conv(dataclasses.replace(case, fft_size=4096), "pallas:h2/r128h4")


def test_fft_conv_bench_saved_rows(tmp_path, monkeypatch):
    """A "+saved" row runs the op with save_residuals=True: its backward has fewer matmuls."""
    case = fft_conv_bench.Case(fft_size=1024, batch=2, heads=4, gated=True)
    assert fft_conv_bench.split_saved("pallas:h2/h4b2+saved") == ("pallas:h2/h4b2", True)
    assert fft_conv_bench.split_saved("monarch_xla") == ("monarch_xla", False)

    def dots(implementation):
        step = fft_conv_bench._fwd_bwd(fft_conv_bench._conv(case, implementation))
        jaxpr = jax.make_jaxpr(step)(*fft_conv_bench._input_shapes(case)).jaxpr
        return sum(e.primitive.name == "dot_general" for e in equations(jaxpr))

    assert dots("monarch_xla+saved") < dots("monarch_xla")
    assert dots("pallas:h2+saved") < dots("pallas:h2")
    out = tmp_path / "bench.json"
    args = ["--quick", "--section", "cpu", "--sizes", "256", "--out", str(out)]
    fft_conv_bench.main([*args, "--implementations", "monarch_xla", "monarch_xla+saved"])
    rows = json.loads(out.read_text())["results"]
    assert {r["implementation"] for r in rows} == {"monarch_xla", "monarch_xla+saved"}
    timed = {(r["implementation"], r["mode"]) for r in rows if "median_ms" in r}
    assert timed == {
        ("monarch_xla", "fwd"),
        ("monarch_xla", "fwd_bwd"),
        ("monarch_xla+saved", "fwd_bwd"),
    }
    assert all(r["median_ms"] > 0 for r in rows if "median_ms" in r)


def test_check_runs_fft_variants_and_rejects_bad_specs(tmp_path):
    from pallas_kernels import check

    out = tmp_path / "check.json"
    variants = ["--fft-variants", "r64-bf16", "+saved", "--rational-variants", "16x64l8-loop"]
    assert check.main(["--quick", *variants, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r.get("block_sizes") for r in rows] == ["", "", "r64-bf16", "+saved", "16x64l8-loop"]
    assert rows[2]["ok"] and rows[2]["tolerance"] == check.TOLERANCE["bfloat16"]
    assert rows[3]["ok"] and set(rows[3]["rel_err"]) == {"y", "du", "dk", "dpregate", "dpostgate"}
    assert rows[4]["ok"] and rows[4]["rows"] == 27  # two row tiles, the last one partial
    with pytest.raises(SystemExit):
        check.main(["--quick", "--fft-variants", "r100", "--out", str(out)])
    with pytest.raises(SystemExit):
        check.main(["--quick", "--rational-variants", "64x64-sum", "--out", str(out)])


def test_check_full_case_list():
    """The full (GPU) case list: the rational defaults, then the fft_conv variants and small
    defaults, then the rational variants (each with and without a partial row tile), then the
    slow-compiling large fft_conv defaults; --ops leaves the other op out (listed, not run: they
    take minutes on CPU)."""
    from pallas_kernels import check

    def listed(ops):
        cases = check._cases(False, ("r128-tf32",), ("256x64l16-loop",), ops)
        return [(c.func, c.args, c.keywords) for c in cases]

    rational = listed(("rational",))
    assert {func for func, _, _ in rational} == {check.check_rational}
    variant_rows = [kw["rows"] for _, _, kw in rational if kw.get("block_sizes")]
    assert variant_rows == [128 * 197 + 3, 2**15]
    both = listed(("rational", "fft_conv"))
    fft = listed(("fft_conv",))
    assert {func for func, _, _ in fft} == {check.check_fft_conv}
    assert sorted(both, key=repr) == sorted(rational + fft, key=repr)
    # Order: rational defaults, fft variants (N = 1024, 4096) first among the fft cases,
    # rational variants before the fft defaults from N = 4096 on.
    kinds = [
        ("r" if func is check.check_rational else "f")
        + ("v" if kw.get("block_sizes") else "d")
        + ("L" if func is check.check_fft_conv and args[0] >= 4096 else "")
        for func, args, kw in both
    ]
    assert kinds == ["rd"] * 6 + ["fv", "fvL"] + ["fd"] * 4 + ["rv"] * 2 + ["fdL"] * 6
    sizes = check._cases(False, ("r128-bf16",), (), ("fft_conv",), (8192, 16384))
    assert [c.args[0] for c in sizes if c.keywords.get("block_sizes")] == [8192, 16384]
    for bad in ("300", "128"):  # --fft-variant-sizes: powers of two >= 256
        with pytest.raises(SystemExit):
            check.main(["--fft-variants", "r128-bf16", "--fft-variant-sizes", bad])


def test_block_sizes_spec_argument_type(capsys):
    import argparse

    from pallas_kernels._bench import block_sizes_spec
    from pallas_kernels.rational import BlockSizes as RationalBlockSizes

    check = block_sizes_spec(RationalBlockSizes.parse)
    assert check("256x64l16-loop") == "256x64l16-loop"  # the string is kept
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be one of \['loop', 'tree'\]"):
        check("256x64-sum")
    parser = argparse.ArgumentParser()
    parser.add_argument("--tilings", nargs="+", type=check)
    with pytest.raises(SystemExit):
        parser.parse_args(["--tilings", "256x64", "8x"])
    assert "argument --tilings" in capsys.readouterr().err  # the message names the flag


def test_time_rows_times_ready_rows_first_and_records_failures(tmp_path):
    """Rows come back in order but for one that fails (its record says why, the run goes on),
    and the JSON holds every row after each one."""
    import jax
    import jax.numpy as jnp

    from pallas_kernels._bench import time_fn, time_rows

    x = jax.ShapeDtypeStruct((4,), jnp.float32)
    jobs = {"double": lambda v: 2 * v, "bad": lambda v: v @ jnp.ones((3, 3)), "torch": None}
    seen = []

    def run(row, compiled):
        assert compiled is not None or row == "torch"
        timing = {} if row == "torch" else time_fn(None, jnp.ones(4), repeats=2, compiled=compiled)
        return {"row": row} | timing

    out = tmp_path / "rows.json"
    results = time_rows(
        list(jobs), job=lambda row: None if jobs[row] is None else (jobs[row], (x,)),
        run=run, header=lambda row: {"row": row}, show=seen.append, out=out,
        env={"platform": "test"}, workers=2,
    )  # fmt: skip
    assert sorted(r["row"] for r in results) == ["bad", "double", "torch"] and seen == results
    by_row = {r["row"]: r for r in results}
    assert by_row["double"]["median_ms"] > 0 and by_row["double"]["compile_s"] > 0
    assert by_row["bad"]["skipped"].startswith("TypeError")  # the lowering's shape error
    assert by_row["bad"]["error"] and not by_row["torch"].get("error")
    from pallas_kernels._bench import failed_rows

    assert failed_rows(results) == 1 and failed_rows([by_row["double"], by_row["torch"]]) == 0
    assert json.loads(out.read_text()) == {"env": {"platform": "test"}, "results": results}
