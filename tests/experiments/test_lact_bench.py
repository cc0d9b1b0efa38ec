"""The lact bench: entries, a quick run of every part (FLOP counts, utilisation table, figure) and
the out-of-memory guard. Nothing here asserts a time."""

import json

import jax
import numpy as np
import pytest

from efficient.bench import BenchResult
from efficient.nn.lact import lact_flops
from experiments import bench
from experiments.benches import BENCHES
from experiments.benches import lact as lact_bench
from experiments.benches import spec as bench_spec


def _rows(path):
    return [BenchResult.from_dict(json.loads(line)) for line in path.open()]


def test_entries_cover_the_chunks_and_lengths():
    assert set(lact_bench.MODELS) == set(BENCHES["lact"].models)
    chunks = [lact_bench.MODELS[f"util_c{C}"].chunk for C in lact_bench.CHUNKS]
    assert {64, 128, 256, 512, 1024, 2048, 4096} <= set(chunks)
    # Every chunk size sees the same tokens.
    assert len({lact_bench.MODELS[f"util_c{C}"].seq_len for C in chunks}) == 1
    lm = {(e.family, e.seq_len) for e in lact_bench.MODELS.values()
          if isinstance(e, lact_bench.LMEntry) and not e.smoke}  # fmt: skip
    assert lm == {(f, T) for f in ("lact", "transformer") for T in (4096, 16_384, 32_768)}
    assert not any(k.startswith("quick_") for k in lact_bench.DEFAULT_MODELS)
    with pytest.raises(ValueError, match="family='Lact': expected one of 'lact', 'transformer'"):
        lact_bench.LMEntry(family="Lact", seq_len=128)


@pytest.mark.slow  # ~50 s on 2 shared CPU cores: two LM train steps and two fast-weight forwards
def test_quick_run_counts_flops_and_saves_the_utilisation_figure(tmp_path, capsys):
    out = tmp_path / "lact.jsonl"
    models = ",".join(lact_bench.QUICK_MODELS)
    args = ["lact", "--models", models, "--repeats", "1", "--warmup", "0", "--out", str(out)]
    assert bench.main(args) == 0
    rows = {r.extra["model"]: r for r in _rows(out)}
    assert set(rows) == set(lact_bench.QUICK_MODELS)
    assert rows["quick_matmul"].flops == 2 * 256**3
    for C in (16, 64):
        r = rows[f"quick_c{C}"]
        formula = 2 * lact_flops(512, 32, 32, 32, C, order="apply_then_update")
        assert r.extra["formula_flops"] == formula and len(r.times_ms) == 1
        # XLA's count: the formula's dots plus elementwise work.
        assert formula <= r.extra["xla_unrolled_flops"] <= 1.3 * formula
        assert r.extra["matmul_size"] == 256 and r.extra["matmul_min_ms"] > 0
    util = lact_bench.utilisation_rows(list(rows.values()))
    assert [u["chunk"] for u in util] == [16, 64]
    assert all(u["utilisation"] > 0 and u["xla_utilisation"] >= u["utilisation"] for u in util)
    # The reference is the best matmul of the run: the standalone entry or a per-row one.
    best = max(2 * 256**3 / (ms / 1e3) / 1e9 for ms in
               [rows["quick_matmul"].min_ms] + [rows[f"quick_c{C}"].extra["matmul_min_ms"]
                                                for C in (16, 64)])  # fmt: skip
    assert all(u["matmul_gflops"] == best for u in util)
    lm = {r.extra["family"]: r for r in rows.values() if r.extra["part"] == "lm"}
    assert set(lm) == {"lact", "transformer"} and all(r.batch == 128 for r in lm.values())
    text = capsys.readouterr().out
    assert "utilisation vs chunk" in text and "LaCT LM vs attention" in text
    assert out.with_suffix(".png").stat().st_size > 1000


def test_xla_count_extrapolated_from_two_and_three_chunks_matches_the_full_unroll():
    heads, T, d, C = 2, 160, 8, 16  # 10 chunks
    shapes = [
        jax.ShapeDtypeStruct(a.shape, a.dtype) for a in lact_bench._util_inputs(heads, T, d)[:5]
    ]
    w = lact_bench._util_inputs(heads, T, d)[5]
    cost = jax.jit(lact_bench._util_fn(C, unroll=True)).lower(*shapes, w).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # Equal up to a few scalar ops that do not scale with the chunk count (14 of 417,200 here).
    np.testing.assert_allclose(lact_bench._unrolled_flops(heads, T, d, C), cost["flops"], rtol=1e-4)


def test_a_step_too_big_for_free_memory_is_compiled_not_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_spec, "_available_bytes", lambda: 2**20)  # 1 MiB free
    out = tmp_path / "lact.jsonl"
    assert bench.main(["lact", "--models", "quick_lm_transformer", "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row.name == "lact/quick_lm_transformer/train" and row.lower_only
    assert row.times_ms == () and row.extra["skipped"].startswith("needs ")
    assert "transformer: needs" in capsys.readouterr().out
