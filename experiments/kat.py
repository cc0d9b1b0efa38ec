"""KAT presets: smoke (synthetic images) and Fashion-MNIST next to `vit/fashion_mnist`.

Kolmogorov-Arnold Transformer (KAT, arXiv:2409.10594); the Fashion-MNIST preset is
`vit/fashion_mnist` with the model swapped for the KAT of the same size (DeiT-Ti, patch 7), so the
two runs differ only in the MLPs (GELU MLP vs GR-KAN).
"""

from __future__ import annotations

import dataclasses

from efficient.models.kat import KAT, KATConfig
from experiments import image_classification, vit
from experiments.image_classification import (
    ImageClassification,
    check_compatible,
    register_model,
    run,
)
from experiments.registry import register

register_model(KATConfig, KAT)


def fashion_mnist(epochs: int = 6) -> ImageClassification:
    """`vit.fashion_mnist(epochs)` (data, steps, optimizer, schedule) with
    `KATConfig.fashion_mnist()`: built from it, so the two recipes cannot drift apart."""
    return dataclasses.replace(vit.fashion_mnist(epochs), model=KATConfig.fashion_mnist())


def smoke() -> ImageClassification:
    # The synthetic source draws one-channel 32x32 images.
    return image_classification.smoke(dataclasses.replace(KATConfig.smoke(), in_channels=1))


register(
    "kat/smoke",
    "KAT (tiny, GR-KAN MLPs) on synthetic images: 30 steps, seconds on CPU (CI runs it).",
    smoke(),
    run,
    check_compatible,
)
register(
    "kat/fashion_mnist",
    "KAT-T (patch 7) on Fashion-MNIST with vit/fashion_mnist's recipe, to compare with that ViT "
    "at equal size and budget (results: README).",
    fashion_mnist(),
    run,
    check_compatible,
)
