"""Grain image pipelines (Fashion-MNIST or synthetic): sharded, checkpointable, deterministic."""

import dataclasses
from typing import Literal

import grain
import jax
import numpy as np
from jaxtyping import Bool, Float32, Int, UInt8

from efficient.checks import check_field_types, check_positive_ints, validates_arguments
from efficient.data import fashion_mnist, synthetic
from efficient.data._grain import (
    _check_shard,
    _derived_seed,
    _shard_slice,
    _to_iter,
    _train_index_batches,
)

Batch = dict[str, np.ndarray]

PAD = 2  # pixels of zero padding before the random crop
# Independent streams derived from `ImageDataConfig.seed`, so that no two uses share a seed.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageDataConfig:
    """Image pipeline settings shared by `train_dataset`, `eval_dataset` and `dataset_info`.

    With `augment`, training images get the standard Fashion-MNIST recipe: zero-pad 2 pixels on
    each side, take a random 28x28 crop (offsets uniform in {0, ..., 4}), and flip horizontally
    with probability 1/2. Evaluation images are never augmented.

    Attributes:
        source: "fashion_mnist" (the Debian package) or "synthetic" (`synthetic.synthetic_images`).
        batch_size: global training batch size, over all processes together.
        eval_batch_size: global evaluation batch size; the last batch is padded to it.
        seed: determines the shuffle of every epoch, the augmentation and the synthetic data.
        augment: random crop + horizontal flip on training batches.
        image_size: synthetic image height and width (default 32); Fashion-MNIST is 28.
        num_classes: synthetic classes; Fashion-MNIST has 10.
        synthetic_train_size: synthetic training examples.
        synthetic_eval_size: synthetic evaluation examples.
        worker_count: grain worker processes (`mp_prefetch`); 0 computes batches in-process.
    """

    source: Literal["fashion_mnist", "synthetic"] = "fashion_mnist"
    batch_size: int = 128
    eval_batch_size: int = 500
    seed: int = 0
    augment: bool = True
    image_size: int | None = None
    num_classes: int = 10
    synthetic_train_size: int = 2048
    synthetic_eval_size: int = 512
    worker_count: int = 0

    def __post_init__(self):
        check_field_types(self)
        sizes = ("batch_size", "eval_batch_size", "synthetic_train_size", "synthetic_eval_size")
        check_positive_ints(self, sizes)
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed}: expected an integer in [0, 2**32).")
        if self.worker_count < 0:
            raise ValueError(f"worker_count={self.worker_count}: expected >= 0.")
        if self.source == "fashion_mnist":
            if self.image_size not in (None, fashion_mnist.IMAGE_SHAPE[0]):
                raise ValueError(
                    f"image_size={self.image_size}: Fashion-MNIST images are 28x28 (image_size "
                    "applies to source='synthetic' only)."
                )
            if self.num_classes != fashion_mnist.NUM_CLASSES:
                raise ValueError(
                    f"num_classes={self.num_classes}: Fashion-MNIST has 10 classes (num_classes "
                    "applies to source='synthetic' only)."
                )
        else:
            if self.image_size is not None and self.image_size <= 2 * PAD:
                raise ValueError(f"image_size={self.image_size}: expected > {2 * PAD}.")
            if self.num_classes < 2:
                raise ValueError(f"num_classes={self.num_classes}: expected at least 2.")


def dataset_info(config: ImageDataConfig) -> dict:
    """Describes the data a config yields, without loading it.

    Args:
        config: the pipeline settings.

    Returns:
        `{"image_shape": (H, W, C), "num_classes", "train_size", "eval_size", "source"}`.
    """
    if config.source == "fashion_mnist":
        return {
            "image_shape": fashion_mnist.IMAGE_SHAPE,
            "num_classes": fashion_mnist.NUM_CLASSES,
            "train_size": fashion_mnist.SPLIT_SIZES["train"],
            "eval_size": fashion_mnist.SPLIT_SIZES["test"],
            "source": config.source,
        }
    size = config.image_size or 32
    return {
        "image_shape": (size, size, 1),
        "num_classes": config.num_classes,
        "train_size": config.synthetic_train_size,
        "eval_size": config.synthetic_eval_size,
        "source": config.source,
    }


def train_dataset(config: ImageDataConfig) -> grain.IterDataset:
    """The infinite training stream of this process.

    Epoch e is a fresh permutation of the training set (deterministic in `config.seed` and e),
    cut into `train_size // batch_size` global batches (the remainder of each epoch is dropped,
    so no batch mixes two epochs). Each process yields rows
    `[i * b, (i + 1) * b)` of every global batch, `b = batch_size // process_count`, so the
    processes together see exactly the single-process batches, augmentation included. The
    augmentation draws depend only on the seed and the global step.

    `iter(train_dataset(config))` is checkpointable: `get_state()` is a small JSON-serialisable
    dict, and `set_state` on a fresh iterator resumes the exact same batches (orbax:
    `grain.checkpoint.CheckpointSave`/`CheckpointRestore`).

    Args:
        config: the pipeline settings.

    Returns:
        An IterDataset of `{"image": float32 [b, H, W, C] normalised, "label": int32 [b],
        "mask": float32 [b] of ones}`.

    Raises:
        ValueError: `batch_size` is not divisible by the process count or exceeds the split.
    """
    return _train_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def eval_dataset(config: ImageDataConfig) -> grain.IterDataset:
    """One in-order pass over the evaluation split (the Fashion-MNIST test set), for this process.

    Global batches hold `eval_batch_size` examples; the last one is padded with zero images and
    label 0 whose `mask` is 0.0. Each process yields its rows of every global batch, as in
    `train_dataset`.

    Args:
        config: the pipeline settings.

    Returns:
        A finite IterDataset of `{"image", "label", "mask"}` batches (see `train_dataset`).

    Raises:
        ValueError: `eval_batch_size` is not divisible by the process count.
    """
    return _eval_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def _train_dataset(
    config: ImageDataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.batch_size, "batch_size", process_index, process_count)
    num_examples = dataset_info(config)["train_size"]
    if config.batch_size > num_examples:
        raise ValueError(
            f"batch_size={config.batch_size}: larger than the {num_examples} training examples."
        )
    shuffle_seed = _derived_seed(config.seed, _SHUFFLE_STREAM)
    ds = _train_index_batches(num_examples, config.batch_size, shuffle_seed)
    transform = _Batcher(config, "train", process_index, process_count)
    if config.augment:
        ds = ds.random_map(transform, seed=_derived_seed(config.seed, _AUGMENT_STREAM))
    else:
        ds = ds.map(transform)
    return _to_iter(ds, config.worker_count)


def _eval_dataset(
    config: ImageDataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.eval_batch_size, "eval_batch_size", process_index, process_count)
    num_examples = dataset_info(config)["eval_size"]
    ds = grain.MapDataset.range(num_examples).batch(config.eval_batch_size, drop_remainder=False)
    ds = ds.map(_Batcher(config, "test", process_index, process_count))
    return _to_iter(ds, config.worker_count)


def _source_arrays(config: ImageDataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    if config.source == "fashion_mnist":
        return fashion_mnist.load_fashion_mnist(split)
    return synthetic.synthetic_images(
        split,
        size=config.synthetic_train_size if split == "train" else config.synthetic_eval_size,
        image_size=config.image_size or 32,
        num_classes=config.num_classes,
        seed=config.seed,
    )


def _crop_flip(
    images: UInt8[np.ndarray, "B H W C"],
    offsets: Int[np.ndarray, "B 2"],
    flip: Bool[np.ndarray, " B"],
    pad: int = PAD,
) -> UInt8[np.ndarray, "B H W C"]:
    """Crops each zero-padded image at (row, column) `offsets` in [0, 2 pad], then maybe flips it.

    Equivalent to `np.pad(x, pad)[dy : dy + H, dx : dx + W]` (then `[:, ::-1]` where `flip`),
    vectorised over the batch with one gather.
    """
    B, H, W, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # [B, H+2p, W+2p, C]
    rows = offsets[:, :1] + np.arange(H)  # [B, H]
    cols = offsets[:, 1:] + np.arange(W)  # [B, W]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)  # [B, W]
    batch = np.arange(B)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]


# uint8 -> (x / 255 - mean) / std, computed in float64 once: normalising is then one gather.
_NORMALISE = ((np.arange(256) / 255.0 - fashion_mnist.MEAN) / fashion_mnist.STD).astype(np.float32)


def _normalise(images: UInt8[np.ndarray, "*batch"]) -> Float32[np.ndarray, "*batch"]:
    return _NORMALISE[images]


class _Batcher:
    """Turns a global batch of example indices into this process's batch dict.

    A picklable object rather than a closure, so that `mp_prefetch` workers can rebuild it; the
    arrays come from the per-process caches of the sources, not from the pickle.
    """

    def __init__(self, config: ImageDataConfig, split: str, process_index: int, process_count: int):
        self.config = config
        self.split = split
        self.process_index = process_index
        self.process_count = process_count

    def __call__(
        self, indices: Int[np.ndarray, " n"], rng: np.random.Generator | None = None
    ) -> Batch:
        images, labels = _source_arrays(self.config, self.split)
        size = len(indices) if self.split == "train" else self.config.eval_batch_size
        mask = np.zeros(size, np.float32)
        mask[: len(indices)] = 1.0
        padded = np.zeros(size, np.int64)
        padded[: len(indices)] = indices
        shard = _shard_slice(size, self.process_index, self.process_count)
        mask, idx = mask[shard], padded[shard]
        x = images[idx]  # [b, H, W, C]
        if rng is not None:
            # Drawn for the whole global batch, then sliced: every process count sees the same
            # augmentation for the same example of the same step.
            offsets = rng.integers(0, 2 * PAD + 1, size=(size, 2))[shard]
            flip = (rng.random(size) < 0.5)[shard]
            x = _crop_flip(x, offsets, flip)
        image = _normalise(x)
        image[mask == 0] = 0.0
        label = np.where(mask > 0, labels[idx], 0).astype(np.int32)
        return {"image": image, "label": label, "mask": mask}
