"""Video QA clips: config checks, plans, text layout, batches, sharding, resuming, real data."""

import collections
import dataclasses
import itertools
import json
import math
import pathlib
import pickle

import numpy as np
import pytest

from efficient.data import (
    VideoQADataConfig,
    decode,
    fashion_mnist,
    make_clip,
    render_clips,
    sample_frames,
    synthetic_images,
    video_qa,
    video_qa_dataset_info,
    video_qa_eval_dataset,
    video_qa_train_dataset,
)

needs_fashion_mnist = pytest.mark.skipif(
    not pathlib.Path(fashion_mnist.DEFAULT_DIR).is_dir(),
    reason="needs the Debian package dataset-fashion-mnist "
    "(sudo apt-get install dataset-fashion-mnist)",
)

SMALL = VideoQADataConfig(
    source="synthetic",
    clip_frames=32,
    num_frames=32,
    scene_length=4,
    max_events=3,
    batch_size=8,
    eval_batch_size=6,
    eval_clips=20,
    synthetic_size=200,
)
KEYS = {
    "frames",
    "tokens",
    "token_types",
    "event_class",
    "background_class",
    "num_events",
    "question_type",
    "event_frames",
    "mask",
}


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


def _synthetic(config: VideoQADataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_images(
        split, size=config.synthetic_size, image_size=28, num_classes=10, seed=config.seed
    )


def _labels(size: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(size) % 10).astype(np.int32)


def _check_batch_against_plans(config, batch, images, labels, split, indices):
    """Every row of `batch` is the clip `make_clip` plans for its index, rendered from `images`."""
    sampled = sample_frames(config.clip_frames, config.num_frames)
    for r, index in enumerate(indices):
        plan = make_clip(config, labels, split=split, index=int(index))
        assert batch["event_class"][r] == plan.event_class
        assert batch["background_class"][r] == plan.background_class
        assert batch["num_events"][r] == plan.num_events
        assert batch["question_type"][r] == plan.question_type
        events = batch["event_frames"][r]
        np.testing.assert_array_equal(events[: len(plan.event_frames)], plan.event_frames)
        assert (events[len(plan.event_frames) :] == -1).all()
        want = _reference_normalise(images[plan.frame_image[sampled]])
        np.testing.assert_allclose(batch["frames"][r], want, rtol=0, atol=1e-6)
        shown = labels[plan.frame_image[sampled]]
        is_event = np.isin(sampled, plan.event_frames)
        assert (shown[is_event] == plan.event_class).all()
        assert (shown[~is_event] == plan.background_class).all()


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip_frames": 0}, "clip_frames=0"),
        ({"num_frames": 48}, "num_frames=48: expected a divisor of clip_frames=128"),
        ({"scene_length": 0}, "scene_length=0"),
        ({"max_events": 0}, "max_events=0"),
        ({"event_length": 0}, "event_length=0"),
        # 3 runs of 2 frames with a frame between them need 8 frames.
        (
            {"clip_frames": 7, "num_frames": 7, "event_length": 2},
            "max_events=3, event_length=2: non-adjacent events need 8 frames.*clip_frames=7",
        ),
        ({"question_types": ()}, "question_types=()"),
        ({"question_types": ("why",)}, "question_types=\\('why',\\)"),
        ({"question_types": ("what", "what")}, "question_types"),
        # "How many times does a T-shirt/top flash by? " + "3\n" is 44 + 2 bytes.
        ({"text_len": 45}, "text_len=45: .* is 46 bytes"),
        # "Which item flashes by? " + "T-shirt/top\n" is 23 + 12 bytes.
        ({"text_len": 34, "question_types": ("what",)}, "text_len=34: .* is 35 bytes"),
        ({"text_len": 46, "max_events": 10}, "text_len=46: .*max_events=10 is 47 bytes"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"eval_batch_size": 0}, "eval_batch_size=0"),
        ({"eval_clips": 0}, "eval_clips=0"),
        ({"seed": -1}, "seed=-1"),
        ({"worker_count": -1}, "worker_count=-1"),
        ({"source": "synthetic", "synthetic_size": 29}, "synthetic_size=29: .* 10 x 3 = 30"),
        ({"source": "synthetic", "synthetic_size": 0}, "synthetic_size=0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VideoQADataConfig(**kwargs)


def test_blank_background_has_no_scene_question():
    with pytest.raises(ValueError, match="'scene' question asks the background class"):
        VideoQADataConfig(background="blank", question_types=("what", "scene"))
    with pytest.raises(ValueError, match="background"):
        VideoQADataConfig(background="noise")


def test_boundary_configs_are_accepted():
    VideoQADataConfig(clip_frames=8, num_frames=8, event_length=2, text_len=46)
    VideoQADataConfig(text_len=35, question_types=("what",))
    VideoQADataConfig(source="synthetic", synthetic_size=30)


def test_unknown_source():
    with pytest.raises(ValueError, match="source"):
        VideoQADataConfig(source="mnist")


def test_max_text_len_is_the_longest_question_and_answer():
    longest = "How many times does a T-shirt/top flash by? " + "3\n"
    assert video_qa.max_text_len(("what", "count"), 3) == len(longest) == 46
    assert video_qa.max_text_len(("what",), 3) == len("Which item flashes by? T-shirt/top\n")
    assert video_qa.max_text_len(("count",), 12) == len(longest) + 1


@pytest.mark.parametrize("question_type", ["wat", None, 1, ["what"]])
def test_unknown_question_type_is_refused_not_asked_as_count(question_type):
    with pytest.raises(ValueError, match=r"question_type=.*one of \['count', 'present'"):
        video_qa.clip_text(question_type, 3, 2)
    with pytest.raises(ValueError, match="question_type='wat'"):
        video_qa.max_text_len(("what", "wat"), 3)


def test_dataset_info():
    info = video_qa_dataset_info(VideoQADataConfig())
    assert info["source"] == "fashion-mnist"
    assert (info["train_images"], info["eval_images"], info["eval_clips"]) == (60_000, 10_000, 1024)
    assert (info["clip_frames"], info["num_frames"], info["frame_stride"]) == (128, 128, 1)
    assert info["frame_shape"] == (28, 28, 1) and info["num_classes"] == 10
    assert info["class_names"][0] == "T-shirt/top" and info["class_names"][9] == "Ankle boot"
    assert info["chance_accuracy"] == {"what": 1 / 9, "count": 1 / 3}
    assert info["mean_chance_accuracy"] == pytest.approx((1 / 9 + 1 / 3) / 2)
    assert info["max_text_len"] == 46 and info["vocab_size"] == 256
    assert info["every_event_sampled"]
    info = video_qa_dataset_info(
        dataclasses.replace(SMALL, num_frames=8, max_events=4, question_types=("count",))
    )
    assert info["chance_accuracy"] == {"count": 0.25} and info["frame_stride"] == 4
    assert (info["train_images"], info["eval_images"]) == (200, 200)
    assert not info["every_event_sampled"]


# ---------------------------------------------------------------------------- clip plans


def test_sample_frames():
    np.testing.assert_array_equal(sample_frames(128, 16), np.arange(0, 128, 8))
    np.testing.assert_array_equal(sample_frames(128, 128), np.arange(128))
    np.testing.assert_array_equal(sample_frames(6, 2), [0, 3])
    for bad in (48, 0, 256):
        with pytest.raises(ValueError, match=f"num_frames={bad}"):
            sample_frames(128, bad)


def _check_plan(config: VideoQADataConfig, plan, labels: np.ndarray) -> None:
    T, L, S = config.clip_frames, config.event_length, config.scene_length
    b, e, n = plan.background_class, plan.event_class, plan.num_events
    assert 0 <= b < 10 and 0 <= e < 10 and b != e and 1 <= n <= config.max_events
    assert plan.frame_image.shape == (T,)
    # Exactly n runs of L frames, in range, with at least one background frame between two.
    frames = plan.event_frames
    assert frames.shape == (n * L,) and (frames >= 0).all() and (frames < T).all()
    runs = frames.reshape(n, L)
    np.testing.assert_array_equal(runs, runs[:, :1] + np.arange(L))
    assert (runs[1:, 0] - runs[:-1, -1] >= 2).all()
    # Event frames show class e, one image per run, a different one for every run.
    is_event = np.zeros(T, bool)
    is_event[frames] = True
    shown = labels[plan.frame_image]
    assert (shown[is_event] == e).all() and (shown[~is_event] == b).all()
    run_images = plan.frame_image[runs]  # [n, L]
    assert (run_images == run_images[:, :1]).all()
    assert len(set(run_images[:, 0].tolist())) == n
    # The background image is constant within a scene and changes at every scene boundary.
    background = np.flatnonzero(~is_event)
    for f, g in itertools.pairwise(background):
        same = plan.frame_image[f] == plan.frame_image[g]
        if f // S == g // S:
            assert same, (f, g)
        elif g // S == f // S + 1:
            assert not same, (f, g)
    # The question asks about the event.
    name = video_qa.CLASS_NAMES[e]
    if video_qa.QUESTION_TYPES[plan.question_type] == "what":
        assert (plan.question, plan.answer) == ("Which item flashes by? ", f"{name}\n")
    else:
        assert plan.question == f"How many times does a {name} flash by? "
        assert plan.answer == f"{n}\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"scene_length": 3, "event_length": 3, "max_events": 5},
        {"scene_length": 1, "max_events": 1},
        {"scene_length": 7, "event_length": 2},
        # The tightest fit: 3 runs of 2 with single gaps fill all 8 frames.
        {"clip_frames": 8, "num_frames": 8, "event_length": 2, "max_events": 3},
    ],
)
def test_plans_follow_the_clip_rules(kwargs):
    config = dataclasses.replace(SMALL, **kwargs)
    labels = _labels()
    for split, index in itertools.product(("train", "test"), range(60)):
        _check_plan(config, make_clip(config, labels, split=split, index=index), labels)


def test_plans_are_deterministic_and_depend_on_seed_split_and_index():
    labels = _labels()

    def key(config, split, index):
        plan = make_clip(config, labels, split=split, index=index)
        return plan.frame_image.tobytes(), plan.question, plan.answer

    assert key(SMALL, "train", 5) == key(SMALL, "train", 5)
    # Settings that do not shape clips (batch sizes, source) leave them unchanged.
    other = dataclasses.replace(SMALL, batch_size=4, eval_clips=3, source="fashion-mnist")
    assert key(other, "train", 5) == key(SMALL, "train", 5)
    assert key(SMALL, "train", 5) != key(SMALL, "train", 6)
    assert key(SMALL, "train", 5) != key(SMALL, "test", 5)
    assert key(SMALL, "train", 5) != key(dataclasses.replace(SMALL, seed=1), "train", 5)


def test_plan_draws_are_uniform():
    # 5 frames, n = 2 runs of 1: the non-adjacent placements are the C(4, 2) = 6 below.
    config = dataclasses.replace(
        SMALL, clip_frames=5, num_frames=5, max_events=2, question_types=("what", "count")
    )
    labels = _labels()
    plans = [make_clip(config, labels, split="train", index=i) for i in range(3000)]
    placements = collections.Counter(
        tuple(p.event_frames.tolist()) for p in plans if p.num_events == 2
    )
    assert set(placements) == {(0, 2), (0, 3), (0, 4), (1, 3), (1, 4), (2, 4)}
    total = sum(placements.values())
    assert abs(total / 3000 - 1 / 2) < 0.05
    assert all(abs(c / total - 1 / 6) < 0.05 for c in placements.values())  # ~5 sigma
    pairs = collections.Counter((p.background_class, p.event_class) for p in plans)
    assert len(pairs) == 90 and min(pairs.values()) > 10  # 33 expected each
    kinds = collections.Counter(p.question_type for p in plans)
    assert abs(kinds[0] / 3000 - 1 / 2) < 0.05


def test_make_clip_errors():
    with pytest.raises(ValueError, match="split"):
        make_clip(SMALL, _labels(), split="validation", index=0)
    with pytest.raises(ValueError, match="index=-1"):
        make_clip(SMALL, _labels(), split="train", index=-1)
    with pytest.raises(ValueError, match="labels: expected a 1-D numpy array of integer"):
        make_clip(SMALL, _labels().astype(np.float32), split="train", index=0)
    with pytest.raises(ValueError, match="at least 3 images of each class"):
        make_clip(SMALL, np.arange(25, dtype=np.int32) % 10, split="train", index=0)
    with pytest.raises(ValueError, match="classes in \\[0, 10\\)"):
        make_clip(SMALL, np.arange(100, dtype=np.int32) % 11, split="train", index=0)


def test_render_clips_normalises_the_planned_images():
    images, _ = _synthetic(SMALL, "train")
    idx = np.array([[3, 3, 7], [0, 199, 5]])
    got = render_clips(images, idx)
    assert got.shape == (2, 3, 28, 28, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_normalise(images[idx]), rtol=0, atol=1e-6)


def test_blank_background_empties_the_scene_frames_and_keeps_the_rest_of_the_clip():
    """With background="blank" a clip is its "scenes" twin (same events, flash images and
    question) with every other frame empty."""
    labels = _labels()
    blank = dataclasses.replace(SMALL, background="blank", question_types=("what", "present"))
    scenes = dataclasses.replace(blank, background="scenes")
    answers = collections.Counter()
    for index in range(200):
        a = make_clip(blank, labels, split="train", index=index)
        b = make_clip(scenes, labels, split="train", index=index)
        assert a.background_class == -1 and 0 <= a.event_class < 10
        np.testing.assert_array_equal(a.event_frames, b.event_frames)
        is_event = np.isin(np.arange(blank.clip_frames), a.event_frames)
        np.testing.assert_array_equal(a.frame_image[is_event], b.frame_image[is_event])
        assert (a.frame_image[~is_event] == video_qa.BLANK_IMAGE).all()
        assert (labels[a.frame_image[is_event]] == a.event_class).all()
        assert (a.event_class, a.num_events, a.question_type) == (
            b.event_class, b.num_events, b.question_type,
        )  # fmt: skip
        if video_qa.QUESTION_TYPES[a.question_type] == "present":
            asked = next(
                c for c, name in enumerate(video_qa.CLASS_NAMES)
                if a.question == video_qa.PRESENT_QUESTION.format(name)
            )  # fmt: skip
            assert a.answer == ("yes\n" if asked == a.event_class else "no\n")
            answers[a.answer] += 1
        else:
            assert (a.question, a.answer) == (b.question, b.answer)
    assert answers["yes\n"] > 20 and answers["no\n"] > 20


def test_blank_frames_render_empty_and_batches_follow_the_plans():
    images, labels = _synthetic(SMALL, "train")
    got = render_clips(images, np.array([[video_qa.BLANK_IMAGE, 3], [7, video_qa.BLANK_IMAGE]]))
    want_blank = _reference_normalise(np.zeros((28, 28, 1), np.uint8))
    np.testing.assert_allclose(got[0, 0], want_blank, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1, 1], want_blank, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[0, 1], _reference_normalise(images[3]), rtol=0, atol=1e-6)
    config = dataclasses.replace(SMALL, background="blank", num_frames=16)
    (batch,) = _take(iter(video_qa_train_dataset(config)), 1)
    sampled = sample_frames(config.clip_frames, config.num_frames)
    assert (batch["background_class"] == -1).all()
    for r in range(config.batch_size):
        plan = make_clip(config, labels, split="train", index=r)
        is_event = np.isin(sampled, plan.event_frames)
        np.testing.assert_allclose(batch["frames"][r][~is_event], np.broadcast_to(
            want_blank, (int((~is_event).sum()), 28, 28, 1)), rtol=0, atol=1e-6)  # fmt: skip
        want = _reference_normalise(images[plan.frame_image[sampled][is_event]])
        np.testing.assert_allclose(batch["frames"][r][is_event], want, rtol=0, atol=1e-6)
    info = video_qa_dataset_info(dataclasses.replace(config, question_types=("what",)))
    assert info["background"] == "blank" and info["chance_accuracy"] == {"what": 0.1}


# ---------------------------------------------------------------------------- batches


def test_train_batch_format():
    (batch,) = _take(iter(video_qa_train_dataset(SMALL)), 1)
    assert set(batch) == KEYS
    assert batch["frames"].shape == (8, 32, 28, 28, 1) and batch["frames"].dtype == np.float32
    for key in ("tokens", "token_types"):
        assert batch[key].shape == (8, 64) and batch[key].dtype == np.int32
    for key in ("event_class", "background_class", "num_events", "question_type"):
        assert batch[key].shape == (8,) and batch[key].dtype == np.int32
    assert batch["event_frames"].shape == (8, 3) and batch["event_frames"].dtype == np.int32
    assert batch["mask"].dtype == np.float32
    np.testing.assert_array_equal(batch["mask"], np.ones(8, np.float32))


@pytest.mark.parametrize("num_frames", [32, 8])
def test_train_batches_are_the_planned_clips(num_frames):
    # Step k, row i is training clip k * batch_size + i: the stream is a pure function of it.
    config = dataclasses.replace(SMALL, num_frames=num_frames)
    images, labels = _synthetic(config, "train")
    batches = _take(iter(video_qa_train_dataset(config)), 3)
    for step, batch in enumerate(batches):
        indices = step * config.batch_size + np.arange(config.batch_size)
        _check_batch_against_plans(config, batch, images, labels, "train", indices)


def test_tokens_are_question_then_answer_then_padding():
    config = dataclasses.replace(SMALL, batch_size=32)
    (batch,) = _take(iter(video_qa_train_dataset(config)), 1)
    kinds = set()
    for r in range(32):
        tokens, types = batch["tokens"][r], batch["token_types"][r]
        q_len, a_len = int((types == 1).sum()), int((types == 2).sum())
        expected_types = np.r_[np.ones(q_len), np.full(a_len, 2), np.full(64 - q_len - a_len, 4)]
        np.testing.assert_array_equal(types, expected_types)
        assert not tokens[types == 4].any() and tokens[types != 4].all()
        question, answer = decode(tokens[types == 1]), decode(tokens[types == 2])
        name = video_qa.CLASS_NAMES[batch["event_class"][r]]
        kind = video_qa.QUESTION_TYPES[batch["question_type"][r]]
        kinds.add(kind)
        if kind == "what":
            assert (question, answer) == ("Which item flashes by? ", f"{name}\n")
        else:
            assert question == f"How many times does a {name} flash by? "
            assert answer == f"{batch['num_events'][r]}\n"
    assert kinds == {"what", "count"}


def test_question_types_restrict_the_questions():
    config = dataclasses.replace(SMALL, question_types=("count",), batch_size=16)
    (batch,) = _take(iter(video_qa_train_dataset(config)), 1)
    assert (batch["question_type"] == 1).all()


def test_same_seed_same_batches_different_seed_different():
    a = _take(iter(video_qa_train_dataset(SMALL)), 3)
    b = _take(iter(video_qa_train_dataset(SMALL)), 3)
    c = _take(iter(video_qa_train_dataset(dataclasses.replace(SMALL, seed=1))), 3)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["frames"], c[0]["frames"])
    assert not np.array_equal(a[0]["event_frames"], c[0]["event_frames"])
    # Every step brings new clips.
    assert not np.array_equal(a[0]["frames"], a[1]["frames"])


def test_batcher_survives_pickling():
    # `mp_prefetch` workers rebuild the batcher from a pickle.
    batcher = video_qa._Batcher(SMALL, "train", 0, 1)
    clone = pickle.loads(pickle.dumps(batcher))
    indices = np.arange(16, 24)
    _assert_batches_equal([clone(indices)], [batcher(indices)])


# ---------------------------------------------------------------------------- sharding


def test_train_shards_concatenate_to_the_global_batch():
    whole = _take(iter(video_qa._train_dataset(SMALL, process_index=0, process_count=1)), 3)
    shards = [
        _take(iter(video_qa._train_dataset(SMALL, process_index=p, process_count=2)), 3)
        for p in (0, 1)
    ]
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            assert parts[0].shape[0] == 4
            np.testing.assert_array_equal(np.concatenate(parts), batch[key], err_msg=key)


def test_eval_shards_concatenate_to_the_global_batch():
    whole = list(video_qa._eval_dataset(SMALL, process_index=0, process_count=1))
    shards = [list(video_qa._eval_dataset(SMALL, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 4
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            np.testing.assert_array_equal(np.concatenate(parts), batch[key], err_msg=key)


def test_batch_not_divisible_by_process_count():
    with pytest.raises(ValueError, match="batch_size=8.*process count"):
        video_qa._train_dataset(SMALL, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="eval_batch_size=6.*process count"):
        video_qa._eval_dataset(SMALL, process_index=0, process_count=4)


# ---------------------------------------------------------------------------- evaluation


def test_eval_pass_is_the_fixed_test_clips_padded():
    config = SMALL  # 20 clips in batches of 6: 3 full batches and one with 2 real rows
    images, labels = _synthetic(config, "test")
    batches = list(video_qa_eval_dataset(config))
    assert len(batches) == math.ceil(20 / 6) == 4
    assert all(b["frames"].shape == (6, 32, 28, 28, 1) for b in batches)
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    np.testing.assert_array_equal(merged["mask"], np.r_[np.ones(20), np.zeros(4)])
    real = {k: v[:20] for k, v in merged.items()}
    _check_batch_against_plans(config, real, images, labels, "test", range(20))
    # Padding rows are empty.
    assert not merged["frames"][20:].any() and not merged["tokens"][20:].any()
    assert (merged["token_types"][20:] == 4).all() and (merged["event_frames"][20:] == -1).all()
    for key in ("event_class", "background_class", "num_events", "question_type"):
        assert not merged[key][20:].any()
    # A second pass is the same set.
    _assert_batches_equal(list(video_qa_eval_dataset(config)), batches)


def test_train_and_eval_clips_use_disjoint_image_splits():
    config = SMALL
    seen = {}
    for split in ("train", "test"):
        images, _ = _synthetic(config, split)
        seen[split] = {_reference_normalise(x).astype(np.float32).tobytes() for x in images}
    assert len(seen["train"]) == len(seen["test"]) == 200 and not seen["train"] & seen["test"]
    train = _take(iter(video_qa_train_dataset(config)), 2)
    evaluation = list(video_qa_eval_dataset(config))
    train_frames = {f.tobytes() for b in train for clip in b["frames"] for f in clip}
    eval_frames = {
        f.tobytes() for b in evaluation for clip in b["frames"][b["mask"] > 0] for f in clip
    }
    assert train_frames <= seen["train"] and eval_frames <= seen["test"]


# ---------------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize("k", [1, 3])
def test_resume_from_state_yields_the_same_batches(k):
    it = iter(video_qa_train_dataset(SMALL))
    _take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    assert len(json.dumps(state)) < 1000
    expected = _take(it, 2)
    resumed = iter(video_qa_train_dataset(SMALL))
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 2), expected)


def test_resume_eval_iterator():
    it = iter(video_qa_eval_dataset(SMALL))
    next(it)
    state = it.get_state()
    expected = list(it)
    resumed = iter(video_qa_eval_dataset(SMALL))
    resumed.set_state(state)
    _assert_batches_equal(list(resumed), expected)


# ---------------------------------------------------------------------------- real data


@pytest.mark.data
@needs_fashion_mnist
def test_fashion_mnist_train_batch_shows_the_planned_labels(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    config = VideoQADataConfig(batch_size=8)
    images, labels = fashion_mnist.load_fashion_mnist("train")
    batches = _take(iter(video_qa_train_dataset(config)), 2)
    assert batches[1]["frames"].shape == (8, 128, 28, 28, 1)
    indices = 8 + np.arange(8)
    _check_batch_against_plans(config, batches[1], images, labels, "train", indices)


@pytest.mark.data
@needs_fashion_mnist
def test_fashion_mnist_eval_uses_test_images(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    config = VideoQADataConfig(eval_clips=10, eval_batch_size=4, num_frames=32)
    images, labels = fashion_mnist.load_fashion_mnist("test")
    batches = list(video_qa_eval_dataset(config))
    assert len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.r_[np.ones(10), np.zeros(2)])
    real = {k: np.concatenate([b[k] for b in batches])[:10] for k in batches[0]}
    _check_batch_against_plans(config, real, images, labels, "test", range(10))


def test_present_and_scene_questions_follow_the_clip():
    """A "present" question asks the flashing class or one that is neither it nor the
    background, and answers yes exactly when it is the flash; "scene" answers the background."""
    config = dataclasses.replace(SMALL, question_types=("present", "scene"))
    labels = np.repeat(np.arange(video_qa.NUM_CLASSES), 6)
    answers = collections.Counter()
    for index in range(400):
        plan = video_qa.make_clip(config, labels, split="train", index=index)
        kind = video_qa.QUESTION_TYPES[plan.question_type]
        if kind == "scene":
            assert plan.question == video_qa.SCENE_QUESTION
            assert plan.answer == video_qa.CLASS_NAMES[plan.background_class] + "\n"
            continue
        asked = next(
            c for c, name in enumerate(video_qa.CLASS_NAMES)
            if plan.question == video_qa.PRESENT_QUESTION.format(name)
        )  # fmt: skip
        assert asked != plan.background_class
        assert plan.answer == ("yes\n" if asked == plan.event_class else "no\n")
        answers[plan.answer] += 1
    assert 0.4 < answers["yes\n"] / sum(answers.values()) < 0.6


def test_present_questions_keep_the_clips_of_the_other_types():
    """The asked class is drawn last: with as many question types, clip k shows the same frames
    whichever types they are."""
    labels = np.repeat(np.arange(video_qa.NUM_CLASSES), 6)
    for index in range(20):
        a = video_qa.make_clip(SMALL, labels, split="test", index=index)
        b = video_qa.make_clip(
            dataclasses.replace(SMALL, question_types=("scene", "present")), labels, split="test",
            index=index,
        )  # fmt: skip
        np.testing.assert_array_equal(a.frame_image, b.frame_image)
