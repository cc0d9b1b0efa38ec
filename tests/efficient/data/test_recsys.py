"""Sequential recommendation data (RecBole's protocol), full-ranking metrics and input checks."""

import collections
import dataclasses
import functools
import importlib.util
import itertools
import json
import math
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.data import (
    RecSysDataConfig,
    build_sequences,
    check_ks,
    check_sequences,
    gather_examples,
    kcore_filter,
    leave_one_out,
    load_ml100k,
    load_sequences,
    movielens,
    ranking_metrics,
    recsys,
    recsys_dataset_info,
    recsys_eval_dataset,
    recsys_train_dataset,
    synthetic_interactions,
    target_ranks,
)

needs_recbole = pytest.mark.skipif(
    importlib.util.find_spec("recbole") is None,
    reason="needs MovieLens-100K from the recbole wheel: pip install --no-deps recbole==1.2.1",
)

# 40 users of 4..12 interactions (so every user has a validation example): 40 eval examples in
# 4 batches of 12, the last with 8 padding rows.
SMALL = RecSysDataConfig(
    source="synthetic",
    max_len=6,
    min_interactions=0,
    batch_size=16,
    eval_batch_size=12,
    synthetic_users=40,
    synthetic_items=20,
    synthetic_length=(4, 12),
)

# A toy log in file order (user, item, time); hand-derived results in test_toy_*.
TOY = [
    ("b", "x", 5),
    ("a", "y", 3),
    ("a", "x", 1),
    ("a", "z", 3),  # same time as ("a", "y"): file order puts y first
    ("b", "w", 2),
    ("a", "w", 7),
    ("c", "y", 4),
    ("a", "v", 9),
    ("b", "z", 9),
    ("c", "z", 4),
    ("d", "x", 0),
]


def _table(rows) -> dict[str, np.ndarray]:
    user, item, time = zip(*rows, strict=True)
    return {"user": np.array(user), "item": np.array(item), "timestamp": np.array(time, float)}


def _take(it, n):
    return list(itertools.islice(it, n))


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ---------------------------------------------------------------------------- RecBole, literally


def _recbole_reference(table, k: int, max_len: int, time_order: str = "seconds"):
    """RecBole 1.2.1's filter -> remap -> normalise -> augment -> leave-one-out, as plain loops.

    Transcribes `_filter_by_inter_num`, `_remap` (pandas.factorize), `_normalize`,
    `SequentialDataset.data_augmentation` and `_split_index_by_leave_one_out`; RecBole itself
    sorts on the float32 normalised times (time_order="recbole_float32").
    Returns {split: sorted [(uid, history ids, history times, target id)]}.
    """
    user, item, time = (list(table[c]) for c in ("user", "item", "timestamp"))
    rows = list(range(len(user)))
    if k > 1:
        user_num, item_num = collections.Counter(user), collections.Counter(item)
        while True:
            ban_users = {u for u in user_num if user_num[u] < k}
            ban_items = {i for i in item_num if item_num[i] < k}
            if not ban_users and not ban_items:
                break
            dropped = [r for r in rows if user[r] in ban_users or item[r] in ban_items]
            user_num -= collections.Counter(user[r] for r in dropped)
            item_num -= collections.Counter(item[r] for r in dropped)
            rows = [r for r in rows if not (user[r] in ban_users or item[r] in ban_items)]
    uid = {u: n + 1 for n, u in enumerate(dict.fromkeys(user[r] for r in rows))}
    iid = {i: n + 1 for n, i in enumerate(dict.fromkeys(item[r] for r in rows))}
    lo, hi = min(time[r] for r in rows), max(time[r] for r in rows)
    norm = {r: np.float32((time[r] - lo) / (hi - lo)) for r in rows}
    key = time if time_order == "seconds" else norm
    rows.sort(key=lambda r: (uid[user[r]], key[r]))  # stable, as RecBole's two stable sorts
    samples = []
    last_uid, seq_start = None, 0
    for i, r in enumerate(rows):
        u = uid[user[r]]
        if last_uid != u:
            last_uid, seq_start = u, i
        else:
            if i - seq_start > max_len:
                seq_start += 1
            hist = rows[seq_start:i]
            samples.append(
                (u, tuple(iid[item[h]] for h in hist), tuple(norm[h] for h in hist), iid[item[r]])
            )
    groups = collections.defaultdict(list)
    for s in samples:  # already in time order within each user
        groups[s[0]].append(s)
    splits = {"train": [], "validation": [], "test": []}
    for group in groups.values():
        legal = min(2, len(group) - 1)
        pr = len(group) - legal
        splits["train"] += group[:pr]
        for i in range(legal):
            splits[("validation", "test")[2 - legal + i]].append(group[pr + i])
    return {k: sorted(v) for k, v in splits.items()}


def _ours(sequences, splits, max_len):
    out = {}
    for split, targets in splits.items():
        b = gather_examples(sequences, targets, max_len)
        out[split] = sorted(
            (
                int(b["users"][j]) + 1,
                tuple(b["items"][j, : b["lengths"][j]].tolist()),
                tuple(b["timestamps"][j, : b["lengths"][j]].tolist()),
                int(b["targets"][j]),
            )
            for j in range(len(targets))
        )
    return out


# ---------------------------------------------------------------------------- toy table


def test_toy_ids_order_and_times():
    s = build_sequences(_table(TOY))
    assert s.num_users == 4 and s.num_items == 5 and s.num_interactions == len(TOY)
    # Ids by first appearance in the file: users b, a, c, d; items x y z w v -> 1..5.
    assert list(s.user_tokens) == ["b", "a", "c", "d"]
    assert list(s.item_tokens) == ["", "x", "y", "z", "w", "v"]
    np.testing.assert_array_equal(s.offsets, [0, 3, 8, 10, 11])
    # b: w x z; a: x y z w v (y before z: equal times keep file order); c: y z; d: x.
    np.testing.assert_array_equal(s.items, [4, 1, 3, 1, 2, 3, 4, 5, 2, 3, 1])
    times = np.array([2, 5, 9, 1, 3, 3, 7, 9, 4, 4, 0]) / 9
    np.testing.assert_array_equal(s.timestamps, times.astype(np.float32))
    assert (s.time_min, s.time_max) == (0.0, 9.0)


def test_toy_leave_one_out():
    s = build_sequences(_table(TOY))
    splits = leave_one_out(s.offsets)
    # b (3 interactions, 2 examples): 1 train + test, no validation; a (5): 2 train +
    # validation + test; c (2, 1 example): train; d (1): nothing.
    np.testing.assert_array_equal(splits["train"], [1, 4, 5, 9])
    np.testing.assert_array_equal(splits["validation"], [6])
    np.testing.assert_array_equal(splits["test"], [2, 7])
    train = gather_examples(s, splits["train"], max_len=3)
    np.testing.assert_array_equal(train["items"], [[4, 0, 0], [1, 0, 0], [1, 2, 0], [2, 0, 0]])
    np.testing.assert_array_equal(train["lengths"], [1, 1, 2, 1])
    np.testing.assert_array_equal(train["targets"], [1, 2, 3, 3])
    np.testing.assert_array_equal(train["users"], [0, 1, 1, 2])
    np.testing.assert_array_equal(train["timestamps"][2], np.float32([1 / 9, 3 / 9, 0]))
    test = gather_examples(s, splits["test"], max_len=3)
    # a's test history is its last 3 items before v, the validation item w included.
    np.testing.assert_array_equal(test["items"], [[4, 1, 0], [2, 3, 4]])
    np.testing.assert_array_equal(test["targets"], [3, 5])
    valid = gather_examples(s, splits["validation"], max_len=2)
    np.testing.assert_array_equal(valid["items"], [[2, 3]])
    np.testing.assert_array_equal(valid["targets"], [4])


# A span of 1e8 s: float32 normalised times tie the rows 1 s apart (all 1.0), file order wins.
FLOAT32_TIES = [
    ("g", "y", 1e8 + 1),
    ("f", "q", 1e8),
    ("g", "x", 1e8),
    ("g", "v", 0),
    ("f", "w", 1e8 - 1),
]


@pytest.mark.parametrize("max_len", [1, 2, 3, 50])
@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("time_order", ["seconds", "recbole_float32"])
def test_toy_matches_recbole_loops(k, max_len, time_order):
    rows = [(u, i, t * 1e7) for u, i, t in TOY] + FLOAT32_TIES
    table = _table(rows + [("e", "v", 1), ("e", "w", 2), ("e", "x", 2)])
    keep = kcore_filter(table["user"], table["item"], k)
    s = build_sequences({c: v[keep] for c, v in table.items()}, time_order=time_order)
    reference = _recbole_reference(table, k, max_len, time_order)
    assert _ours(s, leave_one_out(s.offsets), max_len) == reference


def test_recbole_float32_order_ties_close_times():
    table = _table(FLOAT32_TIES)
    # Items y q x v w -> 1..5. By seconds g is v x y, f is w q; with the float32 keys the
    # rows 1e8 - 1, 1e8 and 1e8 + 1 all become 1.0 and keep file order: g v y x, f q w.
    for time_order, items in [("seconds", [4, 3, 1, 5, 2]), ("recbole_float32", [4, 1, 3, 2, 5])]:
        s = build_sequences(table, time_order=time_order)
        assert list(s.user_tokens) == ["g", "f"]
        np.testing.assert_array_equal(s.offsets, [0, 3, 5])
        np.testing.assert_array_equal(s.items, items)
        np.testing.assert_array_equal(s.timestamps, np.float32([0, 1, 1, 1, 1]))


def test_kcore_is_iterative():
    # k = 2: item q (once) goes, then user f (left with one) goes, then item r (only f's) goes.
    rows = [("e", "x", 0), ("e", "y", 1), ("g", "x", 2), ("g", "y", 3)]
    rows += [("f", "q", 0), ("f", "r", 1), ("h", "r", 2), ("h", "x", 3), ("h", "y", 4)]
    t = _table(rows)
    keep = kcore_filter(t["user"], t["item"], 2)
    assert [r for r, k in zip(rows, keep, strict=True) if not k] == rows[4:7]
    assert kcore_filter(t["user"], t["item"], 1).all()


def test_prefix_augmentation_covers_every_prefix():
    s, splits = load_sequences(SMALL)
    train = gather_examples(s, splits["train"], max_len=1000)
    for u in range(s.num_users):
        seq = s.items[s.offsets[u] : s.offsets[u + 1]]
        rows = np.flatnonzero(train["users"] == u)
        # Targets 2..n-2 (1-based) of the user, each with its whole history before it.
        assert len(rows) == len(seq) - 3
        for j, r in enumerate(rows, start=1):
            np.testing.assert_array_equal(train["items"][r, : train["lengths"][r]], seq[:j])
            assert train["targets"][r] == seq[j]
            assert not train["items"][r, j:].any()


def test_truncation_keeps_the_most_recent_items():
    s, splits = load_sequences(SMALL)
    full = gather_examples(s, splits["test"], max_len=1000)
    short = gather_examples(s, splits["test"], max_len=3)
    for r in range(len(splits["test"])):
        n = full["lengths"][r]
        np.testing.assert_array_equal(
            short["items"][r, : min(n, 3)], full["items"][r, max(0, n - 3) : n]
        )
        np.testing.assert_array_equal(
            short["timestamps"][r, : min(n, 3)], full["timestamps"][r, max(0, n - 3) : n]
        )


# ---------------------------------------------------------------------------- MovieLens-100K


@pytest.mark.data
@needs_recbole
def test_ml100k_file():
    t = load_ml100k()
    assert t["user"].shape == t["item"].shape == t["timestamp"].shape == (100_000,)
    assert len(np.unique(t["user"])) == 943 and len(np.unique(t["item"])) == 1682
    assert (t["timestamp"].min(), t["timestamp"].max()) == (874_724_710, 893_286_638)
    assert (t["user"][0], t["item"][0], t["timestamp"][0]) == ("196", "242", 881_250_949)
    assert not t["user"].flags.writeable
    assert movielens.ml100k_path().name == "ml-100k.inter"


@pytest.mark.data
@needs_recbole
@pytest.mark.parametrize(
    "k, users, items, interactions",
    [(0, 943, 1682, 100_000), (5, 943, 1349, 99_287), (10, 943, 1152, 97_953)],
)
def test_ml100k_statistics(k, users, items, interactions):
    info = recsys_dataset_info(RecSysDataConfig(min_interactions=k))
    assert (info["num_users"], info["num_items"], info["num_interactions"]) == (
        users,
        items,
        interactions,
    )
    # Leave-one-out: one validation and one test example per user, the rest train.
    assert info["validation_examples"] == info["test_examples"] == users
    assert info["train_examples"] == interactions - 3 * users
    assert info["min_length"] >= max(k, 5) - 1


@pytest.mark.data
@needs_recbole
@pytest.mark.parametrize("time_order", ["seconds", "recbole_float32"])
def test_ml100k_matches_recbole_loops(time_order):
    config = RecSysDataConfig(time_order=time_order)
    s, splits = load_sequences(config)
    ours = _ours(s, splits, config.max_len)
    assert ours == _recbole_reference(load_ml100k(), 5, config.max_len, time_order)


@pytest.mark.data
@needs_recbole
def test_ml100k_time_orders_differ_as_documented():
    # The figures quoted in recsys.py's docstring and the README.
    a, splits = load_sequences(RecSysDataConfig())
    b, _ = load_sequences(RecSysDataConfig(time_order="recbole_float32"))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(np.sort(a.timestamps), np.sort(b.timestamps))
    moved = np.flatnonzero(a.items != b.items)
    users = np.unique(np.searchsorted(a.offsets, moved, side="right") - 1)
    assert (len(moved), len(users)) == (389, 83)
    differ = {k: int((a.items[v] != b.items[v]).sum()) for k, v in splits.items()}
    assert differ == {"train": 380, "validation": 5, "test": 4}


@pytest.mark.data
@needs_recbole
def test_ml100k_batches_are_valid_sequences():
    config = RecSysDataConfig(batch_size=4096, eval_batch_size=1024)
    s, _ = load_sequences(config)
    batches = _take(iter(recsys_train_dataset(config)), 2)
    batches += list(recsys_eval_dataset(config, "validation"))
    batches += list(recsys_eval_dataset(config, "test"))
    for b in batches:
        check_sequences(
            b["items"],
            num_items=s.num_items,
            timestamps=b["timestamps"],
            lengths=b["lengths"],
            targets=b["targets"],
        )
        assert b["items"].shape[1] == 50 and b["lengths"].max() == 50


# ---------------------------------------------------------------------------- pipelines


def test_train_stream_is_deterministic_and_epochs_cover_the_examples():
    s, splits = load_sequences(SMALL)
    n = len(splits["train"])
    steps = n // SMALL.batch_size
    a = _take(iter(recsys_train_dataset(SMALL)), 2 * steps)
    _assert_batches_equal(a, _take(iter(recsys_train_dataset(SMALL)), 2 * steps))
    other = _take(iter(recsys_train_dataset(dataclasses.replace(SMALL, seed=1))), 1)
    assert not np.array_equal(a[0]["targets"], other[0]["targets"])
    for epoch in (a[:steps], a[steps:]):
        keys = {
            (int(b["users"][j]), int(b["lengths"][j]), int(b["targets"][j]))
            for b in epoch
            for j in range(SMALL.batch_size)
        }
        assert len(keys) == steps * SMALL.batch_size  # no example twice in an epoch
    for b in a:
        assert b["items"].dtype == np.int32 and b["timestamps"].dtype == np.float32
        assert b["items"].shape == (16, 6) and (b["mask"] == 1).all()
        check_sequences(
            b["items"], num_items=s.num_items, timestamps=b["timestamps"], lengths=b["lengths"]
        )


def test_train_stream_resumes_from_state():
    it = iter(recsys_train_dataset(SMALL))
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    rest = _take(it, 4)
    fresh = iter(recsys_train_dataset(SMALL))
    fresh.set_state(state)
    _assert_batches_equal(rest, _take(fresh, 4))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_eval_pass_has_one_example_per_user_and_padding(split):
    s, splits = load_sequences(SMALL)
    batches = list(recsys_eval_dataset(SMALL, split))
    assert len(batches) == 4
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(48) < 40)
    real = {k: np.concatenate([b[k] for b in batches])[:40] for k in batches[0]}
    expected = gather_examples(s, splits[split], SMALL.max_len)
    for k, v in expected.items():
        np.testing.assert_array_equal(real[k], v, err_msg=k)
    last = batches[-1]
    for k in ("items", "timestamps", "lengths", "targets", "users"):
        assert not last[k][4:].any(), k
    # The test target is each user's last item, the validation target the one before.
    pos = -1 if split == "test" else -2
    last_items = [s.items[s.offsets[u + 1] + pos] for u in range(s.num_users)]
    np.testing.assert_array_equal(real["targets"], last_items)


def test_process_shards_partition_the_global_batches():
    whole = _take(iter(recsys._train_dataset(SMALL, process_index=0, process_count=1)), 3)
    parts = [
        _take(iter(recsys._train_dataset(SMALL, process_index=p, process_count=4)), 3)
        for p in range(4)
    ]
    for step, batch in enumerate(whole):
        for k in batch:
            joined = np.concatenate([parts[p][step][k] for p in range(4)])
            np.testing.assert_array_equal(joined, batch[k], err_msg=k)
    ev = list(recsys._eval_dataset(SMALL, "test", process_index=0, process_count=1))
    halves = [
        list(recsys._eval_dataset(SMALL, "test", process_index=p, process_count=2)) for p in (0, 1)
    ]
    for b, x, y in zip(ev, *halves, strict=True):
        for k in b:
            np.testing.assert_array_equal(np.concatenate([x[k], y[k]]), b[k], err_msg=k)


def test_synthetic_is_deterministic_and_time_informative():
    a = synthetic_interactions(num_users=300, num_items=30, seed=3)
    b = synthetic_interactions(num_users=300, num_items=30, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = synthetic_interactions(num_users=300, num_items=30, seed=4)
    assert not np.array_equal(a["item"][:100], c["item"][:100])
    # The next item has less entropy given (current item, whether the last gap was long) than
    # given the current item alone: the time differences carry information.
    s = build_sequences(a)
    rows = np.concatenate(
        [np.arange(s.offsets[u] + 2, s.offsets[u + 1]) for u in range(s.num_users)]
    )
    gap = (s.timestamps[rows - 1] - s.timestamps[rows - 2]) * (s.time_max - s.time_min)
    nxt, cur, long = s.items[rows], s.items[rows - 1], gap > 3600

    def cond_entropy(context):
        joint = collections.Counter(zip(context, nxt, strict=True))
        ctx = collections.Counter(context)
        n = len(nxt)
        return -sum(c / n * math.log2(c / ctx[x]) for (x, _), c in joint.items())

    with_time = cond_entropy(list(zip(cur.tolist(), long.tolist(), strict=True)))
    assert with_time < cond_entropy(cur.tolist()) - 0.5


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_len": 0}, "max_len=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"min_interactions": -1}, "min_interactions=-1"),
        ({"seed": -1}, "seed=-1"),
        ({"synthetic_length": (1, 5)}, "synthetic_length"),
        ({"synthetic_items": 2}, "synthetic_items=2"),
        ({"worker_count": -1}, "worker_count=-1"),
        ({"time_order": "float32"}, "time_order='float32': expected one of 'seconds'"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecSysDataConfig(**kwargs)


def test_pipeline_errors():
    with pytest.raises(ValueError, match="batch_size=4096: larger than"):
        recsys_train_dataset(dataclasses.replace(SMALL, batch_size=4096))
    with pytest.raises(ValueError, match="batch_size=16.*process count"):
        recsys._train_dataset(SMALL, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="split='train'"):
        recsys._eval_dataset(SMALL, "train", process_index=0, process_count=1)
    with pytest.raises(ValueError, match="table: user"):
        build_sequences({"user": np.zeros(3), "item": np.zeros(2), "timestamp": np.zeros(3)})
    with pytest.raises(ValueError, match="no interactions"):
        load_sequences(dataclasses.replace(SMALL, min_interactions=100))
    with pytest.raises(ValueError, match="finite"):
        build_sequences({"user": np.zeros(2), "item": np.zeros(2), "timestamp": [0, np.nan]})
    with pytest.raises(ValueError, match="time_order='raw'"):
        build_sequences(_table(TOY), time_order="raw")


def test_missing_recbole_says_how_to_install(monkeypatch):
    monkeypatch.delenv(movielens.ENV_VAR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    # The command names the interpreter that runs (an installed copy has no .venv or Makefile).
    command = re.escape(f"{sys.executable} -m pip install --no-deps recbole==1.2.1")
    with pytest.raises(FileNotFoundError, match=command):
        movielens.ml100k_path()
    monkeypatch.setenv(movielens.ENV_VAR, "/nonexistent/ml-100k.inter")
    with pytest.raises(FileNotFoundError, match="EFFICIENT_ML100K_INTER"):
        load_ml100k()


def test_atomic_file_parsing(tmp_path, monkeypatch):
    good = tmp_path / "toy.inter"
    lines = ["item_id:token\tuser_id:token\trating:float\ttimestamp:float"]
    lines += [f"{i}\t{u}\t3\t{t}" for u, i, t in TOY]
    good.write_text("\n".join(lines) + "\n")
    t = movielens.read_atomic_inter(good)
    assert list(t["user"]) == [u for u, _, _ in TOY] and list(t["item"]) == [i for _, i, _ in TOY]
    np.testing.assert_array_equal(t["timestamp"], [time for _, _, time in TOY])
    monkeypatch.setenv(movielens.ENV_VAR, str(good))
    assert list(load_ml100k()["user"]) == [u for u, _, _ in TOY]
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(ValueError, match="timestamp:float"):
        movielens.read_atomic_inter(bad)
    bad.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")
    with pytest.raises(ValueError, match="not a number"):
        movielens.read_atomic_inter(bad)
    bad.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\n")
    with pytest.raises(ValueError, match="fields"):
        movielens.read_atomic_inter(bad)


def _good_batch():
    items = np.array([[3, 1, 2, 0], [4, 0, 0, 0], [0, 0, 0, 0]], np.int32)
    ts = np.array([[0.1, 0.1, 0.3, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    return {
        "items": items,
        "timestamps": ts,
        "lengths": np.array([3, 1, 0], np.int32),
        "targets": np.array([4, 1, 0], np.int32),
    }


def _with(key, fn):
    b = _good_batch()
    b[key] = fn(b[key])
    return b


def _set(index, value):
    def fn(x):
        x = x.copy()
        x[index] = value
        return x

    return fn


@pytest.mark.parametrize(
    "batch, match",
    [
        (_with("items", _set((0, 1), 5)), r"items: 5 at \[0, 1\] is outside 0..4"),
        (_with("items", _set((1, 0), -1)), r"items: -1 at \[1, 0\]"),
        (_with("items", _set((1, 2), 2)), "items: row 1 has id 2 at position 2 with length 1"),
        (_with("items", lambda x: x[:, 1:]), r"timestamps: shape \(3, 4\), expected \[3, 3\]"),
        (_with("items", lambda x: x[0]), "items: shape"),
        (_with("items", lambda x: x.astype(np.float32)), "items: dtype float32"),
        (_with("timestamps", _set((0, 2), 0.05)), "timestamps: row 0 goes back in time at"),
        (_with("timestamps", _set((1, 0), np.nan)), "timestamps: expected finite"),
        (_with("timestamps", lambda x: x.astype(np.int32)), "timestamps: dtype int32"),
        (_with("lengths", _set(0, 2)), "items: row 0 has id 2 at position 2 with length 2"),
        (_with("lengths", _set(1, 5)), r"lengths: 5 at \[1\] is outside 0..4"),
        (_with("lengths", lambda x: x[:2]), r"lengths: shape \(2,\), expected \[3\]"),
        (_with("targets", _set(0, 0)), "targets: 0 in row 0 is outside 1..num_items = 1..4"),
        (_with("targets", _set(1, 9)), "targets: 9 in row 1"),
        (_with("targets", lambda x: x.astype(np.float32)), "targets: dtype float32"),
    ],
)
def test_check_sequences_rejects(batch, match):
    items = batch.pop("items")
    with pytest.raises(ValueError, match=match):
        check_sequences(items, num_items=4, **batch)


def test_check_sequences_takes_lists_and_refuses_empty_sequences():
    b = _good_batch()
    check_sequences(b["items"].tolist(), num_items=4, lengths=b["lengths"].tolist())
    with pytest.raises(ValueError, match=r"lengths: 5 at \[1\] is outside 0..4"):
        check_sequences(b["items"].tolist(), num_items=4, lengths=[3, 5, 0])
    with pytest.raises(ValueError, match="at least one position"):
        check_sequences(np.zeros((2, 0), np.int32), num_items=4)


def test_every_pipeline_batch_is_checked(monkeypatch):
    """The batches the pipeline builds go through check_sequences: a bad id from the examples
    is a ValueError naming items, not NaN scores in the jitted model."""
    good = recsys.gather_examples

    def corrupted(*args, **kwargs):
        batch = good(*args, **kwargs)
        batch["items"][0, 0] = 10_000
        return batch

    monkeypatch.setattr(recsys, "gather_examples", corrupted)
    with pytest.raises(ValueError, match="items: 10000 at"):
        next(iter(recsys_eval_dataset(SMALL, "validation")))


def test_check_sequences_accepts_good_batches_also_under_jit():
    b = _good_batch()
    check_sequences(b["items"], num_items=4, **{k: v for k, v in b.items() if k != "items"})
    check_sequences(b["items"], num_items=4)  # lengths inferred from the padding
    check_sequences(jnp.asarray(b["items"]), num_items=4, timestamps=jnp.asarray(b["timestamps"]))

    @jax.jit
    def f(items, ts):
        check_sequences(items, num_items=4, timestamps=ts)  # shapes only: values are traced
        return items.sum()

    f(jnp.asarray(b["items"]) + 100, jnp.asarray(b["timestamps"]))
    with pytest.raises(ValueError, match="timestamps: shape"):
        f(jnp.asarray(b["items"]), jnp.asarray(b["timestamps"])[:, :2])


# ---------------------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    # Items 1..4 score 0.1, 0.5, 0.3, 0.9; the padding column's 100 is never ranked. Target 3
    # (0.3) is beaten by 0.5 and 0.9: rank 3. Target 4: rank 1. Target 1: rank 4.
    scores = jnp.array([[100.0, 0.1, 0.5, 0.3, 0.9]] * 3)
    targets = jnp.array([3, 4, 1])
    np.testing.assert_array_equal(target_ranks(scores, targets), [3, 1, 4])
    m = ranking_metrics(scores, targets, ks=(1, 3))
    np.testing.assert_array_equal(m["hit@1"], [0, 1, 0])
    np.testing.assert_array_equal(m["hit@3"], [1, 1, 0])
    np.testing.assert_allclose(m["ndcg@3"], [0.5, 1.0, 0.0], rtol=1e-6)  # 1 / log2(3 + 1)
    np.testing.assert_allclose(m["ndcg@1"], [0.0, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m["mrr@3"], [1 / 3, 1.0, 0.0], rtol=1e-6)
    assert set(m) == {f"{name}@{k}" for name in ("hit", "ndcg", "mrr") for k in (1, 3)}


def test_metrics_take_lists():
    ranks = target_ranks([[100.0, 0.1, 0.5, 0.3, 0.9]], [3])
    metrics = ranking_metrics([[100.0, 0.1, 0.5, 0.3, 0.9]], [3], ks=(3,))
    np.testing.assert_array_equal(ranks, [3])
    np.testing.assert_allclose(metrics["ndcg@3"], [0.5], rtol=1e-6)


def test_ties_and_degenerate_scores():
    scores = jnp.array([[0.0, 1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([2])), [1])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([2]), ties="pessimistic"), [3])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([4]), ties="pessimistic"), [4])
    flat = jnp.zeros((2, 51))
    targets = jnp.array([7, 50])
    assert ranking_metrics(flat, targets)["hit@10"].tolist() == [1.0, 1.0]
    assert ranking_metrics(flat, targets, ties="pessimistic")["hit@10"].tolist() == [0.0, 0.0]
    nan_target = jnp.array([[0.0, jnp.nan, 1.0, 2.0]])
    np.testing.assert_array_equal(target_ranks(nan_target, jnp.array([1])), [4])
    assert ranking_metrics(nan_target, jnp.array([1]), ks=(3,))["hit@3"].tolist() == [0.0]


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
def test_nan_scores_of_other_items_rank_above_the_target(ties):
    # As torch.topk (RecBole's ranking) orders them: NaN first. They never raise a metric.
    scores = jnp.array([[0.0, 0.1, jnp.nan, jnp.nan, 0.05]])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([1]), ties=ties), [3])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([4]), ties=ties), [4])


def test_out_of_range_targets_raise_or_miss_under_jit():
    scores = jnp.array([[0.0, 0.1, 0.2, 0.3, 0.9]] * 2)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match=f"targets: {bad} at \\[1\\] is outside 0..4"):
            target_ranks(scores, jnp.array([2, bad]))
    # Under jit the values are unknown: an out-of-range id is a miss (rank V), never a wrap.
    ranks = jax.jit(target_ranks)(scores, jnp.array([-1, 5]))
    np.testing.assert_array_equal(ranks, [5, 5])
    np.testing.assert_array_equal(target_ranks(scores, jnp.array([0, 4])), [5, 1])  # 0: padding


def _reference_ranks(scores, targets, ties):
    """Sort items 1..V-1 by descending score, the target first (optimistic) or last among
    equals, and read off its position."""
    ranks = []
    for row, t in zip(scores, targets, strict=True):
        last = ties == "pessimistic"
        order = sorted(range(1, len(row)), key=lambda i, row=row, t=t: (-row[i], (i == t) == last))
        ranks.append(order.index(t) + 1)
    return np.array(ranks)


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
def test_metrics_match_numpy_reference(ties):
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal((64, 61)), 1).astype(np.float32)  # many ties
    targets = rng.integers(1, 61, size=64)
    ks = (1, 5, 10, 20, 60)
    ref = _reference_ranks(scores, targets, ties)
    f = jax.jit(functools.partial(ranking_metrics, ks=ks, ties=ties))
    m = f(jnp.asarray(scores), jnp.asarray(targets, jnp.int32))
    np.testing.assert_array_equal(
        target_ranks(jnp.asarray(scores), jnp.asarray(targets, jnp.int32), ties=ties), ref
    )
    for k in ks:
        hit = ref <= k
        np.testing.assert_array_equal(m[f"hit@{k}"], hit.astype(np.float32))
        np.testing.assert_allclose(m[f"ndcg@{k}"], np.where(hit, 1 / np.log2(ref + 1), 0), 1e-6)
        np.testing.assert_allclose(m[f"mrr@{k}"], np.where(hit, 1 / ref, 0), rtol=1e-6)


def test_metric_errors():
    scores = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match="targets"):
        target_ranks(scores, jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="scores"):
        target_ranks(jnp.zeros(5), jnp.array([1]))
    with pytest.raises(ValueError, match="targets"):
        target_ranks(scores, jnp.array([1.0, 2.0]))
    for ks in [(0, 10), (2.5,), (True,), ()]:  # (2.5,): the annotation's check may come first
        with pytest.raises(ValueError, match="ks"):
            ranking_metrics(scores, jnp.array([1, 2]), ks=ks)
    with pytest.raises(ValueError, match="ks=.*positive integer"):
        check_ks((10, 2.5))
    assert check_ks((np.int64(3), 10)) == (3, 10) and type(check_ks([np.int64(3)])[0]) is int
    with pytest.raises(ValueError, match="ties"):
        target_ranks(scores, jnp.array([1, 2]), ties="random")
