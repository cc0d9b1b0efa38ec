"""The kat bench: KAT and ViT timed side by side, the paired KAT/ViT ratio, lower-only rows.
Nothing here asserts a time."""

import json
import re

import pytest

from efficient.bench import BenchResult
from experiments import bench
from experiments.benches import kat as kat_bench


def _rows(path):
    return [BenchResult.from_dict(json.loads(line)) for line in path.open()]


@pytest.mark.slow  # two KAT/ViT train steps compiled at 28 px
def test_quick_run_pairs_kat_with_vit(tmp_path, capsys):
    out = tmp_path / "kat.jsonl"
    args = ["kat", "--models", "vit_fashion_mnist,kat_fashion_mnist", "--batch", "2",
            "--repeats", "3", "--warmup", "0", "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    rows = {r.extra["model"]: r for r in _rows(out)}
    assert set(rows) == {"vit_fashion_mnist", "kat_fashion_mnist"}
    assert all(len(r.times_ms) == 3 and r.batch == 2 for r in rows.values())
    assert rows["kat_fashion_mnist"].extra["interleaved_with"] == ["kat/vit_fashion_mnist/train"]
    estimate, low, high = kat_bench.ratios(list(rows.values()))["kat_fashion_mnist"]
    assert low <= estimate <= high
    text = capsys.readouterr().out
    assert re.search(r"kat_fashion_mnist: KAT/ViT = \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]x", text)


def test_lower_only_rows_have_no_times_and_no_ratio(tmp_path):
    out = tmp_path / "kat.jsonl"
    args = ["kat", "--models", "kat_fashion_mnist", "--batch", "2", "--lower-only",
            "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    (row,) = _rows(out)
    assert row.extra["model"] == "kat_fashion_mnist"
    assert row.lower_only and row.times_ms == () and row.flops > 0
    assert kat_bench.ratios([row]) == {}


@pytest.mark.parametrize("family", ["KAT", "vit "])
def test_entries_refuse_an_unknown_family(family):
    with pytest.raises(ValueError, match=f"family={family!r}: expected one of 'vit', 'kat'"):
        kat_bench.ModelEntry(size="tiny", family=family, batch=8)
