"""ViT / DeiT presets: the plain-transformer baseline LowFormer is compared against.

Training data-efficient image transformers & distillation through attention (DeiT,
arXiv:2012.12877), Table 1 sizes; the recipe here is the LowFormer Fashion-MNIST one
(experiments/lowformer.py), so the two compare at an equal training budget.
"""

from __future__ import annotations

import dataclasses

from efficient.models.vit import ViT, ViTConfig
from experiments import image_classification, lowformer
from experiments.image_classification import (
    ImageClassification,
    check_compatible,
    register_model,
    run,
)
from experiments.registry import register

register_model(ViTConfig, ViT)


def fashion_mnist(epochs: int = 6) -> ImageClassification:
    """DeiT-Tiny on 28x28x1 with 7x7 patches (16 tokens), the LowFormer recipe otherwise."""
    recipe = lowformer.fashion_mnist(epochs)
    model = dataclasses.replace(
        ViTConfig.deit_tiny(), image_size=28, patch_size=7, in_channels=1, num_classes=10
    )
    return dataclasses.replace(recipe, model=model)


def smoke() -> ImageClassification:
    # The synthetic source draws one-channel 32x32 images.
    return image_classification.smoke(dataclasses.replace(ViTConfig.smoke(), in_channels=1))


register(
    "vit/smoke",
    "ViT (tiny) on synthetic images: 30 steps, seconds on CPU (CI runs it).",
    smoke(),
    run,
    check_compatible,
)
register(
    "vit/fashion_mnist",
    "DeiT-Tiny (patch 7) on Fashion-MNIST, the LowFormer recipe: KAT's baseline, 88.04% (CPU), "
    "87.91% (H100).",
    fashion_mnist(),
    run,
    check_compatible,
)
