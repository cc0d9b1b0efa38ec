"""Sequential-recommendation experiments: the loss and metrics against hand-computed values, the
smoke run end to end (test metrics of the best validation step), the ML-100K recipe shared by
TiM4Rec, SSD4Rec and SASRec, config checks, and the seeds table runner."""

import dataclasses
import importlib.util
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from efficient.data import RecSysDataConfig, recsys_dataset_info
from efficient.models.sasrec import SASRecConfig
from efficient.models.tim4rec import TiM4RecConfig
from efficient.train import read_metrics
from experiments import recommendation_table, registry
from experiments import run as run_cli
from experiments.registry import presets
from experiments.sequential_recommendation import (
    ML100K_TRAIN_EXAMPLES,
    check_compatible,
    next_item_loss,
    run,
    smoke,
    with_data_sizes,
)
from tests.experiments._recsys_standin import StandInConfig

FAST = ["--train.progress", "False", "--train.steps", "6", "--train.eval_every", "2",
        "--train.log_every", "2", "--train.checkpoint_every", "2"]  # fmt: skip


def test_next_item_loss_matches_hand_computed_values():
    # Two real examples over 4 items (+ padding column 0) and one padding row (mask 0).
    scores = jnp.array([[9.0, 0.0, 3.0, 1.0, 2.0],   # target 2 ranks 1st
                        [0.0, 4.0, 1.0, 3.0, 2.0],   # target 4 ranks 3rd
                        [0.0, 0.0, 0.0, 0.0, 0.0]])  # fmt: skip
    batch = {"targets": jnp.array([2, 4, 0], jnp.int32), "mask": jnp.array([1.0, 1.0, 0.0])}
    loss, metrics = next_item_loss(ks=(1, 10))(scores, batch)
    # RecBole's CE: the softmax includes the padding column 0.
    ce = [np.log(np.exp(s).sum()) - s[t] for s, t in zip(np.asarray(scores[:2], np.float64),
                                                         (2, 4), strict=True)]  # fmt: skip
    np.testing.assert_allclose(loss, np.mean(ce), rtol=1e-6)
    assert metrics["loss"] == loss
    np.testing.assert_allclose(metrics["hit@1"], 0.5)
    np.testing.assert_allclose(metrics["hit@10"], 1.0)
    np.testing.assert_allclose(metrics["ndcg@10"], (1.0 + 1.0 / np.log2(4.0)) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics["mrr@10"], (1.0 + 1.0 / 3.0) / 2, rtol=1e-6)


def test_tim4rec_smoke_runs_end_to_end_and_reports_test_metrics(tmp_path):
    assert run_cli.main(["tim4rec/smoke", "--workdir", str(tmp_path), *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_per_epoch"] == 5312 // 64
    assert summary["test_step"] == summary["best_step"] == summary["best_eval"]["step"]
    assert set(summary["test"]) == {f"{m}@{k}" for m in ("hit", "ndcg", "mrr")
                                    for k in (10, 20)} | {"loss"}  # fmt: skip
    assert all(0.0 <= summary["test"][f"hit@{k}"] <= 1.0 for k in (10, 20))
    assert math.isfinite(summary["test"]["loss"])
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert summary["best_eval"]["ndcg@10"] == max(r["ndcg@10"] for r in evals)
    # The model's vocabulary and length come from the data.
    model = json.loads((tmp_path / "config.json").read_text())["model"]
    assert (model["num_items"], model["max_len"]) == (summary["data"]["num_items"], 20)


def test_with_data_sizes_sets_the_vocabulary_from_the_data():
    config = with_data_sizes(smoke(StandInConfig(num_items=5, max_len=3)))
    info = recsys_dataset_info(config.data)
    assert (config.model.num_items, config.model.max_len) == (info["num_items"], 20)


def test_ml100k_presets_share_one_recipe():
    configs = {n: presets()[n].config for n in ("tim4rec/ml100k", "ssd4rec/ml100k",
                                                  "sasrec/ml100k")}  # fmt: skip
    tim, ssd, sas = configs.values()
    assert tim.model == TiM4RecConfig.ml100k() and sas.model == SASRecConfig.ml100k()
    assert ssd.model == dataclasses.replace(tim.model, time_aware=False)
    assert dataclasses.replace(tim, model=sas.model) == sas
    assert dataclasses.replace(ssd, model=sas.model) == sas
    per_epoch = ML100K_TRAIN_EXAMPLES // tim.data.batch_size
    assert tim.train.steps % per_epoch == 0 and per_epoch % tim.train.eval_every == 0
    assert tim.train.optimizer.learning_rate == 1e-3 and tim.train.optimizer.weight_decay == 0
    for config in configs.values():
        check_compatible(config)


@pytest.mark.data
@pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None,
    reason="needs MovieLens-100K: pip install --no-deps recbole==1.2.1",
)
def test_ml100k_example_count_matches_the_data():
    info = recsys_dataset_info(RecSysDataConfig(source="ml-100k"))
    assert info["train_examples"] == ML100K_TRAIN_EXAMPLES


@pytest.mark.parametrize(
    ("train_change", "match"),
    [({"eval_every": 0, "early_stopping_patience": None}, "eval_every=0"),
     ({"keep_best": False}, "keep_best=False")],
)  # fmt: skip
def test_check_compatible_names_the_problem(train_change, match):
    config = smoke(StandInConfig())
    bad = dataclasses.replace(config, train=dataclasses.replace(config.train, **train_change))
    with pytest.raises(ValueError, match=match):
        check_compatible(bad)


def test_cut_offs_must_be_integers_and_include_10():
    config = smoke(StandInConfig())
    # 10.0 would name the metric ndcg@10.0, which early stopping (on ndcg@10) never finds.
    for ks, match in [((10.0, 20), "positive integer"), ((5, 20), "must include 10")]:
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(config, ks=ks)
    assert dataclasses.replace(config, ks=[np.int64(10)]).ks == (10,)


@pytest.fixture
def standin_preset(monkeypatch):
    """`standin/smoke`: the smoke recipe with the stand-in model, registered for one test."""
    name = "standin/smoke"
    preset = registry.Preset(name, "stand-in", smoke(StandInConfig()), run, check_compatible)
    presets()  # imports the paper modules first, so the patch below is the last word
    monkeypatch.setitem(registry._PRESETS, name, preset)
    return name


def test_table_runner_runs_resumes_skips_and_tabulates(tmp_path, capsys, standin_preset):
    args = [standin_preset, "--seeds", "2", "--runs-dir", str(tmp_path), *FAST]
    # Seed 0 is cut after 2 steps: the runner reports an interruption; the next call resumes it.
    assert recommendation_table.main([*args, "--train.stop_after", "2"]) == 130
    assert "seed 0: paused (stop_after=2): run the same command again" in capsys.readouterr().err
    assert recommendation_table.main(args) == 0
    out = capsys.readouterr().out
    assert "seed 0: resuming" in out and "seed 1: running" in out
    steps = [r["step"] for r in read_metrics(tmp_path / f"{standin_preset}/seed0/metrics.jsonl")
             if r["split"] == "train"]  # fmt: skip
    assert steps == [2, 4, 6]
    table = (tmp_path / "recommendation_table.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {standin_preset} ")]
    assert row.count("±") == 8 and "| 2 |" in row
    raw = json.loads((tmp_path / "recommendation_table.json").read_text())
    summaries = [json.loads((tmp_path / f"{standin_preset}/seed{k}/summary.json").read_text())
                 for k in (0, 1)]  # fmt: skip
    ndcg = [s["test"]["ndcg@10"] for s in summaries]
    assert [r["test"]["ndcg@10"] for r in raw[standin_preset]] == ndcg
    assert f"{np.mean(ndcg):.4f} ± {np.std(ndcg, ddof=1):.4f}" in row
    assert summaries[0]["test"] != summaries[1]["test"]  # train.seed differs
    # Finished runs are reused; a changed config is refused rather than mixed in.
    assert recommendation_table.main(args) == 0
    assert capsys.readouterr().out.count("finished earlier") == 2
    assert recommendation_table.main([*args, "--train.steps", "8"]) == 2
    assert "different config" in capsys.readouterr().err


def test_seeded_sets_the_data_seed_except_for_synthetic_data():
    config = presets()["sasrec/ml100k"].config
    assert config.data.source == "ml-100k" and (config.train.seed, config.data.seed) == (0, 0)
    k = recommendation_table.seeded(config, 7)
    assert (k.train.seed, k.data.seed) == (7, 7)  # initialisation and dropout; example order
    assert dataclasses.replace(k, train=config.train, data=config.data) == config
    synthetic = smoke(StandInConfig())
    assert synthetic.data.source == "synthetic"
    k = recommendation_table.seeded(synthetic, 7)
    # There the data seed would change the data themselves: left alone.
    assert (k.train.seed, k.data) == (7, synthetic.data)


def _summary(test, step, best_step, wall_s, **extra):
    return {"status": "completed", "test": test, "wall_time_s": wall_s,
            "epochs": {"step": step, "best_step": best_step},
            "device_kind": "cpu", "git_commit": "abc", **extra}  # fmt: skip


def test_markdown_table_columns_from_hand_made_summaries():
    metrics = [
        {"hit@10": 0.5, "ndcg@10": 0.25, "mrr@10": 0.125, "hit@20": 0.75, "ndcg@20": 0.3},
        {"hit@10": 0.7, "ndcg@10": 0.35, "mrr@10": 0.225, "hit@20": 0.85, "ndcg@20": 0.4},
    ]
    results = {"p/one": [_summary(metrics[0], 20.0, 12.0, 600.0),
                         _summary(metrics[1], 30.0, 16.0, 1200.0)],
               "p/two": [_summary(metrics[0], 8.0, 2.5, 90.0)]}  # fmt: skip
    table = recommendation_table.markdown_table(results)
    lines = [line for line in table.splitlines() if line.startswith("|")]

    def cells(line):
        return [c.strip() for c in line.strip("|").split("|")]

    head = cells(lines[0])
    rows = {r[0]: dict(zip(head, r, strict=True)) for r in map(cells, lines[2:])}
    assert head == ["preset", "seeds", "HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20",
                    "best epoch", "epochs", "wall min / run"]  # fmt: skip
    one, two = rows["p/one"], rows["p/two"]
    # Mean ± sample std (ddof 1) of two values a, b: (a + b) / 2 ± |a - b| / sqrt(2).
    assert one["seeds"] == "2" and two["seeds"] == "1"
    assert one["HR@10"] == "0.6000 ± 0.1414" and one["MRR@10"] == "0.1750 ± 0.0707"
    assert one["NDCG@10"] == "0.3000 ± 0.0707" and one["NDCG@20"] == "0.3500 ± 0.0707"
    assert one["best epoch"] == "14.0 ± 2.8" and one["epochs"] == "25.0 ± 7.1"
    assert one["wall min / run"] == "15.0 ± 7.1"
    assert (two["HR@20"], two["best epoch"], two["epochs"], two["wall min / run"]) == (
        "0.7500", "2.5", "8.0", "1.5")  # fmt: skip
    assert "on cpu (commit abc)." in table


def test_finished_needs_a_completed_and_tested_summary(tmp_path):
    assert recommendation_table.finished(tmp_path) is None  # no summary.json
    path = tmp_path / "summary.json"
    path.write_text("{not json")
    assert recommendation_table.finished(tmp_path) is None
    tested = _summary({"ndcg@10": 0.3}, 8.0, 4.0, 60.0)
    path.write_text(json.dumps(tested))
    assert recommendation_table.finished(tmp_path) == tested
    for change in ({"test": None}, {"status": "paused"}, {"status": "diverged"}):
        path.write_text(json.dumps({**tested, **change}))
        # A completed run without test metrics is run again, not tabulated (markdown_table
        # reads s["test"]).
        assert recommendation_table.finished(tmp_path) is None, change
