"""Fashion-MNIST read from the idx files of the Debian package `dataset-fashion-mnist`."""

import functools
import gzip
import os
import pathlib
from typing import Literal

import numpy as np
from jaxtyping import Int32, UInt8

from efficient.checks import validates_arguments

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "EFFICIENT_FASHION_MNIST_DIR"
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or set the environment "
    f"variable {ENV_VAR} to a directory holding the four *-ubyte.gz idx files"
)

# Pixel statistics of the 60k training images after scaling to [0, 1] (exact: 0.28604, 0.35302);
# a data test recomputes them.
MEAN = 0.2860
STD = 0.3530
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 0x00000803  # idx: unsigned byte, 3 dimensions
_LABELS_MAGIC = 0x00000801  # idx: unsigned byte, 1 dimension


def data_dir() -> pathlib.Path:
    """Returns the Fashion-MNIST directory: `$EFFICIENT_FASHION_MNIST_DIR`, else the Debian path."""
    return pathlib.Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _read_idx(path: pathlib.Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Decodes one gzip idx file of unsigned bytes and checks its header against `shape`."""
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST file {path} is missing: {INSTALL_HINT}.")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = len(shape)
    header_bytes = 4 * (1 + ndim)
    if len(raw) < header_bytes:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an idx header.")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(
            f"{path}: idx magic number {int(header[0]):#010x}, expected {magic:#010x} "
            f"(unsigned bytes, {ndim} dimensions)."
        )
    dims = tuple(int(d) for d in header[1:])
    if dims != shape:
        raise ValueError(f"{path}: idx dimensions {dims}, expected {shape}.")
    payload = len(raw) - header_bytes
    if payload != int(np.prod(shape)):
        raise ValueError(f"{path}: {payload} data bytes, expected {int(np.prod(shape))}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


@functools.cache
def _load(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not directory.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST directory {directory} not found: {INSTALL_HINT}.")
    n = SPLIT_SIZES[split]
    prefix = directory / _FILE_PREFIX[split]
    images = _read_idx(pathlib.Path(f"{prefix}-images-idx3-ubyte.gz"), _IMAGES_MAGIC, (n, 28, 28))
    labels = _read_idx(pathlib.Path(f"{prefix}-labels-idx1-ubyte.gz"), _LABELS_MAGIC, (n,))
    if int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"{prefix}-labels: label {int(labels.max())} outside [0, {NUM_CLASSES}).")
    images = images.reshape(n, 28, 28, 1)  # [B, H, W, C]
    labels = labels.astype(np.int32)
    # Shared by every caller in the process: read-only so that no pipeline can corrupt the cache.
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@validates_arguments
def load_fashion_mnist(
    split: Literal["train", "test"],
) -> tuple[UInt8[np.ndarray, "B 28 28 1"], Int32[np.ndarray, " B"]]:
    """Loads one Fashion-MNIST split, decoded once per process and cached.

    Args:
        split: "train" (60 000 examples) or "test" (10 000 examples).

    Returns:
        `(images, labels)`: read-only uint8 images [B, 28, 28, 1] in file order and int32 labels
        in [0, 10).

    Raises:
        FileNotFoundError: the directory or a file is missing; the message says how to install
            the Debian package and which environment variable points elsewhere.
        ValueError: `split` is unknown, or a file has a wrong magic number, shape or size.
    """
    if not isinstance(split, str) or split not in SPLIT_SIZES:  # a list: this, not a TypeError
        raise ValueError(f"split={split!r}: expected one of {sorted(SPLIT_SIZES)}.")
    return _load(data_dir().resolve(), split)
