"""Fashion-MNIST idx reading: parsing, validation, statistics, the missing-package message."""

import gzip
import pathlib

import numpy as np
import pytest

from efficient.data import fashion_mnist

needs_fashion_mnist = pytest.mark.skipif(
    not pathlib.Path(fashion_mnist.DEFAULT_DIR).is_dir(),
    reason="needs the Debian package dataset-fashion-mnist "
    "(sudo apt-get install dataset-fashion-mnist)",
)


def _write_idx(path: pathlib.Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def test_read_idx_round_trip(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    _write_idx(path, 0x803, data.shape, data.tobytes())
    np.testing.assert_array_equal(fashion_mnist._read_idx(path, 0x803, (2, 3, 4)), data)


@pytest.mark.parametrize(
    "magic, dims, payload, match",
    [
        (0x801, (2, 3, 4), bytes(24), "magic number"),
        (0x803, (2, 3, 5), bytes(30), "dimensions"),
        (0x803, (2, 3, 4), bytes(23), "data bytes"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, magic, dims, payload, match):
    path = tmp_path / "bad.gz"
    _write_idx(path, magic, dims, payload)
    with pytest.raises(ValueError, match=match):
        fashion_mnist._read_idx(path, 0x803, (2, 3, 4))


def test_missing_directory_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist.load_fashion_mnist("train")
    message = str(info.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "EFFICIENT_FASHION_MNIST_DIR" in message
    assert str(tmp_path / "absent") in message


def test_missing_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="sudo apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist("test")


def test_env_var_overrides_default(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    assert fashion_mnist.data_dir() == tmp_path
    monkeypatch.delenv(fashion_mnist.ENV_VAR)
    assert fashion_mnist.data_dir() == pathlib.Path(fashion_mnist.DEFAULT_DIR)


@pytest.mark.data
@needs_fashion_mnist
@pytest.mark.parametrize("split, size", [("train", 60_000), ("test", 10_000)])
def test_splits_shapes_dtypes_and_balance(split, size, monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    images, labels = fashion_mnist.load_fashion_mnist(split)
    assert images.shape == (size, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (size,) and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() == 9
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, size // 10))
    # Real images, not a blank decode: each has dark background and bright foreground pixels.
    assert images.min() == 0 and images.max() == 255
    assert (images.reshape(size, -1).max(axis=1) > 100).all()
    assert not images.flags.writeable and not labels.flags.writeable
    assert fashion_mnist.load_fashion_mnist(split)[0] is images  # decoded once per process


@pytest.mark.data
@needs_fashion_mnist
def test_normalisation_constants_match_training_pixels(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    images, _ = fashion_mnist.load_fashion_mnist("train")
    x = images.astype(np.float64) / 255.0
    assert abs(x.mean() - fashion_mnist.MEAN) < 5e-5
    assert abs(x.std() - fashion_mnist.STD) < 5e-5


@pytest.mark.parametrize("split", ["validation", None, ["train"]])
def test_unknown_split_is_named(split):
    with pytest.raises(ValueError, match=r"split=.*expected one of \['test', 'train'\]"):
        fashion_mnist.load_fashion_mnist(split)
