"""LowFormer presets: smoke (synthetic), Fashion-MNIST (real data, CPU), and the quick main job.

LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones (arXiv:2409.03460). The
ImageNet recipe (AdamW, wd 0.1 off norms/biases, cosine with warm-up, grad clip 2.0, label smoothing
0.1; LowFormer's README and ImageNet configs) is kept; epochs, batch size and learning rate are
scaled to a 2-core CPU and 28x28 grey images. No crop/flip augmentation: in an 8-epoch budget the
model under-fits with it (91.40% test with train accuracy 91.65%) and reaches 92.13% without it
(efficient/models/lowformer/README.md).
"""

from __future__ import annotations

import dataclasses

from efficient.data import ImageDataConfig
from efficient.models.lowformer import LowFormer, LowFormerConfig
from efficient.train import OptimizerConfig, TrainConfig
from experiments import image_classification
from experiments.image_classification import (
    ImageClassification,
    check_compatible,
    register_model,
    run,
)
from experiments.registry import register

register_model(LowFormerConfig, LowFormer)

_STEPS_PER_EPOCH = 60_000 // 128  # Fashion-MNIST train split at batch 128 (remainder dropped)


def fashion_mnist(epochs: int = 8) -> ImageClassification:
    """LowFormer-B0 adapted to 28x28 grey Fashion-MNIST (see LowFormerConfig.fashion_mnist)."""
    steps = epochs * _STEPS_PER_EPOCH
    return ImageClassification(
        model=LowFormerConfig.fashion_mnist(),
        data=ImageDataConfig(
            source="fashion_mnist", batch_size=128, eval_batch_size=500, augment=False
        ),
        train=TrainConfig(
            steps=steps,
            log_every=50,
            eval_every=_STEPS_PER_EPOCH,
            checkpoint_every=_STEPS_PER_EPOCH,
            optimizer=OptimizerConfig(
                name="adamw",
                learning_rate=7e-4,
                warmup_steps=_STEPS_PER_EPOCH // 2,
                schedule="cosine",
                weight_decay=0.05,
                grad_clip_norm=2.0,
            ),
        ),
        label_smoothing=0.1,
    )


def smoke() -> ImageClassification:
    # The synthetic source draws one-channel 32x32 images.
    return image_classification.smoke(dataclasses.replace(LowFormerConfig.smoke(), in_channels=1))


register(
    "lowformer/smoke",
    "LowFormer (tiny) on synthetic images: 30 steps, seconds on CPU (CI runs it).",
    smoke(),
    run,
    check_compatible,
)
register(
    "lowformer/fashion_mnist",
    "LowFormer-B0 adapted to Fashion-MNIST 28x28: 8 epochs to >= 92% test accuracy (~25 min CPU).",
    fashion_mnist(epochs=8),
    run,
    check_compatible,
)
register(
    "lowformer/fashion_mnist_quick",
    "The main job (make run): the Fashion-MNIST preset cut to 2 epochs, a few minutes on CPU.",
    fashion_mnist(epochs=2),
    run,
    check_compatible,
)
