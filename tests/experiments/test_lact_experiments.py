"""LaCT presets: the smoke run end to end with its per-position evaluation, the per-position
evaluation against a direct numpy computation, and the KJV trio's equal sizes and budgets."""

import dataclasses
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.lact import LaCTConfig
from efficient.models.transformer import Transformer, TransformerConfig
from experiments import lact, transformer
from experiments import run as run_cli
from experiments.language_modeling import (
    LanguageModeling,
    build_model,
    format_per_position,
    latest_per_position,
    per_position_loss,
    plot_per_position,
)
from experiments.registry import presets

KJV_TRIO = ("lact/kjv", "transformer/kjv_long", "transformer/kjv_swa")


def test_smoke_trains_and_reports_loss_per_position(tmp_path):
    args = ["lact/smoke", "--workdir", str(tmp_path), "--train.progress", "False",
            "--train.steps", "6", "--train.eval_every", "0", "--sample.prompts", "ab",
            "--sample.max_new_tokens", "4", "--sample.temperature", "0.0"]  # fmt: skip
    assert run_cli.main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    curve = summary["per_position_eval"]
    # T = 64 in buckets of the smoke model's chunk (16): one bucket per chunk.
    assert curve["bucket"] == 16 and curve["seq_len"] == 64
    assert curve["start"] == [0, 16, 32, 48] and curve["end"] == [16, 32, 48, 64]
    assert all(math.isfinite(x) for x in curve["loss"] + curve["accuracy"])
    # The same parameters and validation windows as the final evaluation: the token-weighted
    # mean of the buckets is its loss.
    weighted = np.dot(curve["loss"], curve["tokens"]) / np.sum(curve["tokens"])
    np.testing.assert_allclose(weighted, summary["final_eval"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(curve["mean_loss"], summary["final_eval"]["loss"], rtol=1e-5)
    assert sum(curve["tokens"]) == summary["data"]["eval_tokens"]
    assert json.loads((tmp_path / "per_position_loss.json").read_text()) == curve
    assert (tmp_path / "plots" / "per_position_loss.png").stat().st_size > 1000
    assert summary["samples"][0].startswith("ab")


def _batches(rng, T, rows, eval_batch):
    """Eval-style batches: random bytes, the last window short (mask 0 past its end) and the last
    batch padded with zero rows of mask 0."""
    inputs = rng.integers(0, 256, (rows, T), dtype=np.int32)
    targets = rng.integers(0, 256, (rows, T), dtype=np.int32)
    mask = np.ones((rows, T), np.float32)
    mask[-1, T // 2 :] = 0.0
    pad = -rows % eval_batch
    inputs, targets, mask = (
        np.concatenate([a, np.zeros((pad, T), a.dtype)]) for a in (inputs, targets, mask)
    )
    return [
        {"inputs": inputs[i : i + eval_batch], "targets": targets[i : i + eval_batch],
         "mask": mask[i : i + eval_batch]}
        for i in range(0, rows + pad, eval_batch)
    ]  # fmt: skip


def test_per_position_loss_equals_a_direct_computation(key):
    T, bucket = 10, 4  # buckets [0, 4), [4, 8), [8, 10): the last one shorter
    model = Transformer(TransformerConfig.smoke())
    params = nn.unbox(model.init(key, jnp.zeros((1, T), jnp.int32))["params"])
    batches = _batches(np.random.default_rng(0), T, rows=7, eval_batch=3)
    curve = per_position_loss(model, params, batches, bucket)

    ce, correct, count = np.zeros(T), np.zeros(T), np.zeros(T)
    for b in batches:
        logits = np.asarray(model.apply({"params": params}, jnp.asarray(b["inputs"])), np.float64)
        logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                      keepdims=True)) - logits.max(-1, keepdims=True)  # fmt: skip
        nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]  # [B, T]
        ce += np.sum(nll * b["mask"], 0)
        correct += np.sum((logits.argmax(-1) == b["targets"]) * b["mask"], 0)
        count += np.sum(b["mask"], 0)
    spans = [(0, 4), (4, 8), (8, 10)]
    assert curve["start"] == [0, 4, 8] and curve["end"] == [4, 8, 10] and curve["seq_len"] == T
    assert curve["tokens"] == [float(count[s:e].sum()) for s, e in spans]
    assert curve["tokens"] == [28.0, 25.0, 12.0]  # 7 windows; the last one has 5 targets
    np.testing.assert_allclose(
        curve["loss"], [ce[s:e].sum() / count[s:e].sum() for s, e in spans], rtol=1e-5
    )
    np.testing.assert_allclose(
        curve["accuracy"], [correct[s:e].sum() / count[s:e].sum() for s, e in spans], atol=1e-12
    )
    np.testing.assert_allclose(curve["mean_loss"], ce.sum() / count.sum(), rtol=1e-5)
    assert format_per_position(curve).startswith(f"0-3: {curve['loss'][0]:.3f}, 4-7: ")


def test_per_position_helpers(tmp_path):
    curve = {"bucket": 2, "seq_len": 4, "start": [0, 2], "end": [2, 4], "loss": [2.0, 1.5],
             "accuracy": [0.1, 0.2], "tokens": [4.0, 4.0], "mean_loss": 1.75}  # fmt: skip
    plot_per_position({"a": curve, "b": curve}, tmp_path / "p" / "fig.png", windows={"a": 2})
    assert (tmp_path / "p" / "fig.png").stat().st_size > 1000
    assert latest_per_position("x/y", tmp_path) is None
    for stamp, status in (("20250101T000000Z", "completed"), ("20250102T000000Z", "interrupted")):
        (tmp_path / "x" / "y" / stamp).mkdir(parents=True)
        summary = {"status": status, "per_position_eval": {**curve, "stamp": stamp}}
        (tmp_path / "x" / "y" / stamp / "summary.json").write_text(json.dumps(summary))
    assert latest_per_position("x/y", tmp_path)["stamp"] == "20250101T000000Z"
    with pytest.raises(ValueError, match="position_bucket"):
        LanguageModeling(model=LaCTConfig.smoke(), position_bucket=0)
    with pytest.raises(ValueError, match="bucket"):
        per_position_loss(None, None, [], 0)


def _num_params(config) -> int:
    model = build_model(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(shapes["params"])))


def test_kjv_trio_has_equal_sizes_budgets_and_recipes():
    table = presets()
    configs = {name: table[name].config for name in KJV_TRIO}
    counts = {name: _num_params(c.model) for name, c in configs.items()}
    assert counts["lact/kjv"] == LaCTConfig.cpu_small().num_params() == 3_470_120
    assert max(counts.values()) <= 1.02 * min(counts.values())
    ours = configs["lact/kjv"]
    for name, config in configs.items():  # the same data, steps, optimizer, eval and samples
        assert dataclasses.replace(config, model=ours.model) == ours, name
    window = ours.model.sliding_window
    assert window == ours.model.chunk_size == ours.position_bucket == 64
    assert ours.data.seq_len == 8 * window  # "a context several times the window"
    assert configs["transformer/kjv_swa"].model.sliding_window == window
    assert configs["transformer/kjv_long"].model.sliding_window is None
    assert configs["transformer/kjv_long"].model == transformer.kjv_model()
    # transformer/kjv's recipe and tokens per step (32 x 256 = 16 x 512).
    reference = table["transformer/kjv"].config
    assert ours.data.batch_size * ours.data.seq_len == 8192
    assert reference.data.batch_size * reference.data.seq_len == 8192
    assert ours.train.optimizer == reference.train.optimizer
    assert ours.train.steps == lact.KJV_STEPS and ours.sample == reference.sample
    assert table["lact/smoke"].config.position_bucket == LaCTConfig.smoke().chunk_size
