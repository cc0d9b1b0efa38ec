"""Synthetic images: format, determinism, balance, and that the classes can be learned."""

import numpy as np
import pytest

from efficient.data import synthetic_images


def test_format_and_balance():
    images, labels = synthetic_images("train", size=250, image_size=12, num_classes=7, seed=3)
    assert images.shape == (250, 12, 12, 1) and images.dtype == np.uint8
    assert labels.shape == (250,) and labels.dtype == np.int32
    counts = np.bincount(labels, minlength=7)
    assert counts.min() >= 250 // 7 and counts.max() <= 250 // 7 + 1
    assert not images.flags.writeable


def test_deterministic_by_seed():
    a = synthetic_images("train", size=64, seed=0)
    b = synthetic_images("train", size=64, seed=0)
    c = synthetic_images("train", size=64, seed=1)
    d = synthetic_images("test", size=64, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_nearest_class_mean_generalises_to_test_split():
    # Learnable means a classifier fit on train beats chance on test: the class means of the train
    # split (the templates plus averaged-out noise) classify held-out images.
    x, y = synthetic_images("train", size=500, image_size=16, seed=0)
    xt, yt = synthetic_images("test", size=200, image_size=16, seed=0)
    x = x.reshape(len(x), -1).astype(np.float64)
    xt = xt.reshape(len(xt), -1).astype(np.float64)
    means = np.stack([x[y == c].mean(axis=0) for c in range(10)])  # [V, H*W]
    dist = ((xt[:, None, :] - means[None]) ** 2).sum(-1)  # [B, V]
    assert (dist.argmin(axis=1) == yt).mean() > 0.9
    # ... and is not trivial per pixel: a single pixel's value cannot tell the classes apart.
    pixel = xt[:, 0]
    assert np.std(pixel - means[yt, 0]) > 30.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size=0"),
        ({"size": 8, "num_classes": 1}, "num_classes=1"),
        ({"size": 8, "image_size": 0}, "image_size=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_images("train", **kwargs)
