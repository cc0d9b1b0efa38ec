"""Wiring shared by language-model experiments: config -> byte-level text -> model -> train ->
samples."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from efficient.data import (
    TextDataConfig,
    decode,
    encode,
    text_dataset_info,
    text_eval_dataset,
    text_train_dataset,
)
from efficient.models.transformer import generate
from efficient.train import (
    OptimizerConfig,
    Task,
    TrainConfig,
    TrainResult,
    next_token_loss,
    token_inputs,
    train,
)
from efficient.train.metrics import write_text_atomic
from experiments.image_classification import to_json
from experiments.registry import ModelRegistry


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """Text generated from the trained model at the end of a run.

    Attributes:
      prompts: each is continued separately (they are byte-encoded; equal lengths not needed).
      max_new_tokens: bytes generated per prompt; 0 skips sampling.
      temperature: 0 is greedy; > 0 samples.
      top_k: sample among the k most likely bytes; None: all.
      seed: sampling randomness.
    """

    prompts: tuple[str, ...] = ("And God said",)
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 40
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: expected >= 0.")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: expected >= 0 (0 is greedy).")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: expected a positive integer or None.")
        if self.max_new_tokens and not all(self.prompts):
            raise ValueError("prompts: every prompt needs at least one character.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanguageModeling:
    """A byte-level language model trained with next-token cross-entropy.

    Attributes:
      model: the model's config; `build_model` maps its type to the module.
      data: the text pipeline (corpus, sequence length, batch sizes, seed).
      train: the training loop (steps, optimizer, mesh, logging, checkpoints).
      sample: text generated at the end and saved to `samples.txt`.
      position_bucket: after a completed run, score the validation split once more with the
        final parameters and report the mean loss per bucket of this many positions within the
        context window (the LaCT paper's Figure 5 form: does the model use context beyond its
        window?); see `per_position_loss`. None: skip.
    """

    model: Any
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    position_bucket: int | None = None

    def __post_init__(self):
        if self.position_bucket is not None and self.position_bucket < 1:
            raise ValueError(f"position_bucket={self.position_bucket}: expected >= 1 or None.")


_MODELS = ModelRegistry("language")
register_model = _MODELS.register
build_model = _MODELS.build


def check_compatible(config: LanguageModeling) -> None:
    """The model's vocabulary must cover the data's; generation must fit the model."""
    vocab = text_dataset_info(config.data)["vocab_size"]
    if config.model.vocab_size < vocab:
        raise ValueError(
            f"model.vocab_size={config.model.vocab_size} but data.source={config.data.source!r} "
            f"has {vocab} symbols."
        )


def smoke(model_config) -> LanguageModeling:
    """The smoke recipe every language model shares: 40 steps on synthetic text, T = 64."""
    return LanguageModeling(
        model=model_config,
        data=TextDataConfig(
            source="synthetic", seq_len=64, batch_size=16, eval_batch_size=32, eval_tokens=2048
        ),
        train=TrainConfig(
            steps=40, log_every=10, eval_every=20, checkpoint_every=20,
            optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5, weight_decay=0.01),
        ),
        sample=SampleConfig(prompts=("the ",), max_new_tokens=32),
    )  # fmt: skip


def run(config: LanguageModeling, workdir: pathlib.Path, resume: bool = False) -> dict:
    """Train, evaluate and sample; returns the summary (also in workdir/summary.json)."""
    return train_and_sample(config, workdir, resume)[0].summary


def train_and_sample(
    config: LanguageModeling, workdir: pathlib.Path, resume: bool = False
) -> tuple[TrainResult, nn.Module]:
    """`run`, returning the training result (final state included) and the model as well.

    Samples go to `workdir/samples.txt` and the summary's "samples" when the run completed.
    """
    model = build_model(config.model)
    task = Task(
        model=model, loss_fn=next_token_loss(), inputs=token_inputs, best_metric=("loss", "min")
    )
    info = text_dataset_info(config.data)
    print(f"data: {info['source']}, {info['train_tokens']:,} train tokens, "
          f"{info['eval_tokens']:,} scored per evaluation; split: {info['split']}")  # fmt: skip
    result = train(
        task,
        config.train,
        train_data=text_train_dataset(config.data),
        eval_data=lambda: text_eval_dataset(config.data),
        workdir=workdir,
        resume=resume,
        run_config=to_json(config),
    )
    summary = result.summary
    summary["data"] = {k: v for k, v in info.items() if k != "train_windows"}
    if config.position_bucket and summary.get("status") == "completed":
        curve = per_position_loss(
            model, result.params, text_eval_dataset(config.data), config.position_bucket
        )
        summary["per_position_eval"] = curve
        (workdir / "per_position_loss.json").write_text(json.dumps(curve, indent=2))
        plot_per_position(
            {type(model).__name__: curve}, workdir / "plots" / "per_position_loss.png"
        )
        print(f"validation loss by position: {format_per_position(curve)}")
    if config.sample.max_new_tokens and summary.get("status") == "completed":
        samples = sample_text(model, result.params, config.sample)
        pairs = list(zip(config.sample.prompts, samples, strict=True))
        (workdir / "samples.txt").write_text("".join(f"--- prompt {p!r}\n{s}\n" for p, s in pairs))
        for prompt, text in pairs:
            print(f"--- sample (prompt {prompt!r}, temperature {config.sample.temperature}):")
            print(text)
        summary["samples"] = samples
    write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2, default=str))
    return result, model


def per_position_loss(
    model: nn.Module, params, batches: Iterable[dict], bucket: int
) -> dict[str, Any]:
    """Mean next-token loss and accuracy per bucket of positions within the context window.

    Position t of a window predicts its byte t + 1 from bytes 0..t, so a falling curve means the
    model uses the context seen so far; bucket b covers positions [b·bucket, (b+1)·bucket).
    Sums run in float64 over the real (mask 1) targets of every batch, on one device with the
    parameters gathered to the host (this process's rows only: a multi-process run reports
    process 0's share of the validation windows).

    Args:
        model: the language model, called as `model.apply({"params": p}, inputs, train=False)`.
        params: its parameters.
        batches: `{"inputs", "targets", "mask"}` batches of [B, T] (e.g. `text_eval_dataset`).
        bucket: positions per bucket (>= 1; the last bucket may be shorter).

    Returns:
        `{"bucket", "seq_len", "start", "end", "loss", "accuracy", "tokens"}`: lists over
        buckets (positions [start, end), mean loss in nats/token, accuracy, scored targets), and
        the overall "mean_loss", equal to the token-weighted mean of the buckets.

    Raises:
        ValueError: `bucket` < 1 or no batch.
    """
    if bucket < 1:
        raise ValueError(f"bucket={bucket}: expected >= 1.")

    @jax.jit
    def sums(params, inputs, targets, mask):
        logits = model.apply({"params": params}, inputs, train=False).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, T]
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)  # [B, T]
        return jnp.sum(ce * mask, 0), jnp.sum(correct * mask, 0), jnp.sum(mask, 0)  # [T] each

    params = jax.device_get(params)
    totals = None
    for batch in batches:
        mask = np.asarray(batch["mask"], np.float32)
        out = sums(params, batch["inputs"], batch["targets"], mask)
        out = [np.asarray(x, np.float64) for x in jax.device_get(out)]
        totals = out if totals is None else [a + b for a, b in zip(totals, out, strict=True)]
    if totals is None:
        raise ValueError("per_position_loss: no batches.")
    loss_sum, correct_sum, count = totals
    T = len(count)
    starts = list(range(0, T, bucket))
    ends = [min(s + bucket, T) for s in starts]
    tokens = [float(count[s:e].sum()) for s, e in zip(starts, ends, strict=True)]
    return {
        "bucket": bucket,
        "seq_len": T,
        "start": starts,
        "end": ends,
        "loss": [
            float(loss_sum[s:e].sum() / max(n, 1.0))
            for s, e, n in zip(starts, ends, tokens, strict=True)
        ],
        "accuracy": [
            float(correct_sum[s:e].sum() / max(n, 1.0))
            for s, e, n in zip(starts, ends, tokens, strict=True)
        ],
        "tokens": tokens,
        "mean_loss": float(loss_sum.sum() / max(count.sum(), 1.0)),
    }


def format_per_position(curve: Mapping[str, Any]) -> str:
    """One line: "0-63: 1.412, 64-127: 1.250, ..." (positions and mean loss per bucket)."""
    spans = zip(curve["start"], curve["end"], curve["loss"], strict=True)
    return ", ".join(f"{s}-{e - 1}: {v:.3f}" for s, e, v in spans)


def plot_per_position(
    curves: Mapping[str, Mapping[str, Any]],
    path: pathlib.Path | str | None = None,
    *,
    ax=None,
    title: str = "validation loss by position in the context",
    windows: Mapping[str, int] | None = None,
):
    """Plot `per_position_loss` curves (one line per label) against position; save a PNG.

    Args:
        curves: label -> a `per_position_loss` result (e.g. a run's `summary["per_position_eval"]`).
        path: where to save the figure (parents created); None: do not save.
        ax: a matplotlib Axes to draw on; None: a new figure.
        title: the axes title.
        windows: label -> a window length to mark with a dotted vertical line (e.g. attention
            windows); None: no marks.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, curve in curves.items():
        centres = [(s + e - 1) / 2 for s, e in zip(curve["start"], curve["end"], strict=True)]
        (line,) = ax.plot(centres, curve["loss"], "o-", ms=3, label=label)
        if windows and label in windows:
            ax.axvline(windows[label], color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("position in the context window (bucket centre)")
    ax.set_ylabel("validation loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    if own:
        plt.close(ax.figure)
    return ax


def latest_per_position(name: str, runs_dir: pathlib.Path | str = "runs") -> dict | None:
    """The per-position curve of the newest completed run of preset `name` under `runs_dir`
    (`runs/<name>/<utc time>/summary.json`), or None when there is none."""
    for summary in sorted(pathlib.Path(runs_dir, name).glob("*/summary.json"), reverse=True):
        data = json.loads(summary.read_text())
        if data.get("status") == "completed" and data.get("per_position_eval"):
            return data["per_position_eval"]
    return None


def sample_text(model: nn.Module, params, config: SampleConfig) -> list[str]:
    """Continue each prompt with `generate` (one jitted call per prompt length)."""
    params = jax.device_get(params)  # generation is small: run it unsharded
    out = []
    for i, prompt in enumerate(config.prompts):
        ids = jnp.asarray(encode(prompt), jnp.int32)[None]  # [1, P]
        tokens = generate(
            model,
            params,
            ids,
            jax.random.key(config.seed + i),
            max_new_tokens=config.max_new_tokens,
            temperature=float(config.temperature),
            top_k=config.top_k,
        )
        out.append(decode(np.asarray(tokens[0])))
    return out


__all__ = [
    "LanguageModeling",
    "SampleConfig",
    "build_model",
    "check_compatible",
    "format_per_position",
    "latest_per_position",
    "per_position_loss",
    "plot_per_position",
    "register_model",
    "run",
    "sample_text",
    "smoke",
    "train_and_sample",
]
