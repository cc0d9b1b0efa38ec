"""The training loop: exact resume, signals, non-finite handling, sharding, outputs on disk."""

import dataclasses
import json
import os
import signal

import jax
import numpy as np
import pytest

from efficient.sharding import MeshConfig
from efficient.train import (
    NonFiniteLossError,
    OptimizerConfig,
    ResumeError,
    TrainConfig,
    read_metrics,
    train,
)
from efficient.train.metrics import write_text_atomic
from tests.efficient.train._toy import toy_eval_data, toy_task, toy_train_data


def _config(steps, **kw):
    base = dict(
        steps=steps, log_every=1, checkpoint_every=5, eval_every=0, progress=False,
        async_checkpointing=True,
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=2, weight_decay=0.01,
                                  grad_clip_norm=1.0),
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl")
            if r["split"] == "train"}  # fmt: skip


def _run(workdir, steps, resume=False, data=None, devices=None, **kw):
    return train(
        toy_task(), _config(steps, **kw), train_data=data or toy_train_data(),
        eval_data=toy_eval_data, workdir=workdir, resume=resume, devices=devices,
    )  # fmt: skip


def test_resume_is_exact(tmp_path, capsys):
    full = _run(tmp_path / "full", 12)
    # The same 12-step run, stopped after 7 steps (checkpoints at 5 and 7), then resumed.
    paused = _run(tmp_path / "split", 12, checkpoint_every=5, stop_after=7)
    assert paused.summary["status"] == "paused" and paused.summary["step"] == 7
    capsys.readouterr()
    resumed = _run(tmp_path / "split", 12, resume=True)
    assert "resumed from step 7" in capsys.readouterr().out  # the terminal says so
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=0, atol=0)
    for x, y in zip(
        jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    stats = lambda s: jax.tree.leaves(s.model_state)  # noqa: E731
    for x, y in zip(stats(full.state), stats(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_pause_between_log_steps_keeps_the_logged_averages(tmp_path):
    # log_every 3, a pause at step 7: the record at 9 still averages steps 7-9, and the final
    # train metrics are those of the uninterrupted run.
    full = _run(tmp_path / "full", 12, log_every=3).summary
    _run(tmp_path / "split", 12, log_every=3, stop_after=7)
    resumed = _run(tmp_path / "split", 12, log_every=3, resume=True).summary
    assert resumed["final_train"] == pytest.approx(full["final_train"], rel=1e-6)
    logged = {step: loss for step, loss in _losses(tmp_path / "split").items() if step != 7}
    assert logged == pytest.approx(_losses(tmp_path / "full"), rel=1e-6)


def test_wall_time_counts_every_session(tmp_path):
    paused = _run(tmp_path, 8, stop_after=5)
    first = paused.summary["wall_time_s"]
    resumed = _run(tmp_path, 8, resume=True).summary
    elapsed = [
        r["elapsed_s"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"
    ]
    assert len(elapsed) == 8 and elapsed == sorted(elapsed) and elapsed[4] <= first
    # The run's time: the first session up to its checkpoint (after its last log, before its
    # summary), plus the whole second session.
    second = resumed["session_wall_time_s"]
    assert elapsed[4] + second <= resumed["wall_time_s"] <= first + second
    assert resumed["wall_time_s"] >= elapsed[-1]


def test_resuming_a_finished_run_keeps_its_summary(tmp_path):
    done = _run(tmp_path, 6).summary
    again = _run(tmp_path, 6, resume=True).summary
    assert again["status"] == "completed" and again["step"] == 6
    assert again["final_train"] == done["final_train"] != {}
    # The run's time (up to its last checkpoint) plus the empty session's, not the latter alone.
    train_records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    last_logged, session = train_records[-1]["elapsed_s"], again["session_wall_time_s"]
    assert 0 < last_logged <= done["wall_time_s"]
    assert last_logged + session <= again["wall_time_s"] <= done["wall_time_s"] + session


def test_outputs_on_disk(tmp_path):
    result = _run(tmp_path, 6, log_every=2, eval_every=3)
    records = read_metrics(tmp_path / "metrics.jsonl")
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    eval_steps = [r["step"] for r in records if r["split"] == "eval"]
    assert train_steps == [2, 4, 6] and eval_steps == [3, 6]
    assert all({"loss", "accuracy", "learning_rate"} <= set(r) for r in records
               if r["split"] == "train")  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 6
    assert summary["final_eval"]["accuracy"] == pytest.approx(
        result.summary["final_eval"]["accuracy"]
    )
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 1000
    assert any(p.name.startswith("events") for p in (tmp_path / "tb").iterdir())
    assert (tmp_path / "checkpoints" / "6").is_dir()


def test_eval_is_weighted_by_mask(tmp_path):
    # Padding rows (mask 0) with garbage labels must not change the eval metrics.
    from efficient.sharding import batch_sharding, make_mesh
    from efficient.train import evaluate, make_eval_step

    result = _run(tmp_path, 2)
    mesh = make_mesh(MeshConfig())
    step = jax.jit(make_eval_step(toy_task()))
    clean = toy_eval_data()
    padded = [dict(b) for b in clean]
    last = padded[-1]
    padded[-1] = {
        "x": np.concatenate([last["x"], np.zeros((8, last["x"].shape[1]), np.float32)]),
        "label": np.concatenate([last["label"], np.full(8, 3, np.int32)]),
        "mask": np.concatenate([last["mask"], np.zeros(8, np.float32)]),
    }
    with jax.set_mesh(mesh):
        a = evaluate(step, result.state, clean, batch_sharding(mesh))
        b = evaluate(step, result.state, padded, batch_sharding(mesh))
    assert a == pytest.approx(b, rel=1e-6)


def test_nonfinite_stops_naming_the_step(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 4"):
        _run(tmp_path, 8, data=toy_train_data(poison_at=3), log_every=2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_nonfinite_skip_drops_the_update(tmp_path):
    result = _run(tmp_path, 6, data=toy_train_data(poison_at=2), on_nonfinite="skip")
    assert result.summary["skipped_updates"] == 1
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(result.state.params))
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert records[2].get("skipped_updates") == 1 and np.isfinite(records[-1]["loss"])
    # The skipped update left the optimizer's count behind: later steps use one count less.
    from efficient.train.optimizer import learning_rate_schedule

    schedule = learning_rate_schedule(_config(6).optimizer, 6)
    logged = {r["step"]: r["learning_rate"] for r in records}
    want = {1: 0, 2: 1, 4: 2, 5: 3, 6: 4}  # step -> the count its update used
    np.testing.assert_allclose(
        [logged[s] for s in want], [float(schedule(c)) for c in want.values()]
    )


class _SignalAt:
    """Wraps a Grain iterator; sends SIGTERM to this process when batch `at` is taken."""

    def __init__(self, dataset, at):
        self.it, self.at, self.count = iter(dataset), at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.it)

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def test_sigterm_saves_and_resume_matches(tmp_path):
    _run(tmp_path / "full", 10)
    # The example batch peeked at init is batch 1; batch 5 is taken by step 4.
    result = _run(
        tmp_path / "cut", 10, data=_SignalAt(toy_train_data(), at=5), checkpoint_every=100
    )
    assert result.summary["status"] == "interrupted"
    cut_step = result.summary["step"]
    assert 0 < cut_step < 10 and (tmp_path / "cut" / "checkpoints" / str(cut_step)).is_dir()
    _run(tmp_path / "cut", 10, resume=True)
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert sorted(b) == list(range(1, 11))
    np.testing.assert_array_equal([a[s] for s in sorted(a)], [b[s] for s in sorted(a)])


@pytest.mark.parametrize("mesh", [MeshConfig(data=8), MeshConfig(data=2, fsdp=4),
                                  MeshConfig(data=2, fsdp=2, tensor=2)])  # fmt: skip
def test_sharded_training_equals_single_device(tmp_path, mesh):
    assert jax.device_count() == 8
    # SGD, not Adam: Adam divides by sqrt(v), which turns the last-bit differences of a
    # reordered cross-device reduction into O(lr) differences for near-zero gradients.
    sgd = OptimizerConfig(name="sgd", learning_rate=0.1, weight_decay=1e-3)
    one = _run(tmp_path / "one", 3, data=toy_train_data(batch_size=16), optimizer=sgd,
               mesh=MeshConfig(data=1), devices=jax.devices()[:1])  # fmt: skip
    many = _run(tmp_path / "many", 3, data=toy_train_data(batch_size=16), optimizer=sgd,
                mesh=mesh)  # fmt: skip
    for x, y in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(many.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(list(_losses(tmp_path / "one").values()),
                               list(_losses(tmp_path / "many").values()), rtol=1e-5)  # fmt: skip
    kernel = many.state.params["Dense_0"]["kernel"]  # [16, 32], logical ('embed', 'mlp')
    shard = kernel.addressable_shards[0].data.shape
    assert shard == (16 // mesh.fsdp, 32 // mesh.tensor)


def test_a_sharded_resume_restores_onto_the_mesh(tmp_path):
    mesh = MeshConfig(data=2, fsdp=2, tensor=2)
    data = lambda: toy_train_data(batch_size=16)  # noqa: E731
    done = _run(tmp_path, 4, data=data(), mesh=mesh)
    # No step left: the state returned is the restored one, as Orbax placed it.
    again = _run(tmp_path, 4, data=data(), mesh=mesh, resume=True)
    for x, y in zip(jax.tree.leaves(done.state), jax.tree.leaves(again.state), strict=True):
        assert y.sharding.is_equivalent_to(x.sharding, x.ndim), (x.sharding, y.sharding)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    kernel = again.state.params["Dense_0"]["kernel"]
    assert kernel.addressable_shards[0].data.shape == (16 // 2, 32 // 2)


def test_init_params_hook_loads_pretrained_weights(tmp_path):
    """`Task.init_params` replaces part of the random init (with `replace_params`, keeping the
    logical axes for the mesh); training starts from those values."""
    import dataclasses

    import flax.linen as nn
    import jax.numpy as jnp

    from efficient.sharding import make_mesh
    from efficient.train import init_state, make_optimizer, replace_params

    base = toy_task()
    batch = next(iter(toy_train_data()))
    kernel = np.arange(16 * 32, dtype=np.float32).reshape(16, 32) / 100.0
    pretrained = {"kernel": kernel, "bias": np.full((32,), 0.5, np.float32)}
    task = dataclasses.replace(
        base, init_params=lambda p: replace_params(p, ("Dense_0",), pretrained)
    )
    tx = make_optimizer(OptimizerConfig(), total_steps=10)
    mesh = make_mesh(MeshConfig())
    state, shardings = init_state(task, tx, batch, seed=0, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(state.params["Dense_0"]["kernel"]), kernel)
    np.testing.assert_array_equal(np.asarray(state.params["Dense_0"]["bias"]), 0.5)
    # The logical axes survive the replacement: ("embed", "mlp") -> ("fsdp", "tensor").
    assert shardings.params["Dense_0"]["kernel"].spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor"
    )
    # The rest keeps its random init, identical to the hook-free task's.
    plain, _ = init_state(base, tx, batch, seed=0, mesh=mesh)
    np.testing.assert_array_equal(
        np.asarray(state.params["Dense_1"]["kernel"]), np.asarray(plain.params["Dense_1"]["kernel"])
    )
    # A mismatched subtree is refused.
    with pytest.raises(ValueError, match="shape"):
        replace_params(nn.unbox(plain.params), ("Dense_0",), {**pretrained, "bias": jnp.zeros(3)})


@pytest.mark.parametrize(
    ("mesh_config", "replicas"),
    [(MeshConfig(data=2, fsdp=2, tensor=2), None), (MeshConfig(replica=2, fsdp=2, tensor=2), 2)],
    ids=["fsdp-tensor", "replicas"],
)
def test_init_state_builds_the_state_with_the_shardings_it_returns(mesh_config, replicas):
    """Every leaf is laid out as the returned sharding says (the train step is compiled for
    those), the parameters split by their logical axes: built in one trace since 2026-11-28."""
    from efficient.sharding import make_mesh
    from efficient.train import init_state, make_optimizer

    mesh = make_mesh(mesh_config)
    batch = next(iter(toy_train_data()))
    tx = make_optimizer(OptimizerConfig(), total_steps=10)
    state, shardings = init_state(toy_task(), tx, batch, seed=0, mesh=mesh, replicas=replicas)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(jax.tree.leaves(shardings))
    for leaf, sharding in zip(leaves, jax.tree.leaves(shardings), strict=True):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
    kernel = shardings.params["Dense_0"]["kernel"].spec
    assert kernel == jax.P(*(("replica",) if replicas else ()), "fsdp", "tensor")


def _run_config(**train_fields):
    """A `to_json`-like tree as the experiments pass it."""
    train_json = {"__type__": "TrainConfig", "steps": 6, "progress": False, "stop_after": None}
    return {"__type__": "Run", "model": {"width": 4}, "train": {**train_json, **train_fields}}


def test_resume_refuses_another_config(tmp_path):
    def run(run_config, **kw):
        return train(
            toy_task(), _config(6, **kw), train_data=toy_train_data(), workdir=tmp_path,
            run_config=run_config, resume=True,
        )  # fmt: skip

    assert run(_run_config(stop_after=3), stop_after=3).summary["status"] == "paused"
    changed = _run_config()
    changed["model"]["width"] = 8
    changed["train"]["steps"] = 7
    with pytest.raises(ResumeError, match=r"model\.width: 4 -> 8; train\.steps: 6 -> 7"):
        run(changed)
    assert json.loads((tmp_path / "config.json").read_text()) == _run_config(stop_after=3)
    # The session fields (progress, stop_after) may differ between the sessions of one run, and
    # a field the saved config lacks (added to the code since) takes its current value.
    newer = _run_config()
    newer["model"]["added_since"] = "default"
    assert run(newer).summary["status"] == "completed"


def test_damaged_checkpoint_names_the_step(tmp_path):
    _run(tmp_path, 6)  # checkpoints 5 and 6
    files = sorted(p for p in (tmp_path / "checkpoints" / "6").rglob("*") if p.is_file())
    for path in files:
        if path.stat().st_size > 64 and "ocdbt" in str(path):
            path.write_bytes(path.read_bytes()[:16])  # a truncated array file
    with pytest.raises(ResumeError, match=r"checkpoints/6: the checkpoint does not restore"):
        _run(tmp_path, 8, resume=True)
    # What the message advises: without step 6 the run resumes from 5.
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "6")
    assert _run(tmp_path, 8, resume=True).summary["step"] == 8


def test_write_text_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not 0600
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_the_final_step_is_always_evaluated(tmp_path):
    result = _run(tmp_path, 7, eval_every=3, log_every=7, checkpoint_every=100)
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 7]
    assert result.summary["final_eval"]["loss"] == pytest.approx(evals[-1]["loss"])


def test_eval_averages_over_real_rows_not_batches():
    # 256 rows in batches of 96, 96 and 64 real ones (the last padded to 96 with mask 0): the
    # eval metrics are the means over the 256 rows, which a mean of the batch means is not.
    import optax

    from efficient.sharding import batch_sharding, make_mesh
    from efficient.train import evaluate, init_state, make_eval_step, make_optimizer

    task, mesh = toy_task(), make_mesh(MeshConfig())
    (rows,) = toy_eval_data(256)
    x, y = rows["x"], rows["label"]
    tx = make_optimizer(OptimizerConfig(), total_steps=10)
    state, _ = init_state(task, tx, {"x": x[:8], "label": y[:8]}, seed=0, mesh=mesh)
    pad = lambda a: np.concatenate([a, np.zeros((32, *a.shape[1:]), a.dtype)])  # noqa: E731
    batches = [
        {"x": x[:96], "label": y[:96], "mask": np.ones(96, np.float32)},
        {"x": x[96:192], "label": y[96:192], "mask": np.ones(96, np.float32)},
        {"x": pad(x[192:]), "label": pad(y[192:]), "mask": pad(np.ones(64, np.float32))},
    ]
    with jax.set_mesh(mesh):
        got = evaluate(jax.jit(make_eval_step(task)), state, batches, batch_sharding(mesh))
    logits = np.asarray(task.model.apply(state.variables(), x, train=False), np.float64)
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    want = {"loss": ce.mean(), "accuracy": (logits.argmax(-1) == y).mean()}
    assert got == pytest.approx(want, rel=1e-5)


def test_logged_learning_rate_is_the_one_each_update_used(tmp_path):
    # The scalar task of test_early_stopping: plain GD on (w - 10)^2 from w = 0, so the loss
    # logged at step s is (w_{s-1} - 10)^2 and w_s = w_{s-1} + lr_s * 2 (10 - w_{s-1}): the
    # learning rate each update applied, read back from the weights.
    from efficient.train import Task
    from efficient.train.optimizer import learning_rate_schedule
    from tests.efficient.train.test_early_stopping import _loss_fn, _Scalar, _train_data

    optimizer = OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.0, warmup_steps=2,
                                schedule="linear", end_lr_factor=0.2)  # fmt: skip
    config = TrainConfig(steps=5, log_every=1, checkpoint_every=100, progress=False,
                         optimizer=optimizer)  # fmt: skip
    task = Task(model=_Scalar(), loss_fn=_loss_fn, inputs=lambda b: (b["x"],))
    result = train(task, config, train_data=_train_data(), workdir=tmp_path)
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    w = [10.0 - np.sqrt(r["loss"]) for r in records] + [float(result.state.params["w"][0])]
    used = [(w[s] - w[s - 1]) / (2 * (10.0 - w[s - 1])) for s in range(1, 6)]
    logged = [r["learning_rate"] for r in records]
    np.testing.assert_allclose(logged, used, rtol=1e-4, atol=1e-7)
    # Step s is the optimizer's count s - 1: 0 at step 1, the peak once the warm-up is over.
    schedule = learning_rate_schedule(optimizer, 5)
    np.testing.assert_allclose(logged, [float(schedule(s - 1)) for s in range(1, 6)], rtol=1e-6)
    # By hand: warm-up 0.05 * (s - 1) / 2, then linear from 0.05 to 0.01 over 5 - 2 counts.
    by_hand = [0.0, 0.025, 0.05, 0.05 - 0.04 / 3, 0.05 - 0.08 / 3]
    np.testing.assert_allclose(logged, by_hand, rtol=1e-6, atol=1e-9)


def test_only_the_last_checkpoints_are_kept(tmp_path):
    _run(tmp_path, 5, checkpoint_every=1, keep_checkpoints=2)
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert steps == ["4", "5"]


def test_the_summary_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    from efficient.bench import harness

    real, commits = harness.environment, iter(["started", "moved", "moved"])
    monkeypatch.setattr(
        harness, "environment", lambda: dataclasses.replace(real(), git_commit=next(commits))
    )
    summary = _run(tmp_path, 2).summary
    assert summary["git_commit"] == "started"  # not the checkout's commit at the end
