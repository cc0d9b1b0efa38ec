"""Sequential recommendation data: chronological user sequences, leave-one-out, Grain batches.

TiM4Rec: An Efficient Sequential Recommendation Model Based on Time-Aware Structured State Space
Duality Model (arXiv:2409.16182), experiments: its code (github AlwaysFHao/TiM4Rec, config/*.yaml)
runs RecBole 1.2.1's sequential defaults, reproduced here from RecBole's source
(`recbole/data/dataset/dataset.py` `_filter_by_inter_num`, `_remap`, `_normalize`,
`leave_one_out`; `recbole/data/dataset/sequential_dataset.py` `data_augmentation`):

- k-core filtering (the TiM4Rec configs set `user_inter_num_interval` and
  `item_inter_num_interval` to "[5,inf)"): each round drops every user and every item with fewer
  than k interactions among those left, until none is dropped.
- Ids are remapped by first appearance in the (filtered) file: items 1..num_items, 0 = padding.
- Each user's interactions are sorted by time, ties kept in file order (RecBole's two stable
  sorts, by time then by user). RecBole's sort keys are the min-max-normalised times stored as
  float32, whose step near 1 is 2.2 s on ML-100K's 1.86e7 s span, so it also ties interactions a
  second or two apart and keeps those in file order. `time_order="recbole_float32"` sorts on
  exactly those keys; the default, "seconds", sorts on the file's timestamps, the true order. On
  the 5-core ML-100K the two orders place 389 rows of 83 users differently, and 4 of 943 test
  targets and 5 validation targets differ (tests/efficient/data/test_recsys.py).
- Timestamps are min-max normalised over the filtered table, (t - min) / (max - min), as
  `normalize_all: True` in RecBole's ml-100k.yaml does.
- Every interaction but a user's first is a target whose history is the (at most `max_len`)
  interactions before it, left-aligned and right-padded with 0 (items and timestamps alike).
- Leave-one-out over these examples, per user in time order: the last is the test example, the
  one before it the validation example, the rest (every prefix of the training part) train. A
  user with only 2 (1) examples gives 1 train + 1 test (1 train), as RecBole's
  `_split_index_by_leave_one_out` does; k >= 4 never leaves such users.
"""

import dataclasses
import functools
import typing
from typing import Literal

import grain
import jax
import numpy as np
from jaxtyping import Float32, Int32, Int64, Integer, Shaped

from efficient.checks import check_field_types, check_positive_ints, validates_arguments
from efficient.data import movielens
from efficient.data._grain import (
    _check_shard,
    _derived_seed,
    _shard_slice,
    _to_iter,
    _train_index_batches,
)
from efficient.nn.next_item import check_sequences

Batch = dict[str, np.ndarray]
Table = dict[str, np.ndarray]

TimeOrder = Literal["seconds", "recbole_float32"]
SPLITS = ("train", "validation", "test")
# Independent streams derived from `RecSysDataConfig.seed`, so that no two uses share a seed.
_SHUFFLE_STREAM = 0
_SYNTHETIC_STREAM = 1
# Synthetic gaps between interactions: short (a minute) or long (a day), each with probability 1/2.
_SHORT_GAP_S = 60.0
_LONG_GAP_S = 86_400.0


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class RecSysDataConfig:
    """Next-item pipeline settings for `recsys_train_dataset`/`recsys_eval_dataset`.

    Attributes:
        source: "ml-100k" (MovieLens-100K from the `recbole` wheel) or "synthetic"
            (`synthetic_interactions`).
        max_len: T, the most recent history items an example keeps (RecBole's
            `MAX_ITEM_LIST_LENGTH`: 50, or 200 for ML-1M in the TiM4Rec configs).
        min_interactions: k of the k-core filter on users and items (TiM4Rec: 5); 0 or 1
            keeps every interaction (RecBole's ml-100k.yaml default).
        time_order: what each user's interactions are sorted on: "seconds", the file's
            timestamps, or "recbole_float32", RecBole's float32 normalised times, which also tie
            (and keep in file order) interactions a second or two apart (module docstring).
        batch_size: global training batch size, over all processes together.
        eval_batch_size: global evaluation batch size; the last batch is padded to it with mask 0.
        seed: determines the example order of every epoch, and the synthetic data.
        synthetic_users: users of the synthetic table.
        synthetic_items: items of the synthetic table.
        synthetic_length: (min, max) interactions per synthetic user, both inclusive.
        worker_count: grain worker processes (`mp_prefetch`); 0 computes batches in-process.
    """

    source: Literal["ml-100k", "synthetic"] = "ml-100k"
    max_len: int = 50
    min_interactions: int = 5
    time_order: TimeOrder = "seconds"
    batch_size: int = 2048
    eval_batch_size: int = 512
    seed: int = 0
    synthetic_users: int = 256
    synthetic_items: int = 64
    synthetic_length: tuple[int, int] = (8, 40)
    worker_count: int = 0

    def __post_init__(self):
        check_field_types(self)
        check_positive_ints(self, ("max_len", "batch_size", "eval_batch_size", "synthetic_users"))
        if self.synthetic_items < 4:
            raise ValueError(f"synthetic_items={self.synthetic_items}: expected at least 4.")
        lo, hi = self.synthetic_length
        if not 2 <= lo <= hi:
            raise ValueError(f"synthetic_length={self.synthetic_length}: expected 2 <= min <= max.")
        if self.min_interactions < 0:
            raise ValueError(f"min_interactions={self.min_interactions}: expected >= 0.")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed}: expected an integer in [0, 2**32).")
        if self.worker_count < 0:
            raise ValueError(f"worker_count={self.worker_count}: expected >= 0.")


# ---------------------------------------------------------------------------- tables


def synthetic_interactions(
    *, num_users: int, num_items: int, length: tuple[int, int] = (8, 40), seed: int = 0
) -> Table:
    """A learnable, time-dependent interaction log in shuffled row order (deterministic in args).

    Each item has 4 successors (drawn once). A user starts at a random item; gaps between
    interactions are exponential with mean a minute or a day (probability 1/2 each), in whole
    seconds (so ties occur); the next item is successor `2 * long + coin` of the current one,
    where `long` says whether the gap *into* the current item was a day-scale one. So the history's
    last time difference halves the uncertainty of the next item: time-aware models can use it.

    Args:
        num_users: users; each gets a length uniform in `length`.
        num_items: items (tokens 0..num_items-1; some may never occur).
        length: (min, max) interactions per user, inclusive.
        seed: the successor table and every walk.

    Returns:
        `{"user": int64 [n], "item": int64 [n], "timestamp": float64 [n]}`, rows shuffled.
    """
    rng = np.random.default_rng([seed, _SYNTHETIC_STREAM])
    successors = rng.integers(0, num_items, size=(num_items, 4))
    users, items, times = [], [], []
    for u in range(num_users):
        n = int(rng.integers(length[0], length[1] + 1))
        long = rng.random(n) < 0.5  # the gap into interaction i (entry 0 unused)
        gaps = np.floor(rng.exponential(np.where(long, _LONG_GAP_S, _SHORT_GAP_S)))
        gaps[0] = 0.0
        coins = rng.integers(0, 2, size=n)
        seq = [int(rng.integers(num_items))]
        for i in range(1, n):
            seq.append(int(successors[seq[-1], 2 * int(long[i - 1] and i > 1) + coins[i]]))
        users.append(np.full(n, u))
        items.append(np.array(seq))
        times.append(rng.uniform(8e8, 9e8) // 1 + np.cumsum(gaps))
    order = rng.permutation(sum(map(len, users)))
    return {
        "user": np.concatenate(users)[order],
        "item": np.concatenate(items)[order],
        "timestamp": np.concatenate(times)[order],
    }


def kcore_filter(
    user: Shaped[np.ndarray, " n"], item: Shaped[np.ndarray, " n"], k: int
) -> Shaped[np.ndarray, " n"]:
    """Which interactions survive RecBole's k-core filter (`[k,inf)` on users and items).

    Each round counts the interactions left per user and per item, then drops those of every
    user and every item below k at once; it stops when a round drops nothing.

    Args:
        user: user tokens, one per interaction.
        item: item tokens.
        k: the minimum interactions per user and per item; k <= 1 keeps everything.

    Returns:
        bool [n], True for the kept interactions.
    """
    keep = np.ones(len(user), bool)
    if k <= 1:
        return keep
    _, u = np.unique(user, return_inverse=True)
    _, i = np.unique(item, return_inverse=True)
    while True:
        user_counts = np.bincount(u[keep], minlength=u.max() + 1)
        item_counts = np.bincount(i[keep], minlength=i.max() + 1)
        drop = keep & ((user_counts[u] < k) | (item_counts[i] < k))
        if not drop.any():
            return keep
        keep &= ~drop


# ---------------------------------------------------------------------------- sequences


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Sequences:
    """Every user's interactions in time order, concatenated (user u is rows offsets[u:u+2]).

    Attributes:
        items: int32 [n] item ids in 1..num_items.
        timestamps: float32 [n] min-max normalised times in [0, 1].
        offsets: int64 [num_users + 1] row offsets of the users (users in first-appearance order).
        num_items: number of distinct items; models need num_items + 1 embeddings (0 = padding).
        item_tokens: [num_items + 1] the file's token of each id (entry 0 is padding).
        user_tokens: [num_users] the file's token of each user.
        time_min: the earliest timestamp, in the file's unit (seconds).
        time_max: the latest; t = time_min + timestamps * (time_max - time_min).
    """

    items: Int32[np.ndarray, " n"]
    timestamps: Float32[np.ndarray, " n"]
    offsets: Int64[np.ndarray, " offsets"]
    num_items: int
    item_tokens: np.ndarray
    user_tokens: np.ndarray
    time_min: float
    time_max: float

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.items)


def _first_appearance_ids(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pandas.factorize: ids 0, 1, ... in order of first appearance, and the token of each id."""
    uniq, first, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], uniq[order]


@validates_arguments
def build_sequences(table: Table, *, time_order: TimeOrder = "seconds") -> Sequences:
    """Remaps ids (first appearance), sorts each user's interactions by time, normalises time.

    Args:
        table: `{"user": [n], "item": [n], "timestamp": float [n]}` (any token dtype), e.g. a
            filtered `movielens.load_ml100k()`.
        time_order: the sort keys: "seconds", the timestamps; "recbole_float32", the float32
            normalised times RecBole sorts on (module docstring). Ties keep file order.

    Returns:
        The `Sequences`.

    Raises:
        ValueError: the columns differ in length, the table is empty, a time is not finite, or
            `time_order` is unknown.
    """
    if time_order not in typing.get_args(TimeOrder):
        raise ValueError(f"time_order={time_order!r}: expected 'seconds' or 'recbole_float32'.")
    user, item, time = (np.asarray(table[k]) for k in ("user", "item", "timestamp"))
    if not user.ndim == item.ndim == time.ndim == 1 or not len(user) == len(item) == len(time):
        raise ValueError(
            f"table: user {user.shape}, item {item.shape} and timestamp {time.shape} must be "
            "1-D columns of one length."
        )
    if len(user) == 0:
        raise ValueError("table: no interactions (too strict a k-core filter?).")
    time = time.astype(np.float64)
    if not np.isfinite(time).all():
        raise ValueError("table: timestamps must be finite.")
    uid, user_tokens = _first_appearance_ids(user)
    iid, item_tokens = _first_appearance_ids(item)
    t_min, t_max = float(time.min()), float(time.max())
    span = t_max - t_min
    # RecBole writes 1.0 everywhere when all times are equal; then no time differences exist.
    normalised = (time - t_min) / span if span > 0 else np.ones_like(time)
    # RecBole: stable sort by time, then stable sort by user; equal keys stay in file order.
    key = time if time_order == "seconds" else normalised.astype(np.float32)
    order = np.argsort(key, kind="stable")
    order = order[np.argsort(uid[order], kind="stable")]
    counts = np.bincount(uid, minlength=len(user_tokens))
    return Sequences(
        items=_readonly((iid[order] + 1).astype(np.int32)),
        timestamps=_readonly(normalised[order].astype(np.float32)),
        offsets=_readonly(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
        num_items=len(item_tokens),
        item_tokens=_readonly(np.concatenate([np.array([""], object), item_tokens.astype(object)])),
        user_tokens=_readonly(user_tokens),
        time_min=t_min,
        time_max=t_max,
    )


def leave_one_out(offsets: Integer[np.ndarray, " offsets"]) -> dict[str, Int64[np.ndarray, " _"]]:
    """RecBole's leave-one-out split of the next-item examples, as target rows.

    A user with n interactions (rows s..s+n-1) has n - 1 examples, targets s+1..s+n-1. The last
    is test and the one before validation when n - 1 >= 3; when n - 1 == 2 the last is test and
    there is no validation example; fewer examples all train.

    Args:
        offsets: `Sequences.offsets`.

    Returns:
        `{"train", "validation", "test"}`: int64 target rows (into `Sequences.items`), by user
        and then time. The history of target row p of user u is rows max(s_u, p - T)..p - 1.
    """
    starts, n = offsets[:-1], np.diff(offsets)
    examples = np.maximum(n - 1, 0)
    held_out = np.clip(examples - 1, 0, 2)
    num_train = examples - held_out
    # Rows s+1..s+num_train of every user: repeat each start, add 1..num_train.
    first = np.repeat(starts + 1, num_train)
    within = np.arange(num_train.sum()) - np.repeat(np.cumsum(num_train) - num_train, num_train)
    ends = starts + n
    return {
        "train": _readonly(first + within),
        "validation": _readonly((ends - 2)[held_out == 2]),
        "test": _readonly((ends - 1)[held_out >= 1]),
    }


def gather_examples(
    sequences: Sequences, targets: Integer[np.ndarray, " B"], max_len: int
) -> Batch:
    """The model inputs of the examples whose targets are rows `targets` of `sequences`.

    Args:
        sequences: the user sequences.
        targets: target rows, from `leave_one_out`.
        max_len: T, the most history items kept (the most recent ones).

    Returns:
        `{"items": int32 [B, T] history, left-aligned and right-padded with 0, "timestamps":
        float32 [B, T] their times (0 where padded), "lengths": int32 [B] in 1..T, "targets":
        int32 [B] the next item, "users": int32 [B] user index}`.
    """
    user = np.searchsorted(sequences.offsets, targets, side="right") - 1  # [B]
    lo = np.maximum(sequences.offsets[user], targets - max_len)  # [B]
    lengths = targets - lo  # [B]
    rows = lo[:, None] + np.arange(max_len)  # [B, T]
    valid = np.arange(max_len) < lengths[:, None]  # [B, T]
    rows = np.where(valid, rows, 0)
    return {
        "items": np.where(valid, sequences.items[rows], 0).astype(np.int32),
        "timestamps": np.where(valid, sequences.timestamps[rows], 0).astype(np.float32),
        "lengths": lengths.astype(np.int32),
        "targets": sequences.items[targets].astype(np.int32),
        "users": user.astype(np.int32),
    }


def _readonly(x: np.ndarray) -> np.ndarray:
    # Cached arrays are shared by every caller in the process.
    x.flags.writeable = False
    return x


def load_sequences(config: RecSysDataConfig) -> tuple[Sequences, dict[str, np.ndarray]]:
    """The filtered sequences of a config's source and their split (cached per process).

    Args:
        config: the pipeline settings (source, k-core, time order and synthetic fields are
            used).

    Returns:
        `(sequences, leave_one_out(sequences.offsets))`.

    Raises:
        FileNotFoundError: the source's package is not installed (the message says how).
    """
    synthetic = (config.synthetic_users, config.synthetic_items, config.synthetic_length)
    seed = config.seed if config.source == "synthetic" else 0
    return _load_sequences(
        config.source, config.min_interactions, config.time_order, synthetic, seed
    )


@functools.cache
def _load_sequences(source: str, k: int, time_order: str, synthetic: tuple, seed: int):
    if source == "ml-100k":
        table = movielens.load_ml100k()
    else:
        users, items, length = synthetic
        table = synthetic_interactions(num_users=users, num_items=items, length=length, seed=seed)
    keep = kcore_filter(table["user"], table["item"], k)
    filtered = {name: column[keep] for name, column in table.items()}
    sequences = build_sequences(filtered, time_order=time_order)
    return sequences, leave_one_out(sequences.offsets)


# ---------------------------------------------------------------------------- pipelines


def recsys_dataset_info(config: RecSysDataConfig) -> dict:
    """Describes the data a config yields (loads and caches it).

    Returns:
        `{"source", "num_users", "num_items" (ids 1..num_items; 0 = padding), "num_interactions",
        "train_examples", "validation_examples", "test_examples", "min_length", "median_length",
        "max_length" (interactions per user), "max_len", "min_interactions", "time_order",
        "time_span_days", "density"}`.
    """
    sequences, splits = load_sequences(config)
    lengths = np.diff(sequences.offsets)
    return {
        "source": config.source,
        "num_users": sequences.num_users,
        "num_items": sequences.num_items,
        "num_interactions": sequences.num_interactions,
        **{f"{split}_examples": len(splits[split]) for split in SPLITS},
        "min_length": int(lengths.min()),
        "median_length": float(np.median(lengths)),
        "max_length": int(lengths.max()),
        "max_len": config.max_len,
        "min_interactions": config.min_interactions,
        "time_order": config.time_order,
        "time_span_days": (sequences.time_max - sequences.time_min) / 86_400,
        "density": sequences.num_interactions / (sequences.num_users * sequences.num_items),
    }


def recsys_train_dataset(config: RecSysDataConfig) -> grain.IterDataset:
    """The infinite training stream of this process: every prefix of every training part.

    Epoch e is a fresh permutation of the training examples (deterministic in `config.seed` and
    e), cut into `train_examples // batch_size` global batches (RecBole keeps the last partial
    batch; here it is dropped, so no batch mixes two epochs). Each process yields rows
    `[i * b, (i + 1) * b)` of every global batch, `b = batch_size // process_count`.
    `iter(...)` is checkpointable (`get_state`/`set_state`).

    Returns:
        An IterDataset of `gather_examples` batches plus `"mask": float32 [b]` of ones.

    Raises:
        ValueError: `batch_size` is not divisible by the process count or exceeds the examples.
    """
    return _train_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def recsys_eval_dataset(
    config: RecSysDataConfig, split: Literal["validation", "test"] = "validation"
) -> grain.IterDataset:
    """One in-order pass over a held-out split: one example per user, for this process.

    Global batches hold `eval_batch_size` examples; the last one is padded with rows of zeros
    (`lengths` 0, `targets` 0) whose `mask` is 0.0. The test history includes the validation
    item. Each process yields its rows of every global batch.

    Returns:
        A finite IterDataset of `gather_examples` batches plus `"mask": float32 [b]`.

    Raises:
        ValueError: an unknown split, or `eval_batch_size` not divisible by the process count.
    """
    return _eval_dataset(
        config, split, process_index=jax.process_index(), process_count=jax.process_count()
    )


def _train_dataset(
    config: RecSysDataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.batch_size, "batch_size", process_index, process_count)
    num_examples = len(load_sequences(config)[1]["train"])
    if config.batch_size > num_examples:
        raise ValueError(
            f"batch_size={config.batch_size}: larger than the {num_examples} training examples."
        )
    ds = _train_index_batches(
        num_examples, config.batch_size, _derived_seed(config.seed, _SHUFFLE_STREAM)
    )
    ds = ds.map(_Batcher(config, "train", process_index, process_count))
    return _to_iter(ds, config.worker_count)


def _eval_dataset(
    config: RecSysDataConfig, split: str, *, process_index: int, process_count: int
) -> grain.IterDataset:
    if split not in ("validation", "test"):
        raise ValueError(f"split={split!r}: expected 'validation' or 'test'.")
    _check_shard(config.eval_batch_size, "eval_batch_size", process_index, process_count)
    num_examples = len(load_sequences(config)[1][split])
    ds = grain.MapDataset.range(num_examples).batch(config.eval_batch_size, drop_remainder=False)
    ds = ds.map(_Batcher(config, split, process_index, process_count))
    return _to_iter(ds, config.worker_count)


class _Batcher:
    """Turns a global batch of example indices into this process's batch dict.

    A picklable object rather than a closure, so that `mp_prefetch` workers can rebuild it; the
    arrays come from the per-process cache, not from the pickle.
    """

    def __init__(self, config: RecSysDataConfig, split: str, process_index: int, count: int):
        self.config = config
        self.split = split
        self.process_index = process_index
        self.process_count = count

    def __call__(self, indices: np.ndarray) -> Batch:
        sequences, splits = load_sequences(self.config)
        size = len(indices) if self.split == "train" else self.config.eval_batch_size
        shard = _shard_slice(size, self.process_index, self.process_count)
        real = (np.arange(size) < len(indices))[shard]  # [b]
        padded = np.zeros(size, np.int64)
        padded[: len(indices)] = indices
        targets = splits[self.split][padded[shard]]
        batch = gather_examples(sequences, targets, self.config.max_len)
        batch = {
            k: np.where(real.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0).astype(v.dtype)
            for k, v in batch.items()
        }
        # Every batch's values (ids, lengths, time order, targets) before a jitted model sees them:
        # under jit nothing can check them, and an id past the embedding gives NaN scores.
        check_sequences(
            batch["items"],
            num_items=sequences.num_items,
            timestamps=batch["timestamps"],
            lengths=batch["lengths"],
            targets=batch["targets"],
        )
        batch["mask"] = real.astype(np.float32)
        return batch
