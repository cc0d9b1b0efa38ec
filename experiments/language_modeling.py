"""Wiring shared by language-model experiments: config -> byte-level text -> model -> train ->
samples."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    """

    model: Any
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sample: SampleConfig = dataclasses.field(default_factory=SampleConfig)


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
    print(f"data: {info['source']}, {info['train_tokens']:,} train / {info['eval_tokens']:,} "
          f"eval tokens; split: {info['split']}")  # fmt: skip
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
    if config.sample.max_new_tokens and summary.get("status") == "completed":
        samples = sample_text(model, result.state.params, config.sample)
        pairs = list(zip(config.sample.prompts, samples, strict=True))
        (workdir / "samples.txt").write_text("".join(f"--- prompt {p!r}\n{s}\n" for p, s in pairs))
        for prompt, text in pairs:
            print(f"--- sample (prompt {prompt!r}, temperature {config.sample.temperature}):")
            print(text)
        summary["samples"] = samples
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return result, model


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
    "register_model",
    "run",
    "sample_text",
    "smoke",
    "train_and_sample",
]
