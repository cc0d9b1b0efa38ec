"""Byte-level text: corpora and splits, LM batches, shuffling, sharding, eval, checkpointing."""

import dataclasses
import glob
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest

from efficient.data import (
    TextDataConfig,
    decode,
    encode,
    load_corpus,
    synthetic_text,
    text,
    text_dataset_info,
    text_eval_dataset,
    text_train_dataset,
)

needs_kjv = pytest.mark.skipif(
    shutil.which("bible") is None,
    reason="needs the Debian package bible-kjv (sudo apt-get install bible-kjv)",
)
needs_python_docs = pytest.mark.skipif(
    not glob.glob("/usr/share/doc/python3.*-doc/html/_sources"),
    reason="needs the Debian package python3-doc (sudo apt-get install python3-doc)",
)

# 1024 bytes, T = 16: 63 training windows, 7 global batches of 8 per epoch; 300 validation bytes:
# 299 targets in 19 windows (the last one 11 targets long), 4 eval batches of 6 (5 padding rows).
SMALL = TextDataConfig(
    source="synthetic",
    seq_len=16,
    batch_size=8,
    eval_batch_size=6,
    synthetic_train_size=1024,
    synthetic_eval_size=300,
)
STEPS_PER_EPOCH = 7


def _take(it, n: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(it, n))


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _starts(config: TextDataConfig, steps: int) -> list[np.ndarray]:
    ds = text._train_window_starts(config)
    return [ds[i] for i in range(steps)]


def _kjv_raw() -> str:
    return subprocess.run(
        ["bible", "-m", "8192", "gen1:1-rev22:21"], capture_output=True, text=True, check=True
    ).stdout


# ---------------------------------------------------------------------------- config and bytes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seq_len": 0}, "seq_len=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"eval_batch_size": -2}, "eval_batch_size=-2"),
        ({"seed": -1}, "seed=-1"),
        ({"eval_tokens": 0}, "eval_tokens=0"),
        ({"worker_count": -1}, "worker_count=-1"),
        ({"synthetic_train_size": 1}, "synthetic_train_size=1"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextDataConfig(**kwargs)


def test_unknown_source():
    with pytest.raises(ValueError, match="source"):
        TextDataConfig(source="wiki")
    with pytest.raises(ValueError, match="source='wiki'"):
        load_corpus("wiki")


def test_batch_larger_than_the_windows_is_rejected():
    with pytest.raises(ValueError, match="batch_size=64.*63 training windows"):
        text_train_dataset(dataclasses.replace(SMALL, batch_size=64))
    with pytest.raises(ValueError, match="seq_len=600"):
        text_train_dataset(dataclasses.replace(SMALL, seq_len=600))


def test_batch_not_divisible_by_process_count():
    with pytest.raises(ValueError, match="batch_size=8.*process count"):
        text._train_dataset(SMALL, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="eval_batch_size=6.*process count"):
        text._eval_dataset(SMALL, process_index=0, process_count=4)


@pytest.mark.parametrize("s", ["", "In the beginning", "héllo, wörld — 世界 🙂\n"])
def test_encode_decode_round_trip(s):
    ids = encode(s)
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, np.frombuffer(s.encode("utf-8"), np.uint8))
    assert decode(ids) == s
    assert decode(ids.astype(np.int32)) == s
    assert decode(ids.tolist()) == s


def test_non_ascii_is_utf8_bytes_and_invalid_bytes_are_replaced():
    np.testing.assert_array_equal(encode("é"), [0xC3, 0xA9])
    assert decode(np.array([104, 0xC3, 105])) == "h\ufffdi"  # a truncated 2-byte sequence
    with pytest.raises(ValueError, match="ids"):
        decode(np.array([65, 256]))


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_text_is_deterministic_and_splits_differ():
    a = synthetic_text("train", size=5000, seed=0)
    assert a.dtype == np.uint8 and a.shape == (5000,) and a.max() < 128
    np.testing.assert_array_equal(a, synthetic_text("train", size=5000, seed=0))
    assert not np.array_equal(a[:1000], synthetic_text("validation", size=1000, seed=0))
    assert not np.array_equal(a, synthetic_text("train", size=5000, seed=1))
    corpus = load_corpus("synthetic", synthetic_train_size=5000, synthetic_eval_size=1000)
    np.testing.assert_array_equal(corpus["train"], a)
    with pytest.raises(ValueError, match="split='test'"):
        synthetic_text("test", size=10)


def test_synthetic_text_is_learnable():
    # The next byte given the previous two has far less than the 8 bits of uniform bytes.
    x = synthetic_text("train", size=1 << 16, seed=0).astype(np.int64)
    context = x[:-2] * 256 + x[1:-1]
    pairs = np.unique(context * 256 + x[2:], return_counts=True)[1]
    contexts = np.unique(context, return_counts=True)[1]
    n = len(x) - 2
    entropy = -(pairs * np.log2(pairs / n)).sum() / n + (contexts * np.log2(contexts / n)).sum() / n
    assert entropy < 1.0


# ---------------------------------------------------------------------------- KJV


@needs_kjv
def test_kjv_has_66_books_in_canonical_order():
    raw = _kjv_raw()
    assert len(raw) == 4_298_239
    books = text._kjv_books(raw)
    names = [name for name, _ in books]
    assert len(books) == 66 and len(set(names)) == 66
    assert names[:2] == ["Genesis", "Exodus"] and names[-2:] == ["Jude", "Revelation"]
    assert {"1 Samuel", "Song of Solomon", "1 John", "3 John", "Philemon"} <= set(names)
    # Independently: a header is a line between two blank lines; 1189 chapters in the KJV.
    lines = raw.split("\n")
    headers = [lines[i] for i in range(1, len(lines) - 1) if lines[i - 1] == lines[i + 1] == ""]
    assert len(headers) == 1189
    assert list(dict.fromkeys(h.rsplit(" ", 1)[0] for h in headers)) == names
    for name, start in books:
        assert raw.startswith(f"\n{name} 1\n\n", start)


@needs_kjv
def test_kjv_split_is_by_book():
    raw = _kjv_raw()
    corpus = load_corpus("kjv")
    train, validation = (corpus[s].tobytes().decode("ascii") for s in ("train", "validation"))
    assert len(train) + len(validation) == len(raw)
    names = [name for name, _ in text._kjv_books(raw)]
    starts = [raw.index(f"\n{name} 1\n\n") for name in names] + [len(raw)]
    segments = {name: raw[a:b] for name, a, b in zip(names, starts[:-1], starts[1:], strict=True)}
    held_out = text.KJV_VALIDATION_BOOKS
    assert validation == "".join(segments[n] for n in names if n in held_out)
    assert train == "".join(segments[n] for n in names if n not in held_out)
    for name in names:
        marker = f"\n{name} 1\n\n"
        assert (marker in validation) == (name in held_out), name
        assert (marker in train) == (name not in held_out), name
    # Both testaments are held out (Matthew is the first New Testament book).
    testaments = {names.index(n) >= names.index("Matthew") for n in held_out}
    assert testaments == {False, True}
    assert 0.05 <= len(validation) / len(raw) <= 0.10


@needs_kjv
def test_kjv_split_is_deterministic():
    first = load_corpus("kjv")
    digest = hashlib.sha256(first["validation"].tobytes()).hexdigest()
    text._load_kjv.cache_clear()
    second = load_corpus("kjv")
    assert second["validation"] is not first["validation"]
    for split in ("train", "validation"):
        np.testing.assert_array_equal(first[split], second[split])
    assert hashlib.sha256(second["validation"].tobytes()).hexdigest() == digest
    assert not first["train"].flags.writeable


@needs_kjv
def test_kjv_info_and_batches_are_corpus_windows():
    config = TextDataConfig(source="kjv", seq_len=64, batch_size=4, eval_batch_size=4)
    info = text_dataset_info(config)
    corpus = load_corpus("kjv")
    assert info["vocab_size"] == 256 and info["source"] == "kjv" and "python_version" not in info
    assert info["train_tokens"] == len(corpus["train"])
    assert info["eval_tokens"] == len(corpus["validation"]) - 1
    assert "Ruth" in info["split"] and "James" in info["split"]
    batch = next(iter(text_train_dataset(config)))
    (starts,) = _starts(config, 1)
    for row, s in enumerate(starts):
        np.testing.assert_array_equal(batch["inputs"][row], corpus["train"][s : s + 64])
        np.testing.assert_array_equal(batch["targets"][row], corpus["train"][s + 1 : s + 65])
    first = next(iter(text_eval_dataset(config)))
    np.testing.assert_array_equal(first["inputs"][0], corpus["validation"][:64])
    assert decode(first["inputs"][0]).startswith("\nRuth 1\n\n  1 Now it came to pass")


# ---------------------------------------------------------------------------- Python docs


@needs_python_docs
def test_python_docs_split_by_document_and_version():
    info = text_dataset_info(TextDataConfig(source="python_docs"))
    root, version = text._python_docs_dir()
    assert re.fullmatch(r"3\.\d+", info["python_version"]) and info["python_version"] == version
    assert root.parent.parent.name == f"python{version}-doc"
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.rst.txt"))
    docs = {p: (root / p).read_bytes() for p in paths}
    held_out = [p for p in paths if zlib.crc32(p.encode()) % 20 == 0]
    assert 0 < len(held_out) < len(paths)
    assert not any(text.DOC_SEPARATOR in d for d in docs.values())
    corpus = load_corpus("python_docs")
    validation = text.DOC_SEPARATOR.join(docs[p] for p in held_out)
    train = text.DOC_SEPARATOR.join(docs[p] for p in paths if p not in held_out)
    assert corpus["validation"].tobytes() == validation
    assert corpus["train"].tobytes() == train
    assert 0.01 <= len(validation) / (len(validation) + len(train)) <= 0.15
    assert info["train_tokens"] == len(train) and info["eval_tokens"] == len(validation) - 1
    assert f"{len(held_out)} of {len(paths)}" in info["split"]
    # Non-ASCII text is kept as its UTF-8 bytes.
    assert (corpus["train"] >= 128).any()


@needs_python_docs
def test_python_docs_split_is_deterministic():
    digest = hashlib.sha256(load_corpus("python_docs")["validation"].tobytes()).hexdigest()
    text._load_python_docs.cache_clear()
    again = load_corpus("python_docs")["validation"].tobytes()
    assert hashlib.sha256(again).hexdigest() == digest


def test_missing_packages_name_the_install_command(monkeypatch):
    monkeypatch.setattr(text.shutil, "which", lambda _: None)
    monkeypatch.setattr(text, "PYTHON_DOCS_GLOB", "/nonexistent/python3.*-doc/html/_sources")
    monkeypatch.setattr(text, "_load_kjv", text._load_kjv.__wrapped__)
    monkeypatch.setattr(text, "_load_python_docs", text._load_python_docs.__wrapped__)
    with pytest.raises(FileNotFoundError, match="apt-get install bible-kjv"):
        load_corpus("kjv")
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        load_corpus("python_docs")


# ---------------------------------------------------------------------------- training batches


def test_train_batch_format_and_contents():
    data = load_corpus("synthetic", synthetic_train_size=1024, synthetic_eval_size=300)["train"]
    batches = _take(iter(text_train_dataset(SMALL)), 9)
    for batch, starts in zip(batches, _starts(SMALL, 9), strict=True):
        assert set(batch) == {"inputs", "targets", "mask"}
        for key, dtype in (("inputs", np.int32), ("targets", np.int32), ("mask", np.float32)):
            assert batch[key].shape == (8, 16) and batch[key].dtype == dtype, key
        np.testing.assert_array_equal(batch["mask"], np.ones((8, 16), np.float32))
        np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
        for row, s in enumerate(starts):
            np.testing.assert_array_equal(batch["inputs"][row], data[s : s + 16])
            np.testing.assert_array_equal(batch["targets"][row], data[s + 1 : s + 17])


def test_each_epoch_is_a_fresh_permutation_of_shifted_windows():
    starts = _starts(SMALL, 4 * STEPS_PER_EPOCH)
    epochs = [np.concatenate(starts[e * 7 : (e + 1) * 7]) for e in range(4)]
    offsets = []
    for epoch in epochs:
        offset = epoch[0] % 16
        assert (epoch % 16 == offset).all()  # one offset in [0, T) per epoch
        windows = (epoch - offset) // 16
        assert len(set(windows.tolist())) == 56 and set(windows.tolist()) <= set(range(63))
        assert (epoch + 17 <= 1024).all()
        offsets.append(offset)
    assert len({tuple((e - e % 16) // 16) for e in epochs}) == 4  # a new order every epoch
    assert len(set(offsets)) > 1


def test_same_seed_same_batches_different_seed_different():
    a = _take(iter(text_train_dataset(SMALL)), 3)
    b = _take(iter(text_train_dataset(SMALL)), 3)
    c = _take(iter(text_train_dataset(dataclasses.replace(SMALL, seed=1))), 3)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])
    # seed 1 does not replay seed 0's next epoch (grain's shuffle uses seed + epoch).
    order0 = np.concatenate(_starts(SMALL, 14)[7:]) // 16
    order1 = np.concatenate(_starts(dataclasses.replace(SMALL, seed=1), 7)) // 16
    assert not np.array_equal(order0, order1)


def test_checkpoint_resumes_the_same_batches_across_an_epoch_boundary():
    it = iter(text_train_dataset(SMALL))
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 6)
    fresh = iter(text_train_dataset(SMALL))
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 6), expected)


def test_process_shards_concatenate_to_the_global_batch():
    whole = _take(iter(text._train_dataset(SMALL, process_index=0, process_count=1)), 8)
    shards = [
        _take(iter(text._train_dataset(SMALL, process_index=p, process_count=2)), 8) for p in (0, 1)
    ]
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            assert parts[0].shape == (4, 16)
            np.testing.assert_array_equal(np.concatenate(parts), batch[key])


# ---------------------------------------------------------------------------- evaluation


def test_eval_scores_every_validation_target_once():
    data = load_corpus("synthetic", synthetic_train_size=1024, synthetic_eval_size=300)
    data = data["validation"]
    batches = list(text_eval_dataset(SMALL))
    assert len(batches) == 4
    for batch in batches:
        assert {k: v.shape for k, v in batch.items()} == dict.fromkeys(batch, (6, 16))
    inputs, targets, mask = (np.concatenate([b[k] for b in batches]) for k in batches[0])
    assert mask.sum() == 299 == text_dataset_info(SMALL)["eval_tokens"]
    np.testing.assert_array_equal(targets[mask > 0], data[1:])
    np.testing.assert_array_equal(inputs[mask > 0], data[:-1])
    # 18 full windows, one of 11 targets, then 5 rows of padding.
    np.testing.assert_array_equal(mask.sum(1), [16] * 18 + [11] + [0] * 5)
    np.testing.assert_array_equal(inputs[18, :12], data[288:300])
    assert not inputs[18, 12:].any() and not targets[18, 11:].any()
    assert not inputs[19:].any() and not targets[19:].any()


def test_eval_tokens_caps_whole_windows():
    data = load_corpus("synthetic", synthetic_train_size=1024, synthetic_eval_size=300)
    config = dataclasses.replace(SMALL, eval_tokens=40)  # rounded up to 3 windows
    batches = list(text_eval_dataset(config))
    assert len(batches) == 1
    (batch,) = batches
    np.testing.assert_array_equal(batch["mask"].sum(1), [16, 16, 16, 0, 0, 0])
    np.testing.assert_array_equal(batch["targets"][:3].ravel(), data["validation"][1:49])
    info = text_dataset_info(config)
    assert info["eval_tokens"] == 48 and info["eval_windows"] == 3
    assert text_dataset_info(dataclasses.replace(SMALL, eval_tokens=10**9))["eval_tokens"] == 299


def test_eval_shards_concatenate_to_the_global_batch():
    whole = list(text._eval_dataset(SMALL, process_index=0, process_count=1))
    shards = [list(text._eval_dataset(SMALL, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole)
    for step, batch in enumerate(whole):
        for key in batch:
            parts = [shard[step][key] for shard in shards]
            np.testing.assert_array_equal(np.concatenate(parts), batch[key])


def test_synthetic_info():
    info = text_dataset_info(SMALL)
    assert info == {
        "vocab_size": 256,
        "train_tokens": 1024,
        "eval_tokens": 299,
        "train_windows": 63,
        "eval_windows": 19,
        "source": "synthetic",
        "split": info["split"],
    }
    assert "Markov" in info["split"]
