"""Wiring shared by image-classification experiments: config -> data -> model -> train."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax.numpy as jnp

from efficient.data import ImageDataConfig, dataset_info, eval_dataset, train_dataset
from efficient.train import OptimizerConfig, Task, TrainConfig, classification_loss, train
from experiments.registry import ModelRegistry


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageClassification:
    """An image classifier trained with softmax cross-entropy.

    Attributes:
      model: the model's config; `build_model` maps its type to the module.
      data: the image pipeline (source, batch sizes, augmentation, seed).
      train: the training loop (steps, optimizer, mesh, logging, checkpoints).
      label_smoothing: as in the DeiT/LowFormer recipes.
    """

    model: Any
    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    label_smoothing: float = 0.1


_MODELS = ModelRegistry("image")
register_model = _MODELS.register
build_model = _MODELS.build


def check_compatible(config: ImageClassification) -> None:
    """Model input channels and classes must match the data; say which knob to turn if not."""
    info = dataset_info(config.data)
    channels, classes = info["image_shape"][-1], info["num_classes"]
    if config.model.in_channels != channels:
        raise ValueError(
            f"model.in_channels={config.model.in_channels} but data.source="
            f"{config.data.source!r} has {channels} channel(s)."
        )
    if config.model.num_classes != classes:
        raise ValueError(
            f"model.num_classes={config.model.num_classes} but data.source="
            f"{config.data.source!r} has {classes} classes."
        )


def smoke(model_config) -> ImageClassification:
    """The smoke recipe every image model shares: 30 steps on 32x32x1 synthetic images."""
    return ImageClassification(
        model=model_config,
        data=ImageDataConfig(
            source="synthetic", batch_size=32, eval_batch_size=64, synthetic_train_size=512,
            synthetic_eval_size=128, image_size=32,
        ),
        train=TrainConfig(
            steps=30, log_every=5, eval_every=15, checkpoint_every=15,
            optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5, weight_decay=0.05),
        ),
    )  # fmt: skip


def run(config: ImageClassification, workdir: pathlib.Path, resume: bool = False) -> dict:
    """Train and evaluate; returns the summary (also in workdir/summary.json)."""
    task = Task(
        model=build_model(config.model), loss_fn=classification_loss(config.label_smoothing)
    )
    result = train(
        task,
        config.train,
        train_data=train_dataset(config.data),
        eval_data=lambda: eval_dataset(config.data),
        workdir=workdir,
        resume=resume,
        run_config=to_json(config),
    )
    return result.summary


def to_json(config) -> dict:
    """A dataclass tree as JSON-able values (dtypes by name)."""

    def convert(value):
        if dataclasses.is_dataclass(value):
            fields = {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"__type__": type(value).__name__, **fields}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, type) or hasattr(value, "dtype"):
            return jnp.dtype(value).name
        return value

    return convert(config)


__all__ = [
    "ImageClassification",
    "build_model",
    "check_compatible",
    "register_model",
    "run",
    "smoke",
    "to_json",
]
