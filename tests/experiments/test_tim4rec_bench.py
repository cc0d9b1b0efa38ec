"""The tim4rec bench: entries, a quick run of the three models (table, growth, figure) and the
out-of-memory guard. Nothing here asserts a time."""

import json
import re

import pytest

from efficient.bench import BenchResult
from experiments import bench
from experiments.benches import BENCHES
from experiments.benches import spec as bench_spec
from experiments.benches import tim4rec as tim4rec_bench


def test_entries_cover_the_four_models_at_each_length():
    assert set(tim4rec_bench.MODELS) == set(BENCHES["tim4rec"].models)
    entries = {(e.family, e.seq_len) for e in tim4rec_bench.MODELS.values()}
    assert entries == {(f, T) for f in ("tim4rec", "tim4rec_nomlp", "ssd4rec", "sasrec")
                       for T in (50, 200, 1000, 4000)}  # fmt: skip
    with pytest.raises(ValueError, match="family='SASRec': expected one of 'tim4rec'"):
        tim4rec_bench.ModelEntry(family="SASRec", seq_len=50)


def _rows(path):
    return [BenchResult.from_dict(json.loads(line)) for line in path.open()]


@pytest.mark.slow  # ~50 s on 2 CPU cores: four train steps, each compiled once
def test_quick_run_times_all_four_and_saves_the_figure(tmp_path, capsys):
    out = tmp_path / "tim4rec.jsonl"
    models = "tim4rec_50,tim4rec_nomlp_50,ssd4rec_50,sasrec_50"
    args = ["tim4rec", "--models", models, "--batch", "2",
            "--repeats", "3", "--warmup", "0", "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    rows = {r.extra["family"]: r for r in _rows(out)}
    assert set(rows) == {"tim4rec", "tim4rec_nomlp", "ssd4rec", "sasrec"}
    assert all(len(r.times_ms) == 3 and r.batch == 2 * 50 for r in rows.values())
    # One length's SSD models are timed in the same rounds (the table pairs them round by
    # round); SASRec on its own.
    assert set(rows["tim4rec"].extra["interleaved_with"]) == {
        f"tim4rec/{f}_50/train" for f in ("tim4rec_nomlp", "ssd4rec")
    }
    assert "interleaved_with" not in rows["sasrec"].extra
    assert all(r.memory.total_bytes > 0 and r.flops > 0 for r in rows.values())
    # The time branch adds parameters to SSD4Rec; the position MLPs are 2 x 2 x 51 x 50 of them.
    params = {family: row.extra["params"] for family, row in rows.items()}
    assert params["tim4rec"] - params["tim4rec_nomlp"] == 2 * 2 * 51 * 50
    assert params["tim4rec_nomlp"] > params["ssd4rec"]
    assert rows["tim4rec"].flops > rows["tim4rec_nomlp"].flops > rows["ssd4rec"].flops
    text = capsys.readouterr().out
    assert "TiM4Rec vs SSD4Rec vs SASRec" in text and "sasrec/tim4rec" in text
    assert re.search(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", text)  # paired, interval
    assert out.with_suffix(".png").stat().st_size > 1000


def test_a_step_too_big_for_free_memory_is_compiled_not_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_spec, "_available_bytes", lambda: 2**20)  # 1 MiB free
    out = tmp_path / "tim4rec.jsonl"
    assert bench.main(["tim4rec", "--models", "sasrec_50", "--batch", "2", "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row.name == "tim4rec/sasrec_50/train" and row.lower_only and row.times_ms == ()
    assert row.extra["skipped"].startswith("needs ") and row.extra["seq_len"] == 50
    assert "sasrec: needs" in capsys.readouterr().out


def test_positions_per_step_are_the_paper_batch_on_an_accelerator(monkeypatch):
    assert [tim4rec_bench.batch_size(T) for T in (50, 200, 1000, 4000)] == [80, 20, 4, 1]
    monkeypatch.setattr(tim4rec_bench, "platform", lambda: "accelerator")
    # TiM4Rec's batch of 2,048 sequences at ML-100K's length 50, the same positions at every T.
    assert [tim4rec_bench.batch_size(T) for T in (50, 200, 1000, 4000)] == [2048, 512, 102, 25]
