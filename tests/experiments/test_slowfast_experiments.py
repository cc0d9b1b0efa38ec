"""Slow-Fast video-QA presets: the smoke run end to end, the answer loss and exact match
against numpy, the per-type accuracy against a direct count, and the presets' equal LLM inputs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.data.video_qa import ANSWER_TOKEN, PADDING_TOKEN, QUESTION_TOKEN, QUESTION_TYPES
from efficient.models.slowfast_mllm import SlowFastMLLM
from efficient.sharding import MeshConfig, make_mesh
from efficient.train import Task, init_state, make_optimizer, replace_params
from experiments import run as run_cli
from experiments import slowfast
from experiments.registry import presets

VIDEO_QA = ("slowfast/video_qa", "slowfast/video_qa_f64", "slowfast/video_qa_f16")


def test_smoke_trains_and_reports_accuracy_per_type(tmp_path, capfd):
    args = ["slowfast/smoke", "--workdir", str(tmp_path), "--train.progress", "False",
            "--train.steps", "4", "--train.eval_every", "0"]  # fmt: skip
    assert run_cli.main(args) == 0
    # --train.progress False reaches the encoder's pretraining too: no bar named after its run.
    assert "vision_pretrain:" not in capfd.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    scores = summary["eval_accuracy"]
    assert scores["examples"] == 32
    for key in ("accuracy", "accuracy_what", "accuracy_count"):
        assert 0.0 <= scores[key] <= 1.0
    # The trainer's final evaluation is the same parameters on the same clips.
    np.testing.assert_allclose(scores["accuracy"], summary["final_eval"]["accuracy"], atol=1e-6)
    # The encoder was pretrained first (its own run directory), then loaded and kept frozen.
    assert summary["vision_pretrain"]["final_eval"]["accuracy"] >= 0.0
    pre = json.loads((tmp_path / "vision_pretrain" / "summary.json").read_text())
    assert pre["status"] == "completed"
    config = presets()["slowfast/smoke"].config
    vision, again = slowfast.pretrain_vision(config, tmp_path)  # reuses the finished run
    assert again["final_eval"] == pre["final_eval"]
    # The video model's encoder starts as the classifier's (minus its head).
    model = SlowFastMLLM(config.model)
    batch = next(iter(slowfast.video_qa_train_dataset(config.data)))
    task = Task(
        model=model, loss_fn=slowfast.answer_loss, inputs=slowfast.qa_inputs,
        init_params=lambda p: replace_params(p, ("frames", "vision"), vision),
    )  # fmt: skip
    tx = make_optimizer(config.train.optimizer, total_steps=config.train.steps)
    state, _ = init_state(task, tx, batch, seed=0, mesh=make_mesh(MeshConfig()))
    assert "head" not in vision
    for got, want in zip(
        jax.tree.leaves(state.params["frames"]["vision"]), jax.tree.leaves(vision), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_runs_share_one_vision_pretraining(tmp_path, capsys):
    shared = tmp_path / "encoder"
    common = ["--train.progress", "False", "--train.steps", "2", "--train.eval_every", "0",
              "--vision_pretrain_dir", str(shared)]  # fmt: skip
    for name in ("a", "b"):
        assert run_cli.main(["slowfast/smoke", "--workdir", str(tmp_path / name), *common]) == 0
    out = capsys.readouterr().out
    assert f"vision encoder pretrained in {shared}" in out
    assert f"vision encoder reused from {shared}" in out
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    assert a["vision_pretrain"]["reused"] is False and b["vision_pretrain"]["reused"] is True
    # One pretraining, whose record (wall time included) the reuse leaves as it was.
    assert a["vision_pretrain"] == dict(b["vision_pretrain"], reused=False)
    assert not (tmp_path / "a" / "vision_pretrain").exists()
    record = json.loads((shared / "summary.json").read_text())
    assert record["wall_time_s"] == a["vision_pretrain"]["wall_time_s"]
    # Another recipe in the same directory is refused, not silently reused.
    config = presets()["slowfast/smoke"].config
    other = dataclasses.replace(
        config,
        vision_pretrain=dataclasses.replace(
            config.vision_pretrain,
            train=dataclasses.replace(config.vision_pretrain.train, steps=7),
        ),
        vision_pretrain_dir=str(shared),
    )
    with pytest.raises(ValueError, match="another recipe"):
        slowfast.pretrain_vision(other, tmp_path / "c")


def _batch():
    # Two examples of L = 6: question bytes, then a 2-byte answer, then padding.
    tokens = np.array([[10, 11, 12, 20, 21, 0], [10, 13, 30, 31, 0, 0]], np.int32)
    Q, A, P = QUESTION_TOKEN, ANSWER_TOKEN, PADDING_TOKEN
    types = np.array([[Q, Q, Q, A, A, P], [Q, Q, A, A, P, P]], np.int32)
    return {"tokens": tokens, "token_types": types, "mask": np.array([1.0, 1.0], np.float32)}


def test_answer_loss_and_exact_match_against_numpy():
    batch = _batch()
    logits = np.random.default_rng(0).standard_normal((2, 6, 256)).astype(np.float32)
    # Example 0: both answer bytes are the argmax; example 1: its second answer byte is not.
    logits[0, 2, 20] = logits[0, 3, 21] = 50.0
    logits[1, 1, 30] = 50.0
    logits[1, 2, 99] = 50.0
    loss, metrics = slowfast.answer_loss(jnp.asarray(logits), batch)
    want_ce = []
    for b, positions in ((0, (2, 3)), (1, (1, 2))):
        for t in positions:
            z = logits[b, t].astype(np.float64)
            target = batch["tokens"][b, t + 1]
            want_ce.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[target])
    np.testing.assert_allclose(float(loss), np.mean(want_ce), rtol=1e-5)
    assert float(metrics["accuracy"]) == 0.5


def test_evaluate_accuracy_counts_per_type(monkeypatch):
    """The per-type accuracy is a direct count over every real example (padding rows ignored)."""
    config = presets()["slowfast/smoke"].config
    model = SlowFastMLLM(config.model)
    batches = list(slowfast.video_qa_eval_dataset(config.data))
    frames, tokens, types = map(jnp.asarray, slowfast.qa_inputs(batches[0]))
    params = model.init(jax.random.key(0), frames, tokens, types)["params"]
    scores = slowfast.evaluate_accuracy(model, params, config.data)
    exact, kinds = [], []
    for b in batches:
        logits = model.apply({"params": params}, *map(jnp.asarray, slowfast.qa_inputs(b)))
        _, _, e = slowfast.answer_correct(logits, b)
        real = b["mask"] > 0
        exact += list(np.asarray(e)[real])
        kinds += list(b["question_type"][real])
    exact, kinds = np.array(exact), np.array(kinds)
    assert scores["examples"] == config.data.eval_clips == len(exact)
    np.testing.assert_allclose(scores["accuracy"], exact.mean())
    for k, name in enumerate(QUESTION_TYPES):
        if name in config.data.question_types:
            np.testing.assert_allclose(scores[f"accuracy_{name}"], exact[kinds == k].mean())
        else:
            assert f"accuracy_{name}" not in scores


def test_video_qa_presets_compare_at_equal_llm_input():
    registered = presets()
    for name in VIDEO_QA:
        frames = registered[name].config.data.num_frames
        hybrid = registered[name].config
        fast_only = registered[f"fastonly/video_qa_f{frames}"].config
        assert hybrid.model.hybrid and not fast_only.model.hybrid
        assert hybrid.model.num_fast_tokens == fast_only.model.num_fast_tokens == 16
        assert hybrid.model.num_slow_tokens == frames  # one token per frame
        assert hybrid.data.background == "blank" and hybrid.data.question_types == ("what",)
        assert hybrid.data == fast_only.data and hybrid.train == fast_only.train
        assert hybrid.model.hybrid_layers == (0, 2)
        assert dataclasses.replace(hybrid.model, hybrid=False) == fast_only.model
        slowfast.check_compatible(hybrid)


def test_all_fast_baseline_puts_every_frame_in_the_llm_input():
    config = presets()["allfast/video_qa_f128"].config
    reference = presets()["slowfast/video_qa"].config
    assert not config.model.hybrid and config.model.num_fast_tokens == 128
    assert config.data == reference.data and config.train == reference.train
    slowfast.check_compatible(config)
    with pytest.raises(ValueError, match="no hybrid layers"):
        slowfast.video_qa(128, hybrid=True, all_fast=True)


def test_mismatched_frames_are_rejected():
    config = presets()["slowfast/video_qa"].config
    bad = dataclasses.replace(config, data=dataclasses.replace(config.data, num_frames=64))
    with pytest.raises(ValueError, match="data.num_frames=64 but model.tokens.num_frames=128"):
        slowfast.check_compatible(bad)
