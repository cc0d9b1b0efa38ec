"""The hyena bench: entries, the out-of-memory guard and the report (one 1K compile, no timing)."""

import json

import pytest

from efficient.bench import BenchResult
from experiments import bench
from experiments.benches import BENCHES
from experiments.benches import hyena as hyena_bench
from experiments.benches import spec as bench_spec


def test_entries_cover_both_families_at_each_length():
    assert set(hyena_bench.MODELS) == set(BENCHES["hyena"].models)
    lengths = {(e.family, e.seq_len) for e in hyena_bench.MODELS.values()}
    assert lengths == {(f, T) for f in ("hyena", "transformer") for T in (1024, 4096, 16_384)}
    with pytest.raises(ValueError, match="family='attention': expected one of 'hyena'"):
        hyena_bench.ModelEntry(family="attention", seq_len=1024)


def test_a_step_too_big_for_free_memory_is_compiled_not_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_spec, "_available_bytes", lambda: 2**20)  # 1 MiB free
    out = tmp_path / "hyena.jsonl"
    assert bench.main(["hyena", "--models", "hyena_1k", "--out", str(out)]) == 0
    (row,) = [BenchResult.from_dict(json.loads(line)) for line in out.open()]
    assert row.name == "hyena/hyena_1k/train" and row.lower_only and row.times_ms == ()
    assert row.extra["params"] == 3_667_456 and row.extra["seq_len"] == 1024
    assert row.extra["skipped"].startswith("needs ") and row.flops > 0
    text = capsys.readouterr().out
    assert "Hyena vs attention" in text and "hyena: needs" in text
