"""Image pipelines: batch format, shuffling, augmentation, sharding, eval padding, checkpointing."""

import dataclasses
import itertools
import json
import pathlib

import grain
import numpy as np
import pytest

from efficient.data import (
    ImageDataConfig,
    dataset_info,
    eval_dataset,
    fashion_mnist,
    images,
    synthetic_images,
    train_dataset,
)

needs_fashion_mnist = pytest.mark.skipif(
    not pathlib.Path(fashion_mnist.DEFAULT_DIR).is_dir(),
    reason="needs the Debian package dataset-fashion-mnist "
    "(sudo apt-get install dataset-fashion-mnist)",
)

SMALL = ImageDataConfig(
    source="synthetic",
    batch_size=32,
    eval_batch_size=48,
    image_size=12,
    synthetic_train_size=96,
    synthetic_eval_size=100,
)


def _take(it, n: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(it, n))


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _reference_normalise(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) / 255.0 - 0.2860) / 0.3530


def _train_indices(config: ImageDataConfig, steps: int) -> list[np.ndarray]:
    n = dataset_info(config)["train_size"]
    seed = images._derived_seed(config.seed, images._SHUFFLE_STREAM)
    ds = images._train_index_batches(n, config.batch_size, seed)
    return [ds[i] for i in range(steps)]


# ---------------------------------------------------------------------------- config and format


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"image_size": 32}, "image_size=32"),
        ({"num_classes": 5}, "num_classes=5"),
        ({"source": "synthetic", "image_size": 4}, "image_size=4"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageDataConfig(**kwargs)


def test_dataset_info():
    assert dataset_info(ImageDataConfig()) == {
        "image_shape": (28, 28, 1),
        "num_classes": 10,
        "train_size": 60_000,
        "eval_size": 10_000,
        "source": "fashion_mnist",
    }
    info = dataset_info(ImageDataConfig(source="synthetic", num_classes=4))
    assert info["image_shape"] == (32, 32, 1) and info["num_classes"] == 4
    assert (info["train_size"], info["eval_size"]) == (2048, 512)


@pytest.mark.parametrize("augment", [True, False])
def test_train_batch_format(augment):
    config = dataclasses.replace(SMALL, augment=augment)
    (batch,) = _take(iter(train_dataset(config)), 1)
    assert set(batch) == {"image", "label", "mask"}
    assert batch["image"].shape == (32, 12, 12, 1) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
    assert batch["mask"].dtype == np.float32
    np.testing.assert_array_equal(batch["mask"], np.ones(32, np.float32))


def test_unaugmented_batches_are_normalised_source_examples():
    config = dataclasses.replace(SMALL, augment=False)
    x, y = synthetic_images("train", size=96, image_size=12, seed=0)
    batches = _take(iter(train_dataset(config)), 5)
    for batch, idx in zip(batches, _train_indices(config, 5), strict=True):
        np.testing.assert_array_equal(batch["label"], y[idx])
        np.testing.assert_allclose(batch["image"], _reference_normalise(x[idx]), rtol=0, atol=1e-6)


def test_batch_larger_than_split_is_rejected():
    with pytest.raises(ValueError, match="batch_size=200"):
        train_dataset(dataclasses.replace(SMALL, batch_size=200))


# ---------------------------------------------------------------------------- shuffling


def test_index_batches_reshuffle_each_epoch_and_drop_remainder():
    # 10 examples, batches of 3: 3 batches per epoch, one example dropped per epoch.
    ds = images._train_index_batches(10, 3, seed=7)
    epochs = [np.concatenate([ds[e * 3 + b] for b in range(3)]) for e in range(4)]
    for order in epochs:
        assert len(set(order.tolist())) == 9 and set(order.tolist()) <= set(range(10))
    assert len({tuple(order) for order in epochs}) == 4


def test_each_epoch_is_a_fresh_permutation():
    ds = images._train_index_batches(96, 32, seed=images._derived_seed(0, 0))
    first = np.concatenate([ds[i] for i in range(3)])
    second = np.concatenate([ds[i] for i in range(3, 6)])
    np.testing.assert_array_equal(np.sort(first), np.arange(96))
    np.testing.assert_array_equal(np.sort(second), np.arange(96))
    assert not np.array_equal(first, second)


def test_pipeline_epochs_are_permutations_of_the_examples():
    # Identify each yielded (unaugmented) image with its source example.
    config = dataclasses.replace(SMALL, augment=False)
    x, _ = synthetic_images("train", size=96, image_size=12, seed=0)
    lookup = {_reference_normalise(im).astype(np.float32).tobytes(): i for i, im in enumerate(x)}
    assert len(lookup) == 96
    batches = _take(iter(train_dataset(config)), 6)
    seen = [lookup[im.tobytes()] for batch in batches for im in batch["image"]]
    assert sorted(seen[:96]) == list(range(96)) and sorted(seen[96:]) == list(range(96))
    assert seen[:96] != seen[96:]


def test_same_seed_same_batches_different_seed_different():
    a = _take(iter(train_dataset(SMALL)), 4)
    b = _take(iter(train_dataset(SMALL)), 4)
    c = _take(iter(train_dataset(dataclasses.replace(SMALL, seed=1))), 4)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_consecutive_seeds_do_not_replay_each_others_epochs():
    # grain's shuffle uses seed + epoch; the derived seeds must not make seed 1 = seed 0 shifted.
    seed0 = images._train_index_batches(96, 96, images._derived_seed(0, images._SHUFFLE_STREAM))
    seed1 = images._train_index_batches(96, 96, images._derived_seed(1, images._SHUFFLE_STREAM))
    assert not np.array_equal(seed0[1], seed1[0])


# ---------------------------------------------------------------------------- augmentation


def test_crop_flip_hand_computed():
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
    # Offset (0, 4) in the 2-padded 7x7 image: rows -2..0, columns 2..4 of the original.
    offsets = np.array([[0, 4]])
    expected = np.array([[0, 0, 0], [0, 0, 0], [3, 0, 0]], np.uint8)
    got = images._crop_flip(x, offsets, np.array([False]))
    np.testing.assert_array_equal(got[0, :, :, 0], expected)
    got = images._crop_flip(x, offsets, np.array([True]))
    np.testing.assert_array_equal(got[0, :, :, 0], expected[:, ::-1])
    # The centre offset without flip is the identity.
    np.testing.assert_array_equal(images._crop_flip(x, np.array([[2, 2]]), np.array([False])), x)


def test_crop_flip_matches_per_image_slicing():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 5, 7, 2), dtype=np.uint8)
    offsets = rng.integers(0, 5, size=(16, 2))
    flip = rng.random(16) < 0.5
    got = images._crop_flip(x, offsets, flip)
    for i in range(16):
        padded = np.pad(x[i], ((2, 2), (2, 2), (0, 0)))
        want = padded[offsets[i, 0] : offsets[i, 0] + 5, offsets[i, 1] : offsets[i, 1] + 7]
        np.testing.assert_array_equal(got[i], want[:, ::-1] if flip[i] else want)


def test_augmented_images_are_crops_or_flips_of_their_examples():
    x, y = synthetic_images("train", size=96, image_size=12, seed=0)
    (batch,) = _take(iter(train_dataset(SMALL)), 1)
    (idx,) = _train_indices(SMALL, 1)
    np.testing.assert_array_equal(batch["label"], y[idx])
    changed = 0
    for image, i in zip(batch["image"], idx, strict=True):
        variants = [
            images._crop_flip(x[i : i + 1], np.array([[dy, dx]]), np.array([f]))[0]
            for dy, dx, f in itertools.product(range(5), range(5), (False, True))
        ]
        matches = [np.allclose(image, _reference_normalise(v), rtol=0, atol=1e-6) for v in variants]
        assert any(matches)
        changed += not np.allclose(image, _reference_normalise(x[i]), rtol=0, atol=1e-6)
    assert changed > 16  # 1 - 1/50 of them on average


# ---------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("augment", [True, False])
def test_process_shards_concatenate_to_the_global_batch(augment):
    config = dataclasses.replace(SMALL, augment=augment)
    whole = _take(iter(images._train_dataset(config, process_index=0, process_count=1)), 4)
    shards = [
        _take(iter(images._train_dataset(config, process_index=p, process_count=4)), 4)
        for p in range(4)
    ]
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            assert parts[0].shape[0] == 8
            np.testing.assert_array_equal(np.concatenate(parts), batch[key])


def test_eval_shards_concatenate_to_the_global_batch():
    whole = list(images._eval_dataset(SMALL, process_index=0, process_count=1))
    shards = [list(images._eval_dataset(SMALL, process_index=p, process_count=2)) for p in (0, 1)]
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            np.testing.assert_array_equal(np.concatenate(parts), batch[key])


def test_batch_not_divisible_by_process_count():
    with pytest.raises(ValueError, match="batch_size=32.*process count"):
        images._train_dataset(SMALL, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="eval_batch_size=48.*process count"):
        images._eval_dataset(SMALL, process_index=0, process_count=5)


# ---------------------------------------------------------------------------- evaluation


def test_synthetic_eval_is_in_order_and_padded():
    x, y = synthetic_images("test", size=100, image_size=12, seed=0)
    batches = list(eval_dataset(SMALL))
    assert [len(b["label"]) for b in batches] == [48, 48, 48]
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.r_[np.ones(100), np.zeros(44)].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:100], y)
    image = np.concatenate([b["image"] for b in batches])
    np.testing.assert_allclose(image[:100], _reference_normalise(x), rtol=0, atol=1e-6)
    assert not image[100:].any()


@pytest.mark.data
@needs_fashion_mnist
def test_fashion_mnist_eval_covers_the_test_set_once(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    config = ImageDataConfig(eval_batch_size=384)  # 10 000 = 26 * 384 + 16
    _, labels = fashion_mnist.load_fashion_mnist("test")
    batches = list(eval_dataset(config))
    assert len(batches) == 27 and all(b["image"].shape == (384, 28, 28, 1) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 10_000 and (mask[:10_000] == 1).all() and (mask[10_000:] == 0).all()
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:10_000], labels)


@pytest.mark.data
@needs_fashion_mnist
def test_fashion_mnist_train_batches(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    config = ImageDataConfig(batch_size=64, augment=False)
    x, y = fashion_mnist.load_fashion_mnist("train")
    (batch,) = _take(iter(train_dataset(config)), 1)
    (idx,) = _train_indices(config, 1)
    assert batch["image"].shape == (64, 28, 28, 1)
    np.testing.assert_array_equal(batch["label"], y[idx])
    np.testing.assert_allclose(batch["image"], _reference_normalise(x[idx]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("k", [1, 2, 3, 5])  # 3 batches per epoch: resume inside and across epochs
def test_resume_from_state_yields_the_same_batches(k):
    it = iter(train_dataset(SMALL))
    _take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    assert len(json.dumps(state)) < 1000
    expected = _take(it, 4)
    resumed = iter(train_dataset(SMALL))
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 4), expected)


def test_resume_eval_iterator():
    it = iter(eval_dataset(SMALL))
    next(it)
    state = it.get_state()
    expected = list(it)
    resumed = iter(eval_dataset(SMALL))
    resumed.set_state(state)
    _assert_batches_equal(list(resumed), expected)


def test_orbax_checkpoint_manager_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    it = iter(train_dataset(SMALL))
    _take(it, 2)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        # Advancing before the save completes must not change what was saved.
        expected = _take(it, 3)
        manager.wait_until_finished()
    fresh = iter(train_dataset(SMALL))
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        step = manager.latest_step()
        restored = manager.restore(
            step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh))
        )
    assert step == 2 and restored["data"] is fresh
    _assert_batches_equal(_take(fresh, 3), expected)


def test_worker_processes_give_the_same_batches_and_resume():
    config = dataclasses.replace(SMALL, worker_count=2)
    expected = _take(iter(train_dataset(SMALL)), 6)
    it = iter(train_dataset(config))
    try:
        got = _take(it, 2)
        state = json.loads(json.dumps(it.get_state()))
        got += _take(it, 4)
    finally:
        it.close()
    _assert_batches_equal(got, expected)
    resumed = iter(train_dataset(config))
    try:
        resumed.set_state(state)
        _assert_batches_equal(_take(resumed, 4), expected[2:])
    finally:
        resumed.close()
