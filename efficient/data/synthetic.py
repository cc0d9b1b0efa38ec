"""Synthetic class-conditional images: a fixed smooth template per class plus per-image noise."""

import functools
from typing import Literal

import numpy as np
from jaxtyping import Int32, UInt8

_SPLIT_STREAM = {"train": 1, "test": 2}
_TEMPLATE_STREAM = 0
_TEMPLATE_GRID = 4  # templates vary on a 4x4 grid, so a 2-pixel crop shift keeps them recognisable
_TEMPLATE_SCALE = 60.0  # grey levels; templates are N(0, 1) on the grid
_NOISE_SCALE = 50.0  # grey levels of i.i.d. noise: pixels overlap across classes, images don't


@functools.cache
def _templates(image_size: int, num_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _TEMPLATE_STREAM])
    cells = rng.standard_normal((num_classes, _TEMPLATE_GRID, _TEMPLATE_GRID))
    repeat = -(-image_size // _TEMPLATE_GRID)
    up = np.repeat(np.repeat(cells, repeat, axis=1), repeat, axis=2)  # [V, grid*r, grid*r]
    return up[:, :image_size, :image_size, None]  # [V, H, W, C=1]


@functools.cache
def _generate(
    split: str, size: int, image_size: int, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    labels = (np.arange(size) % num_classes).astype(np.int32)
    labels = rng.permutation(labels)
    noise = rng.standard_normal((size, image_size, image_size, 1), dtype=np.float32)
    grey = 128.0 + _TEMPLATE_SCALE * _templates(image_size, num_classes, seed)[labels]
    images = np.clip(np.rint(grey + _NOISE_SCALE * noise), 0, 255).astype(np.uint8)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def synthetic_images(
    split: Literal["train", "test"],
    *,
    size: int,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[UInt8[np.ndarray, "B H W 1"], Int32[np.ndarray, " B"]]:
    """Generates a learnable labelled image set, deterministic in its arguments and cached.

    Each class has one template, a standard normal 4x4 grid upsampled to `image_size` (shared by
    both splits of the same seed); an image is `128 + 60 * template + 50 * noise` grey levels,
    rounded and clipped to uint8, so it goes through the same normalisation as Fashion-MNIST.
    Classes are balanced (sizes differ by at most one) and the labels are in random order.

    Args:
        split: "train" or "test"; the splits draw independent noise and labels.
        size: number of examples.
        image_size: height and width of the square single-channel images.
        num_classes: number of classes (templates).
        seed: determines templates, labels and noise.

    Returns:
        `(images, labels)`: read-only uint8 images [B, H, W, 1] and int32 labels in
        [0, num_classes).

    Raises:
        ValueError: an argument is out of range.
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split={split!r}: expected one of {sorted(_SPLIT_STREAM)}.")
    if size < 1:
        raise ValueError(f"size={size}: expected a positive number of examples.")
    if image_size < 1:
        raise ValueError(f"image_size={image_size}: expected a positive integer.")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected at least 2.")
    if seed < 0:
        raise ValueError(f"seed={seed}: expected a non-negative integer.")
    return _generate(split, size, image_size, num_classes, seed)
