"""Byte-level text corpora (KJV Bible, Python docs, synthetic) and their Grain LM pipelines."""

import dataclasses
import functools
import glob
import pathlib
import re
import shutil
import subprocess
import zlib
from typing import Literal

import grain
import jax
import numpy as np
from jaxtyping import Float32, Int32, Integer, UInt8

from efficient.checks import check_field_types, check_positive_ints, validates_arguments
from efficient.data._grain import (
    _check_shard,
    _derived_seed,
    _shard_slice,
    _to_iter,
    _train_index_batches,
)

Batch = dict[str, np.ndarray]

VOCAB_SIZE = 256  # bytes; non-ASCII text is seen as its UTF-8 bytes
SOURCES = ("kjv", "python_docs", "synthetic")

# The `bible` command of Debian's bible-kjv prints the same text on every release; -m lifts its
# default 1000-verse limit on one reference.
KJV_COMMAND = ("bible", "-m", "8192", "gen1:1-rev22:21")
KJV_NUM_BOOKS = 66
# Held-out books, chosen to span the genres of both testaments (narrative, wisdom, apocalyptic,
# prophecy; gospel, Pauline and general epistle): 6.1% of the characters.
KJV_VALIDATION_BOOKS = ("Ruth", "Ecclesiastes", "Daniel", "Jonah", "Mark", "Romans", "James")

PYTHON_DOCS_GLOB = "/usr/share/doc/python3.*-doc/html/_sources"
# A document is held out when zlib.crc32(its path under _sources) % 20 == 0 (~5% of documents):
# stable across runs, machines and Python versions, unlike `hash`.
PYTHON_DOCS_VALIDATION_MODULUS = 20
# ASCII "record separator", between two documents; it occurs in none of them.
DOC_SEPARATOR = b"\x1e"

# Independent streams derived from `TextDataConfig.seed`, so that no two uses share a seed.
_SHUFFLE_STREAM = 0
_OFFSET_STREAM = 1
_SYNTHETIC_STREAM = 2
_SYNTHETIC_SPLITS = {"train": 0, "validation": 1}


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class TextDataConfig:
    """Byte-level language-model pipeline settings for `text_train_dataset`/`text_eval_dataset`.

    Each example is a window of `seq_len + 1` consecutive bytes of a split: `inputs` are its first
    `seq_len` bytes and `targets` its last `seq_len`, so every position predicts the next byte.

    Attributes:
        source: "kjv" (Debian bible-kjv, split by book), "python_docs" (Debian python3-doc, split
            by document) or "synthetic" (`synthetic_text`: a seeded word Markov chain).
        seq_len: T, the tokens (bytes) per example fed to the model.
        batch_size: global training batch size, over all processes together.
        eval_batch_size: global evaluation batch size; the last batch is padded to it with mask 0.
        seed: determines the window order and offset of every epoch, and the synthetic text.
        eval_tokens: evaluate only the first windows of the validation split holding this many
            target tokens, rounded up to whole windows; None evaluates all of it.
        synthetic_train_size: bytes of the synthetic training split.
        synthetic_eval_size: bytes of the synthetic validation split.
        worker_count: grain worker processes (`mp_prefetch`); 0 computes batches in-process.
    """

    source: Literal["kjv", "python_docs", "synthetic"] = "kjv"
    seq_len: int = 256
    batch_size: int = 32
    eval_batch_size: int = 64
    seed: int = 0
    eval_tokens: int | None = None
    synthetic_train_size: int = 1 << 16
    synthetic_eval_size: int = 1 << 13
    worker_count: int = 0

    def __post_init__(self):
        check_field_types(self)
        check_positive_ints(self, ("seq_len", "batch_size", "eval_batch_size"))
        for name in ("synthetic_train_size", "synthetic_eval_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}={getattr(self, name)}: expected at least 2 bytes.")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed}: expected an integer in [0, 2**32).")
        if self.eval_tokens is not None and self.eval_tokens < 1:
            raise ValueError(f"eval_tokens={self.eval_tokens}: expected None or >= 1.")
        if self.worker_count < 0:
            raise ValueError(f"worker_count={self.worker_count}: expected >= 0.")


# ---------------------------------------------------------------------------- bytes


def encode(text: str) -> UInt8[np.ndarray, " n"]:
    """The UTF-8 bytes of `text` as token ids.

    Args:
        text: any string.

    Returns:
        uint8 [n] with n the UTF-8 length of `text`.
    """
    return np.frombuffer(text.encode("utf-8"), np.uint8).copy()


def decode(ids: Integer[np.ndarray, " n"] | list[int]) -> str:
    """The string whose UTF-8 bytes are `ids`; invalid sequences become U+FFFD.

    Args:
        ids: byte ids in [0, 256), e.g. a row of `inputs` or sampled tokens.

    Returns:
        The decoded text.

    Raises:
        ValueError: an id is outside [0, 256).
    """
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"ids: values in [{ids.min()}, {ids.max()}], expected in [0, 256).")
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------- corpora


def load_corpus(
    source: str,
    *,
    seed: int = 0,
    synthetic_train_size: int = TextDataConfig.synthetic_train_size,
    synthetic_eval_size: int = TextDataConfig.synthetic_eval_size,
) -> dict[str, UInt8[np.ndarray, " _"]]:
    """The train and validation splits of a corpus, as bytes (cached per process, read-only).

    - "kjv": the King James Bible as `bible -m 8192 gen1:1-rev22:21` prints it (4,298,239 ASCII
      characters: chapter header lines such as "1 Samuel 3", verses wrapped at 80 columns). Split
      by book: `KJV_VALIDATION_BOOKS` are the validation split, the other 59 books the training
      split, each in canonical order; the two concatenate to the whole text's length.
    - "python_docs": the reST sources of the Python documentation (`*.rst.txt` under
      `PYTHON_DOCS_GLOB`), split by document with `zlib.crc32(relative path) % 20 == 0` for
      validation; each split is its documents in sorted path order joined by `DOC_SEPARATOR`.
    - "synthetic": `synthetic_text` of both splits (the only source that uses the keywords).

    Args:
        source: "kjv", "python_docs" or "synthetic".
        seed: synthetic text seed.
        synthetic_train_size: synthetic training bytes.
        synthetic_eval_size: synthetic validation bytes.

    Returns:
        `{"train": uint8 [n], "validation": uint8 [m]}`.

    Raises:
        FileNotFoundError: the Debian package of the corpus is not installed.
        ValueError: an unknown source, or text that does not parse as expected.
    """
    if source == "kjv":
        return _load_kjv()[0]
    if source == "python_docs":
        return _load_python_docs()[0]
    if source == "synthetic":
        return {
            split: synthetic_text(split, size=size, seed=seed)
            for split, size in (
                ("train", synthetic_train_size),
                ("validation", synthetic_eval_size),
            )
        }
    raise ValueError(f"source={source!r}: expected one of {', '.join(SOURCES)}.")


def _kjv_books(text: str) -> list[tuple[str, int]]:
    """The books of the `bible` command's text and the character offsets where they start.

    A chapter starts with the blank line before its header line "<book> <chapter>" (a header is
    the only line between two blank lines); the book is the header minus the chapter number, so
    "1 Samuel 3" is in "1 Samuel" and "Song of Solomon 2" in "Song of Solomon".

    Args:
        text: the whole text, as `load_corpus("kjv")` reads it.

    Returns:
        `[(name, start), ...]` in canonical order; `text[start_i : start_{i+1}]` is book i.
    """
    books = []
    for header in re.finditer(r"\n([^\n]+) (\d+)\n\n", text):
        if not books or books[-1][0] != header.group(1):
            books.append((header.group(1), header.start()))
    return books


@functools.cache
def _load_kjv() -> tuple[dict[str, np.ndarray], str]:
    if shutil.which(KJV_COMMAND[0]) is None:
        raise FileNotFoundError(
            "the KJV corpus needs the `bible` command: install it with "
            "`sudo apt-get install bible-kjv`."
        )
    text = subprocess.run(KJV_COMMAND, capture_output=True, text=True, check=True).stdout
    books = _kjv_books(text)
    names = [name for name, _ in books]
    if (
        len(books) != KJV_NUM_BOOKS
        or books[0][1] != 0
        or not set(KJV_VALIDATION_BOOKS) <= set(names)
    ):
        raise ValueError(
            f"`{' '.join(KJV_COMMAND)}` printed {len(books)} books (expected {KJV_NUM_BOOKS}, "
            f"starting at character 0, including {', '.join(KJV_VALIDATION_BOOKS)})."
        )
    ends = [start for _, start in books[1:]] + [len(text)]
    parts = {"train": [], "validation": []}
    for (name, start), end in zip(books, ends, strict=True):
        split = "validation" if name in KJV_VALIDATION_BOOKS else "train"
        parts[split].append(text[start:end])
    fraction = sum(map(len, parts["validation"])) / len(text)
    description = (
        f"by book: validation = {', '.join(KJV_VALIDATION_BOOKS)} ({fraction:.1%} of the "
        f"characters); train = the other {KJV_NUM_BOOKS - len(KJV_VALIDATION_BOOKS)} books"
    )
    return {split: _readonly(encode("".join(p))) for split, p in parts.items()}, description


def _python_docs_dir() -> tuple[pathlib.Path, str]:
    """The newest installed Python documentation's reST sources and its version.

    Returns:
        `(directory of *.rst.txt, "3.X")`.

    Raises:
        FileNotFoundError: no python3.X-doc package is installed.
    """
    found = {}
    for path in map(pathlib.Path, glob.glob(PYTHON_DOCS_GLOB)):
        match = re.fullmatch(r"python3\.(\d+)-doc", path.parent.parent.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    if not found:
        raise FileNotFoundError(
            f"no Python documentation sources match {PYTHON_DOCS_GLOB}: install them with "
            "`sudo apt-get install python3-doc`."
        )
    minor = max(found)
    return found[minor], f"3.{minor}"


def _is_python_docs_validation(relative_path: str) -> bool:
    """Whether the document at `relative_path` (posix, under `_sources`) is held out."""
    return zlib.crc32(relative_path.encode("utf-8")) % PYTHON_DOCS_VALIDATION_MODULUS == 0


@functools.cache
def _load_python_docs() -> tuple[dict[str, np.ndarray], str, str]:
    root, version = _python_docs_dir()
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.rst.txt"))
    if not paths:
        raise FileNotFoundError(f"{root} holds no *.rst.txt files: reinstall python3-doc.")
    docs = {"train": [], "validation": []}
    for rel in paths:
        split = "validation" if _is_python_docs_validation(rel) else "train"
        # Bytes as stored: UTF-8, so non-ASCII characters arrive as their UTF-8 bytes.
        docs[split].append((root / rel).read_bytes())
    if not docs["train"] or not docs["validation"]:
        raise ValueError(f"{root}: {len(paths)} documents leave a split empty.")
    description = (
        f"by document: validation = the {len(docs['validation'])} of {len(paths)} *.rst.txt files "
        f"whose zlib.crc32(path) % {PYTHON_DOCS_VALIDATION_MODULUS} == 0; documents in sorted "
        f"path order joined by {DOC_SEPARATOR!r}"
    )
    splits = {
        split: _readonly(np.frombuffer(DOC_SEPARATOR.join(d), np.uint8))
        for split, d in docs.items()
    }
    return splits, description, version


def synthetic_text(split: str, *, size: int, seed: int = 0) -> UInt8[np.ndarray, " n"]:
    """`size` bytes of a seeded word Markov chain, learnable well below the 8 bits of uniform bytes.

    The language, drawn from `seed` alone and shared by both splits: 31 lowercase words of 2-7
    letters and a sentence end ".\\n"; each of these 32 tokens is followed by one of 4 successors
    (uniformly). Each split is an independent walk of the chain (its own stream of `seed`), cut
    to `size` bytes; words are followed by a space.

    Args:
        split: "train" or "validation".
        size: bytes to generate.
        seed: the language and the walks.

    Returns:
        uint8 [size] of ASCII text.
    """
    if split not in _SYNTHETIC_SPLITS:
        raise ValueError(f"split={split!r}: expected 'train' or 'validation'.")
    return _synthetic_text(split, size, seed)


@functools.cache
def _synthetic_text(split: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _SYNTHETIC_STREAM])
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    tokens = [encode(".\n")] + [
        np.append(rng.choice(letters, size=rng.integers(2, 8)), np.uint8(ord(" ")))
        for _ in range(31)
    ]
    successors = rng.integers(0, len(tokens), size=(len(tokens), 4))
    walk = np.random.default_rng([seed, _SYNTHETIC_STREAM, _SYNTHETIC_SPLITS[split]])
    # Tokens are >= 2 bytes, so size // 2 + 1 steps always reach `size` bytes.
    choices = walk.integers(0, 4, size=size // 2 + 1)
    state, out, length = 0, [], 0
    for choice in choices:
        state = successors[state, choice]
        out.append(tokens[state])
        length += len(tokens[state])
        if length >= size:
            break
    return _readonly(np.concatenate(out)[:size])


def _readonly(x: np.ndarray) -> np.ndarray:
    # Cached arrays are shared by every caller in the process.
    x.flags.writeable = False
    return x


# ---------------------------------------------------------------------------- pipelines


def text_dataset_info(config: TextDataConfig) -> dict:
    """Describes the data a config yields (loads the corpus, which is then cached).

    Args:
        config: the pipeline settings.

    Returns:
        `{"vocab_size": 256, "train_tokens": bytes of the training split, "eval_tokens": target
        tokens one evaluation pass scores (mask sum), "train_windows": training windows per
        epoch, "eval_windows", "source", "split": how train and validation were separated}`, plus
        `"python_version"` ("3.X") for python_docs, whose text follows the Debian release.
    """
    corpus = _corpus(config)
    info = {
        "vocab_size": VOCAB_SIZE,
        "train_tokens": len(corpus["train"]),
        "eval_tokens": _eval_targets(config, len(corpus["validation"])),
        "train_windows": _num_train_windows(len(corpus["train"]), config.seq_len),
        "eval_windows": _num_eval_windows(config, len(corpus["validation"])),
        "source": config.source,
    }
    if config.source == "kjv":
        info["split"] = _load_kjv()[1]
    elif config.source == "python_docs":
        _, info["split"], info["python_version"] = _load_python_docs()
    else:
        info["split"] = (
            f"independent walks of one word Markov chain (seed {config.seed}): "
            f"{config.synthetic_train_size} train and {config.synthetic_eval_size} validation bytes"
        )
    return info


def text_train_dataset(config: TextDataConfig) -> grain.IterDataset:
    """The infinite training stream of this process.

    The training split is packed into `train_windows = n // T - 1` windows of `T + 1` bytes with
    stride T (`T = seq_len`), shifted in epoch e by an offset in [0, T) drawn from `config.seed`
    and e, so that windows straddle different boundaries in different epochs. Epoch e is a fresh
    permutation of the windows (deterministic in `config.seed` and e), cut into
    `train_windows // batch_size` global batches (the remainder is dropped, so no batch mixes two
    epochs). Each process yields rows `[i * b, (i + 1) * b)` of every global batch,
    `b = batch_size // process_count`, so the processes together see the single-process batches.

    `iter(text_train_dataset(config))` is checkpointable: `get_state()` is a small
    JSON-serialisable dict, and `set_state` on a fresh iterator resumes the exact same batches.

    Args:
        config: the pipeline settings.

    Returns:
        An IterDataset of `{"inputs": int32 [b, T], "targets": int32 [b, T] (inputs shifted by
        one), "mask": float32 [b, T] of ones}`.

    Raises:
        ValueError: `batch_size` is not divisible by the process count or exceeds the windows.
    """
    return _train_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def text_eval_dataset(config: TextDataConfig) -> grain.IterDataset:
    """One in-order pass over the validation split, for this process.

    Window k is bytes `[k T, k T + T + 1)` of the validation split, so every target token is
    scored exactly once; the last window may be short, its missing positions zero with mask 0.
    With `eval_tokens`, only the first `ceil(eval_tokens / T)` windows are used. Global batches
    hold `eval_batch_size` windows; the last one is padded with zero rows of mask 0. Each process
    yields its rows of every global batch, as in `text_train_dataset`.

    Args:
        config: the pipeline settings.

    Returns:
        A finite IterDataset of `{"inputs", "targets", "mask"}` batches (see
        `text_train_dataset`); `mask` is 0.0 on padding.

    Raises:
        ValueError: `eval_batch_size` is not divisible by the process count.
    """
    return _eval_dataset(
        config, process_index=jax.process_index(), process_count=jax.process_count()
    )


def _train_dataset(
    config: TextDataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.batch_size, "batch_size", process_index, process_count)
    ds = _train_window_starts(config)
    ds = ds.map(_Batcher(config, "train", process_index, process_count))
    return _to_iter(ds, config.worker_count)


def _eval_dataset(
    config: TextDataConfig, *, process_index: int, process_count: int
) -> grain.IterDataset:
    _check_shard(config.eval_batch_size, "eval_batch_size", process_index, process_count)
    num_windows = _num_eval_windows(config, len(_corpus(config)["validation"]))
    T = config.seq_len
    ds = grain.MapDataset.range(0, num_windows * T, T)
    ds = ds.batch(config.eval_batch_size, drop_remainder=False)
    ds = ds.map(_Batcher(config, "validation", process_index, process_count))
    return _to_iter(ds, config.worker_count)


def _train_window_starts(config: TextDataConfig) -> grain.MapDataset:
    """Infinite MapDataset of int64 [batch_size] window start offsets: step -> global batch."""
    n = len(_corpus(config)["train"])
    num_windows = _num_train_windows(n, config.seq_len)
    if num_windows < 1:
        raise ValueError(
            f"seq_len={config.seq_len}: the {n}-byte training split holds no window at every "
            f"offset (needs at least 2 * seq_len = {2 * config.seq_len} bytes)."
        )
    if config.batch_size > num_windows:
        raise ValueError(
            f"batch_size={config.batch_size}: larger than the {num_windows} training windows of "
            f"seq_len + 1 = {config.seq_len + 1} bytes."
        )
    shuffle_seed = _derived_seed(config.seed, _SHUFFLE_STREAM)
    ds = _train_index_batches(num_windows, config.batch_size, shuffle_seed)
    return ds.map_with_index(
        _WindowStarts(
            config.seq_len,
            num_windows // config.batch_size,
            _derived_seed(config.seed, _OFFSET_STREAM),
        )
    )


class _WindowStarts:
    """(step, window indices) -> byte offsets `index * T + offset(epoch)`; picklable for workers."""

    def __init__(self, seq_len: int, steps_per_epoch: int, seed: int):
        self.seq_len = seq_len
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed

    def __call__(self, step: int, indices: np.ndarray) -> np.ndarray:
        epoch = step // self.steps_per_epoch
        # A function of (seed, epoch) only, so resuming at any step needs no extra state.
        offset = _derived_seed(self.seed, epoch) % self.seq_len
        return indices * self.seq_len + offset


def _num_train_windows(n: int, seq_len: int) -> int:
    # Window i + offset must fit for every offset in [0, T): i T + (T - 1) + T + 1 <= n.
    return n // seq_len - 1


def _num_eval_windows(config: TextDataConfig, m: int) -> int:
    windows = -(-(m - 1) // config.seq_len)  # ceil: the last window may be short
    if config.eval_tokens is not None:
        windows = min(windows, -(-config.eval_tokens // config.seq_len))
    return windows


def _eval_targets(config: TextDataConfig, m: int) -> int:
    return min(_num_eval_windows(config, m) * config.seq_len, m - 1)


def _corpus(config: TextDataConfig) -> dict[str, np.ndarray]:
    return load_corpus(
        config.source,
        seed=config.seed,
        synthetic_train_size=config.synthetic_train_size,
        synthetic_eval_size=config.synthetic_eval_size,
    )


def _windows(
    data: UInt8[np.ndarray, " n"], starts: Integer[np.ndarray, " B"], seq_len: int
) -> tuple[Int32[np.ndarray, "B T"], Int32[np.ndarray, "B T"], Float32[np.ndarray, "B T"]]:
    """inputs, targets and mask of the windows `data[s : s + T + 1]`, zero past the end of data."""
    idx = starts[:, None] + np.arange(seq_len + 1)  # [B, T+1]
    present = idx < len(data)
    window = np.where(present, data[np.minimum(idx, len(data) - 1)], 0).astype(np.int32)
    return window[:, :-1], window[:, 1:], present[:, 1:].astype(np.float32)


class _Batcher:
    """Turns a global batch of window starts into this process's batch dict.

    A picklable object rather than a closure, so that `mp_prefetch` workers can rebuild it; the
    bytes come from the per-process corpus caches, not from the pickle.
    """

    def __init__(self, config: TextDataConfig, split: str, process_index: int, process_count: int):
        self.config = config
        self.split = split
        self.process_index = process_index
        self.process_count = process_count

    def __call__(self, starts: Integer[np.ndarray, " n"]) -> Batch:
        data = _corpus(self.config)[self.split]
        size = len(starts) if self.split == "train" else self.config.eval_batch_size
        real = np.zeros(size, bool)
        real[: len(starts)] = True
        padded = np.zeros(size, np.int64)
        padded[: len(starts)] = starts
        shard = _shard_slice(size, self.process_index, self.process_count)
        inputs, targets, mask = _windows(data, padded[shard], self.config.seq_len)
        keep = real[shard, None]  # [b, 1]
        return {
            "inputs": np.where(keep, inputs, 0),
            "targets": np.where(keep, targets, 0),
            "mask": np.where(keep, mask, np.float32(0)),
        }
