"""Video question answering on Fashion-MNIST clips whose answer is a brief flash between scenes.

Slow-Fast Architecture for Video Multi-Modal Large Language Models (arXiv:2504.01328), sections 3
and 4: the LLM reads a compact "fast" set of pooled frame tokens and cross-attends to the "slow"
tokens of every frame. This task needs the slow path: a clip is a slideshow of one background
class (a new image of it every `scene_length` frames) interrupted by 1..`max_events` flashes of
`event_length` frames showing a second class — or, with `background="blank"`, by empty frames.
Asking which item flashes by, or how many times, needs single frames that 16 pooled frames
average away (a 1-frame flash is 1/4 of a pooled frame of a 128-frame clip when its frame is
sampled at all) and that uniform 16-frame sampling usually misses.

Clips are assembled from real Fashion-MNIST images: training clips from the training split,
evaluation clips from the test split, so no image is shared. Every clip is a pure function of
(seed, split, clip index), so the training stream is infinite, resumable and identical however it
is sharded.
"""

import dataclasses
import functools
from typing import Literal

import grain
import jax
import numpy as np
from jaxtyping import Float32, Int32, Int64, Integer, UInt8

from efficient.checks import (
    check_choice,
    check_field_types,
    check_positive_ints,
    validates_arguments,
)
from efficient.data import fashion_mnist, synthetic
from efficient.data._grain import _check_shard, _shard_slice, _to_iter
from efficient.data.text import VOCAB_SIZE, encode

Batch = dict[str, np.ndarray]

SPLITS = ("train", "test")  # image splits: training clips and evaluation clips
QUESTION_TYPES = ("what", "count", "scene", "present")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
FRAME_SHAPE = fashion_mnist.IMAGE_SHAPE
WHAT_QUESTION = "Which item flashes by? "
COUNT_QUESTION = "How many times does a {} flash by? "
SCENE_QUESTION = "Which item is on screen? "
PRESENT_QUESTION = "Does this flash by: {}? "  # the item last, next to the answer
# `token_types` values, numbered as in the Slow-Fast code, where 3 marks the visual tokens that
# the model inserts into its LLM input (none of them are in this text).
QUESTION_TOKEN = 1
ANSWER_TOKEN = 2
VISUAL_TOKEN = 3
PADDING_TOKEN = 4
# `ClipPlan.frame_image` of an empty frame (every pixel 0; background="blank").
BLANK_IMAGE = -1

# Independent streams derived from `VideoQADataConfig.seed`, so that no two uses share a seed.
_CLIP_STREAM = 0
_SPLIT_STREAM = {"train": 0, "test": 1}


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoQADataConfig:
    """Video QA pipeline settings for `video_qa_train_dataset`/`video_qa_eval_dataset`.

    Attributes:
        source: "fashion-mnist" (the Debian package) or "synthetic" (`synthetic.synthetic_images`
            at 28x28 with 10 classes, for smoke runs).
        background: what the frames between the flashes show. "scenes": a slideshow of one
            class (a new image every `scene_length` frames). "blank": an empty frame (every
            pixel 0), so the flashes are the only content of the clip; the background class is
            then -1 and the "scene" question has no answer (rejected). With "scenes", no model
            of the suite learned to find a 1-frame flash among the scene frames (README of
            models/slowfast_mllm); on a blank stage the slow path finds it.
        clip_frames: frames of the underlying clip.
        num_frames: F, frames given to the model: clip frames 0, s, 2s, ... with
            `s = clip_frames // num_frames`. With `s > event_length` some flashes fall between
            the sampled frames (the answer is still the clip's), which is what a uniform-sampling
            baseline loses.
        scene_length: the background changes to another image of its class every this many
            frames.
        max_events: the most flashes in a clip; a clip has n uniform in 1..max_events.
        event_length: frames per flash; flashes never touch (at least one background frame
            between two of them).
        question_types: the question types drawn from (uniformly, per clip): "what" (which
            class flashes by), "count" (how many times), "present" ("Does this flash by: <item>?",
            yes or no: the asked item is the flashing one for half the clips, else another class
            that is neither the flash nor the background — a retrieval the text can aim at the
            slow tokens), "scene" (the background class: a control that the pooled fast frames
            answer, so a model that fails it does not read the frames at all).
        text_len: bytes of question + answer, zero-padded.
        batch_size: global training batch size, over all processes together.
        eval_batch_size: global evaluation batch size; the last batch is padded with mask 0.
        eval_clips: clips of the fixed evaluation set (clip indices 0..eval_clips-1 of the
            test split).
        seed: determines every clip, and the synthetic images.
        synthetic_size: images per split of the synthetic source.
        worker_count: grain worker processes (`mp_prefetch`); 0 computes batches in-process.
    """

    source: Literal["fashion-mnist", "synthetic"] = "fashion-mnist"
    background: Literal["scenes", "blank"] = "scenes"
    clip_frames: int = 128
    num_frames: int = 128
    scene_length: int = 8
    max_events: int = 3
    event_length: int = 1
    question_types: tuple[str, ...] = ("what", "count")
    text_len: int = 64
    batch_size: int = 32
    eval_batch_size: int = 64
    eval_clips: int = 1024
    seed: int = 0
    synthetic_size: int = 2000
    worker_count: int = 0

    def __post_init__(self):
        check_field_types(self)
        positive = (
            "clip_frames",
            "num_frames",
            "scene_length",
            "max_events",
            "event_length",
            "text_len",
            "batch_size",
            "eval_batch_size",
            "eval_clips",
            "synthetic_size",
        )
        check_positive_ints(self, positive)
        if self.clip_frames % self.num_frames:
            raise ValueError(
                f"num_frames={self.num_frames}: expected a divisor of clip_frames="
                f"{self.clip_frames} (frames are sampled with a whole stride)."
            )
        needed = self.max_events * (self.event_length + 1) - 1
        if needed > self.clip_frames:
            raise ValueError(
                f"max_events={self.max_events}, event_length={self.event_length}: non-adjacent "
                f"events need {needed} frames (a background frame between two events), more "
                f"than clip_frames={self.clip_frames}."
            )
        types = self.question_types
        if (
            not isinstance(types, tuple)
            or not types
            or len(set(types)) != len(types)
            or not set(types) <= set(QUESTION_TYPES)
        ):
            raise ValueError(
                f"question_types={types!r}: expected a non-empty tuple of distinct types from "
                f"{QUESTION_TYPES}."
            )
        if self.background == "blank" and "scene" in types:
            raise ValueError(
                f"question_types={types!r}: the 'scene' question asks the background class, "
                "which background='blank' clips do not have."
            )
        longest = max_text_len(types, self.max_events)
        if self.text_len < longest:
            raise ValueError(
                f"text_len={self.text_len}: the longest question + answer of question_types="
                f"{types} with max_events={self.max_events} is {longest} bytes."
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed}: expected an integer in [0, 2**32).")
        if self.worker_count < 0:
            raise ValueError(f"worker_count={self.worker_count}: expected >= 0.")
        per_class = _images_per_class(self.max_events)
        if self.source == "synthetic" and self.synthetic_size < NUM_CLASSES * per_class:
            raise ValueError(
                f"synthetic_size={self.synthetic_size}: expected at least {NUM_CLASSES} x "
                f"{per_class} = {NUM_CLASSES * per_class} (each class needs {per_class} images: "
                "consecutive scenes and the events of a clip show different images)."
            )

    @property
    def frame_stride(self) -> int:
        return self.clip_frames // self.num_frames


def _images_per_class(max_events: int) -> int:
    return max(2, max_events)


# ---------------------------------------------------------------------------- text


@validates_arguments
def clip_text(
    question_type: str,
    event_class: int,
    num_events: int,
    background_class: int = 0,
    asked_class: int | None = None,
) -> tuple[str, str]:
    """The question and answer of a clip.

    Args:
        question_type: "what", "count", "scene" or "present".
        event_class: the class that flashes by, in [0, 10).
        num_events: how many times it does.
        background_class: the class of the other frames, in [0, 10) (the "scene" answer).
        asked_class: the class a "present" question names (default: `event_class`).

    Returns:
        `(question, answer)`; the answer ends with "\\n".

    Raises:
        ValueError: a question type not in QUESTION_TYPES.
    """
    check_choice("clip_text", "question_type", question_type, QUESTION_TYPES)
    name = CLASS_NAMES[event_class]
    if question_type == "what":
        return WHAT_QUESTION, f"{name}\n"
    if question_type == "scene":
        return SCENE_QUESTION, f"{CLASS_NAMES[background_class]}\n"
    if question_type == "present":
        asked = event_class if asked_class is None else asked_class
        answer = "yes\n" if asked == event_class else "no\n"
        return PRESENT_QUESTION.format(CLASS_NAMES[asked]), answer
    return COUNT_QUESTION.format(name), f"{num_events}\n"


def max_text_len(question_types: tuple[str, ...], max_events: int) -> int:
    """Bytes of the longest question + answer of these question types (each checked by
    `clip_text`)."""
    return max(
        sum(len(part.encode()) for part in clip_text(t, c, max_events, c, a))
        for a in range(NUM_CLASSES)
        for t in question_types
        for c in range(NUM_CLASSES)
    )


def _text_row(
    question: str, answer: str, text_len: int
) -> tuple[Int32[np.ndarray, " L"], Int32[np.ndarray, " L"]]:
    q, a = encode(question), encode(answer)
    tokens = np.zeros(text_len, np.int32)
    tokens[: len(q) + len(a)] = np.concatenate([q, a])
    types = np.full(text_len, PADDING_TOKEN, np.int32)
    types[: len(q)] = QUESTION_TOKEN
    types[len(q) : len(q) + len(a)] = ANSWER_TOKEN
    return tokens, types


# ---------------------------------------------------------------------------- clips


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ClipPlan:
    """Which source image shows at each frame of one clip, and its question.

    Attributes:
        background_class: b, the class of every non-event frame (-1: blank frames).
        event_class: e != b, the class of the event frames.
        num_events: n in 1..max_events.
        question_type: index into `QUESTION_TYPES`.
        question: the question text.
        answer: the answer text, ending with "\\n".
        event_frames: int32 [n * event_length] the clip frames of the events, ascending.
        frame_image: int64 [clip_frames] the index (into the split) of the image at each frame,
            `BLANK_IMAGE` (-1) for an empty frame.
    """

    background_class: int
    event_class: int
    num_events: int
    question_type: int
    question: str
    answer: str
    event_frames: Int32[np.ndarray, " event_frames"]
    frame_image: Int64[np.ndarray, " clip_frames"]


def _class_pools(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices grouped by class (`order[offsets[c]:offsets[c + 1]]`, file order)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"labels: expected a 1-D array of classes in [0, {NUM_CLASSES}).")
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if counts.min() < per_class:
        raise ValueError(
            f"labels: expected at least {per_class} images of each class 0..{NUM_CLASSES - 1}, "
            f"got counts {counts.tolist()}."
        )
    order = np.argsort(labels, kind="stable").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, offsets


def _plan(
    config: VideoQADataConfig, split: str, index: int, order: np.ndarray, offsets: np.ndarray
) -> ClipPlan:
    rng = np.random.default_rng([config.seed, _CLIP_STREAM, _SPLIT_STREAM[split], index])
    T, L = config.clip_frames, config.event_length
    b = int(rng.integers(NUM_CLASSES))
    e = (b + 1 + int(rng.integers(NUM_CLASSES - 1))) % NUM_CLASSES  # uniform over the others
    n = int(rng.integers(1, config.max_events + 1))
    kind = config.question_types[int(rng.integers(len(config.question_types)))]
    # Uniform over all placements of n non-adjacent runs (stars and bars): glue to each run the
    # background frame after it (a virtual frame T for the last run); the n blocks of L + 1 and
    # the T + 1 - n (L + 1) loose frames make T + 1 - n L items, of which the blocks are any n.
    slots = np.sort(rng.choice(T - n * L + 1, n, replace=False))  # [n]
    starts = slots + L * np.arange(n)  # [n]
    event_frames = (starts[:, None] + np.arange(L)).reshape(-1)  # [n L]
    # Background: scene k shows the rank_k-th image of class b; each step moves by 1..K-1 (mod K),
    # so consecutive scenes never repeat an image and every other image is equally likely.
    K = int(offsets[b + 1] - offsets[b])
    num_scenes = -(-T // config.scene_length)
    moves = np.concatenate([rng.integers(K, size=1), rng.integers(1, K, size=num_scenes - 1)])
    ranks = np.cumsum(moves) % K  # [scenes]
    frame_image = order[offsets[b] + np.repeat(ranks, config.scene_length)[:T]]  # [T]
    event_ranks = rng.choice(int(offsets[e + 1] - offsets[e]), n, replace=False)  # [n]
    frame_image[event_frames] = np.repeat(order[offsets[e] + event_ranks], L)
    if config.background == "blank":  # same draws as "scenes", then the scene frames emptied
        frame_image[np.setdiff1d(np.arange(T), event_frames)] = BLANK_IMAGE
        b = -1
    asked = e
    # Drawn last, and only for "present", so that the clips of the other types stay as they were.
    if kind == "present" and rng.integers(2):
        others = [c for c in range(NUM_CLASSES) if c not in (b, e)]
        asked = others[int(rng.integers(len(others)))]
    question, answer = clip_text(kind, e, n, b, asked)
    return ClipPlan(
        background_class=b,
        event_class=e,
        num_events=n,
        question_type=QUESTION_TYPES.index(kind),
        question=question,
        answer=answer,
        event_frames=event_frames.astype(np.int32),
        frame_image=frame_image,
    )


@validates_arguments
def make_clip(
    config: VideoQADataConfig,
    labels: Integer[np.ndarray, " N"],
    *,
    split: Literal["train", "test"],
    index: int,
) -> ClipPlan:
    """The plan of clip `index` of a split: its classes, events, frame images and question.

    A pure function of `(config.seed, split, index)` and the clip settings of `config`: the
    background class b is uniform, the event class e uniform among the 9 others, and n uniform in
    1..max_events. Scene k (frames `[k scene_length, (k + 1) scene_length)`) shows a random image
    of class b, different from scene k - 1's. The n events are runs of `event_length` frames at
    uniformly random non-adjacent positions, each showing a different random image of class e.
    The question type is uniform among `config.question_types`.

    Args:
        config: the pipeline settings.
        labels: the labels of the split's images (`load_fashion_mnist(split)[1]`); the plan
            refers to images by their index here.
        split: "train" (training clips) or "test" (evaluation clips); the two draw
            independently.
        index: the clip index, >= 0.

    Returns:
        The `ClipPlan`.

    Raises:
        ValueError: an unknown split, a negative index, labels that are not a 1-D integer
            array, or a class with fewer than max(2, max_events) images in `labels`.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}.")
    if index < 0:
        raise ValueError(f"index={index}: expected >= 0.")
    if not (
        isinstance(labels, np.ndarray)
        and labels.ndim == 1
        and np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError("labels: expected a 1-D numpy array of integer class ids.")
    order, offsets = _class_pools(labels, _images_per_class(config.max_events))
    return _plan(config, split, index, order, offsets)


def sample_frames(clip_frames: int, num_frames: int) -> Int64[np.ndarray, " F"]:
    """The clip frames given to the model: 0, s, 2s, ... with `s = clip_frames // num_frames`.

    Args:
        clip_frames: frames of the clip.
        num_frames: F, frames to keep; must divide `clip_frames`.

    Returns:
        int64 [F] ascending clip-frame indices.

    Raises:
        ValueError: `num_frames` is not a positive divisor of `clip_frames`.
    """
    if num_frames < 1 or clip_frames < 1 or clip_frames % num_frames:
        raise ValueError(
            f"num_frames={num_frames}: expected a positive divisor of clip_frames={clip_frames}."
        )
    return np.arange(0, clip_frames, clip_frames // num_frames, dtype=np.int64)


# uint8 -> (x / 255 - mean) / std, computed in float64 once: normalising is then one gather.
_NORMALISE = ((np.arange(256) / 255.0 - fashion_mnist.MEAN) / fashion_mnist.STD).astype(np.float32)


def render_clips(
    images: UInt8[np.ndarray, "N H W C"], frame_image: Integer[np.ndarray, "*clips F"]
) -> Float32[np.ndarray, "*clips F H W C"]:
    """The normalised frames of clips, `(images[frame_image] / 255 - MEAN) / STD`, in two gathers.

    Args:
        images: the split's uint8 images.
        frame_image: image indices, e.g. `plan.frame_image[sample_frames(...)]`, or a batch of
            them [B, F]; `BLANK_IMAGE` (-1) renders an empty frame (every pixel 0).

    Returns:
        float32 frames normalised with the Fashion-MNIST mean and standard deviation.
    """
    frame_image = np.asarray(frame_image)
    blank = frame_image == BLANK_IMAGE
    frames = _NORMALISE[images[np.where(blank, 0, frame_image)]]
    frames[blank] = _NORMALISE[0]
    return frames


# ---------------------------------------------------------------------------- sources


def _source_key(config: VideoQADataConfig) -> tuple:
    # Fashion-MNIST does not depend on the seed or synthetic_size: one cache entry for all.
    if config.source == "fashion-mnist":
        return (config.source, 0, 0, _images_per_class(config.max_events))
    return (config.source, config.synthetic_size, config.seed, _images_per_class(config.max_events))


def _source(config: VideoQADataConfig, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, order, offsets) of a split (the loaders and the class pools are cached)."""
    source, size, seed, per_class = _source_key(config)
    order, offsets = _pools(source, split, size, seed, per_class)
    return _images(source, split, size, seed)[0], order, offsets


def _images(source: str, split: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if source == "fashion-mnist":
        return fashion_mnist.load_fashion_mnist(split)
    return synthetic.synthetic_images(
        split, size=size, image_size=FRAME_SHAPE[0], num_classes=NUM_CLASSES, seed=seed
    )


@functools.cache
def _pools(source: str, split: str, size: int, seed: int, per_class: int):
    order, offsets = _class_pools(_images(source, split, size, seed)[1], per_class)
    order.flags.writeable = False
    offsets.flags.writeable = False
    return order, offsets


def _split_size(config: VideoQADataConfig, split: str) -> int:
    if config.source == "fashion-mnist":
        return fashion_mnist.SPLIT_SIZES[split]
    return config.synthetic_size


# ---------------------------------------------------------------------------- pipelines


def video_qa_dataset_info(config: VideoQADataConfig) -> dict:
    """Describes the data a config yields, without loading it.

    Chance accuracies are those of a model that knows the answer format and the background class
    but not the events: "what" picks one of the 9 other classes, "count" one of 1..max_events;
    "scene" (the background class itself) is 1/10 for a model that does not see the frames,
    "present" 1/2 (yes and no are equally likely).

    Args:
        config: the pipeline settings.

    Returns:
        `{"source", "background", "train_images", "eval_images" (images of the two splits),
        "eval_clips", "clip_frames", "num_frames", "frame_stride", "frame_shape", "scene_length",
        "max_events", "event_length", "num_classes", "class_names", "question_types", "text_len",
        "max_text_len", "vocab_size", "chance_accuracy": {type: accuracy} for the configured
        types, "mean_chance_accuracy", "every_event_sampled": whether every event overlaps a
        sampled frame (event_length >= frame_stride)}`.
    """
    chance = {  # on a blank stage the flash is any of the 10 classes
        "what": 1 / (NUM_CLASSES - (config.background == "scenes")),
        "count": 1 / config.max_events,
        "scene": 1 / NUM_CLASSES,
        "present": 1 / 2,
    }
    chance = {t: chance[t] for t in config.question_types}
    return {
        "source": config.source,
        "background": config.background,
        "train_images": _split_size(config, "train"),
        "eval_images": _split_size(config, "test"),
        "eval_clips": config.eval_clips,
        "clip_frames": config.clip_frames,
        "num_frames": config.num_frames,
        "frame_stride": config.frame_stride,
        "frame_shape": FRAME_SHAPE,
        "scene_length": config.scene_length,
        "max_events": config.max_events,
        "event_length": config.event_length,
        "num_classes": NUM_CLASSES,
        "class_names": CLASS_NAMES,
        "question_types": config.question_types,
        "text_len": config.text_len,
        "max_text_len": max_text_len(config.question_types, config.max_events),
        "vocab_size": VOCAB_SIZE,
        "chance_accuracy": chance,
        "mean_chance_accuracy": sum(chance.values()) / len(chance),
        "every_event_sampled": config.event_length >= config.frame_stride,
    }


def video_qa_train_dataset(config: VideoQADataConfig) -> grain.IterDataset:
    """The infinite training stream of this process.

    Step k's global batch is training clips `k B .. k B + B - 1` (`B = batch_size`), each a pure
    function of (seed, clip index) built from training-split images: there are no epochs, and
    every clip is new. Each process yields rows `[i * b, (i + 1) * b)` of every global batch,
    `b = batch_size // process_count`, and builds only those clips.

    `iter(video_qa_train_dataset(config))` is checkpointable: `get_state()` is a small
    JSON-serialisable dict, and `set_state` on a fresh iterator resumes the exact same batches.

    Args:
        config: the pipeline settings.

    Returns:
        An IterDataset of `{"frames": float32 [b, F, 28, 28, 1] normalised, "tokens": int32
        [b, text_len] question bytes, answer bytes, zeros, "token_types": int32 [b, text_len]
        (1 question, 2 answer, 4 padding), "event_class", "background_class", "num_events",
        "question_type" (index into QUESTION_TYPES): int32 [b], "event_frames": int32
        [b, max_events * event_length] clip frames of the events, -1 padded, "mask": float32 [b]
        of ones}`.

    Raises:
        ValueError: `batch_size` is not divisible by the process count, or a class has too few
            images.
        FileNotFoundError: Fashion-MNIST is not installed (the message says how).
    """
    return _train_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def video_qa_eval_dataset(config: VideoQADataConfig) -> grain.IterDataset:
    """One in-order pass over the fixed evaluation set, for this process.

    The evaluation clips are clips `0 .. eval_clips - 1` of the test split (test images only).
    Global batches hold `eval_batch_size` clips; the last one is padded with empty rows (zero
    frames, tokens and classes, `token_types` 4, `event_frames` -1) whose `mask` is 0.0. Each
    process yields its rows of every global batch, as in `video_qa_train_dataset`.

    Args:
        config: the pipeline settings.

    Returns:
        A finite IterDataset of batches as in `video_qa_train_dataset`.

    Raises:
        ValueError: `eval_batch_size` is not divisible by the process count, or a class has too
            few images.
        FileNotFoundError: Fashion-MNIST is not installed (the message says how).
    """
    return _eval_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def _train_dataset(
    config: VideoQADataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.batch_size, "batch_size", process_index, process_count)
    _source(config, "train")  # fail here, not in the first batch, when the data is missing
    ds = grain.MapDataset.range(1).repeat().map_with_index(_StepClips(config.batch_size))
    ds = ds.map(_Batcher(config, "train", process_index, process_count))
    return _to_iter(ds, config.worker_count)


def _eval_dataset(
    config: VideoQADataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.eval_batch_size, "eval_batch_size", process_index, process_count)
    _source(config, "test")
    ds = grain.MapDataset.range(config.eval_clips)
    ds = ds.batch(config.eval_batch_size, drop_remainder=False)
    ds = ds.map(_Batcher(config, "test", process_index, process_count))
    return _to_iter(ds, config.worker_count)


class _StepClips:
    """step -> the global batch's clip indices `[step B, (step + 1) B)`; picklable for workers."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def __call__(self, step: int, _) -> np.ndarray:
        return step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)


class _Batcher:
    """Turns a global batch of clip indices into this process's batch dict.

    A picklable object rather than a closure, so that `mp_prefetch` workers can rebuild it; the
    images come from the per-process caches of the sources, not from the pickle.
    """

    def __init__(
        self, config: VideoQADataConfig, split: str, process_index: int, process_count: int
    ):
        self.config = config
        self.split = split
        self.process_index = process_index
        self.process_count = process_count

    def __call__(self, indices: Integer[np.ndarray, " n"]) -> Batch:
        config = self.config
        images, order, offsets = _source(config, self.split)
        size = len(indices) if self.split == "train" else config.eval_batch_size
        rows = np.arange(size)[_shard_slice(size, self.process_index, self.process_count)]
        b, F = len(rows), config.num_frames
        sampled = sample_frames(config.clip_frames, F)
        frame_image = np.zeros((b, F), np.int64)
        batch = {
            "tokens": np.zeros((b, config.text_len), np.int32),
            "token_types": np.full((b, config.text_len), PADDING_TOKEN, np.int32),
            **{
                k: np.zeros(b, np.int32)
                for k in ("event_class", "background_class", "num_events", "question_type")
            },
            "event_frames": np.full((b, config.max_events * config.event_length), -1, np.int32),
            "mask": np.zeros(b, np.float32),
        }
        for r, row in enumerate(rows):
            if row >= len(indices):
                continue  # an empty row padding the last evaluation batch
            plan = _plan(config, self.split, int(indices[row]), order, offsets)
            frame_image[r] = plan.frame_image[sampled]
            batch["tokens"][r], batch["token_types"][r] = _text_row(
                plan.question, plan.answer, config.text_len
            )
            batch["event_class"][r] = plan.event_class
            batch["background_class"][r] = plan.background_class
            batch["num_events"][r] = plan.num_events
            batch["question_type"][r] = plan.question_type
            batch["event_frames"][r, : len(plan.event_frames)] = plan.event_frames
            batch["mask"][r] = 1.0
        frames = render_clips(images, frame_image)  # [b, F, H, W, C]
        frames[batch["mask"] == 0] = 0.0
        return {"frames": frames, **batch}
