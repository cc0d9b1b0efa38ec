"""Early stopping on the task's best metric, the best parameters kept, test data evaluated with
them, and all of it rebuilt on resume.

The task is a scalar w fitted to 10 by plain gradient descent from 0, so w_t = 10 (1 - 0.9^t)
(lr 0.05 on (w - 10)^2); its eval "score" -(w - 5)^2 peaks between steps 6 (w = 4.69) and
7 (w = 5.22): step 7 is the best, and with patience 3 the run stops at step 10.
"""

import shutil

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.train import OptimizerConfig, Task, TrainConfig, read_metrics, train

BEST_STEP, PATIENCE = 7, 3


class _Scalar(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        del train
        w = self.param("w", nn.initializers.zeros, (1,), jnp.float32)
        return jnp.broadcast_to(w, x.shape)  # [B, 1]


def _loss_fn(outputs, batch):
    del batch
    w = outputs[0, 0]
    loss = (w - 10.0) ** 2
    return loss, {"loss": loss, "score": -((w - 5.0) ** 2)}


def _task(best_metric=("score", "max")) -> Task:
    return Task(model=_Scalar(), loss_fn=_loss_fn, inputs=lambda b: (b["x"],),
                best_metric=best_metric)  # fmt: skip


def _train_data():
    ds = grain.MapDataset.range(64).repeat(None)
    ds = ds.map(lambda i: {"x": np.zeros(1, np.float32), "mask": np.float32(1)}).batch(8)
    return ds.to_iter_dataset()


def _eval_data():
    return [{"x": np.zeros((8, 1), np.float32), "mask": np.ones(8, np.float32)}]


def _w(step: int) -> float:
    return 10.0 * (1.0 - 0.9**step)


def _run(workdir, *, steps=50, resume=False, task=None, **kw):
    config = dict(
        steps=steps, log_every=1, eval_every=1, checkpoint_every=4, progress=False,
        early_stopping_patience=PATIENCE, keep_best=True,
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.0,
                                  schedule="constant"),
    )  # fmt: skip
    config.update(kw)
    return train(
        task or _task(), TrainConfig(**config), train_data=_train_data(), eval_data=_eval_data,
        test_data=_eval_data, workdir=workdir, resume=resume,
    )  # fmt: skip


def test_stops_after_patience_evaluations_and_tests_the_best_parameters(tmp_path):
    result = _run(tmp_path)
    summary = result.summary
    assert summary["status"] == "completed" and summary["early_stopped"]
    assert summary["step"] == BEST_STEP + PATIENCE
    assert summary["best_step"] == summary["test_step"] == BEST_STEP
    assert f"after step {BEST_STEP}" in summary["stop_reason"]
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == list(range(1, BEST_STEP + PATIENCE + 1))
    best_score = -((_w(BEST_STEP) - 5.0) ** 2)
    assert max(r["score"] for r in evals) == pytest.approx(best_score, rel=1e-5)
    assert summary["best_eval"]["score"] == pytest.approx(best_score, rel=1e-5)
    # The kept parameters are those of the best step, not the final ones; the test metrics too.
    np.testing.assert_allclose(result.best_variables["params"]["w"], [_w(BEST_STEP)], rtol=1e-5)
    np.testing.assert_allclose(result.state.params["w"], [_w(BEST_STEP + PATIENCE)], rtol=1e-5)
    assert summary["test"]["score"] == pytest.approx(best_score, rel=1e-5)
    assert max(int(p.name) for p in (tmp_path / "best").iterdir()) == BEST_STEP


def test_without_keep_best_the_final_parameters_are_tested(tmp_path):
    summary = _run(tmp_path, keep_best=False, early_stopping_patience=None, steps=9).summary
    assert not summary["early_stopped"] and summary["stop_reason"] == "steps"
    assert summary["step"] == summary["test_step"] == 9 and summary["best_step"] == BEST_STEP
    assert summary["test"]["score"] == pytest.approx(-((_w(9) - 5.0) ** 2), rel=1e-5)
    assert not (tmp_path / "best").exists()


def _drop(workdir, source):
    """Leave the resume one source of the run's state: the checkpoint's run record (the log is
    deleted) or the log (the run records are deleted: a checkpoint from before them)."""
    if source == "checkpoint":
        (workdir / "metrics.jsonl").unlink()
    else:
        records = list((workdir / "checkpoints").glob("*/run"))
        assert records
        for record in records:
            shutil.rmtree(record)


@pytest.mark.parametrize("source", ["checkpoint", "log"])
@pytest.mark.parametrize("pause", [5, BEST_STEP + 1])  # before and after the best step
def test_resume_rebuilds_the_best_and_the_patience_count(tmp_path, pause, source):
    full = _run(tmp_path / "full").summary
    paused = _run(tmp_path / "split", stop_after=pause).summary
    assert paused["status"] == "paused" and paused["test"] is None
    _drop(tmp_path / "split", source)
    resumed = _run(tmp_path / "split", resume=True)
    assert resumed.summary["step"] == full["step"] == BEST_STEP + PATIENCE
    assert resumed.summary["best_eval"] == full["best_eval"]
    assert resumed.summary["test"] == full["test"]
    np.testing.assert_allclose(resumed.best_variables["params"]["w"], [_w(BEST_STEP)], rtol=1e-5)
    # Resuming a run that stopped early trains no further and reports the same.
    _drop(tmp_path / "split", source)
    again = _run(tmp_path / "split", resume=True).summary
    assert again["step"] == full["step"] and again["early_stopped"]
    assert again["test"] == full["test"] and again["final_eval"] == full["final_eval"]


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="eval_every > 0"):
        TrainConfig(early_stopping_patience=3)
    with pytest.raises(ValueError, match="early_stopping_patience=0"):
        TrainConfig(early_stopping_patience=0, eval_every=1)
    with pytest.raises(ValueError, match="'ndcg@10'"):
        _run(tmp_path, task=_task(best_metric=("ndcg@10", "max")))
    # Without early stopping a misspelled metric used to leave keep_best with no best, silently.
    with pytest.raises(ValueError, match=r"best_metric=\('scroe', 'max'\).*loss, score"):
        _run(tmp_path / "keep_best", task=_task(best_metric=("scroe", "max")),
             early_stopping_patience=None)  # fmt: skip
    for bad in [("score",), ("score", "maximum"), "score", (1, "max")]:
        with pytest.raises(ValueError, match="best_metric="):
            _task(best_metric=bad)
    with pytest.raises(ValueError, match="model: function"):
        Task(model=_loss_fn, loss_fn=_loss_fn)


def _saturating_loss_fn(outputs, batch):
    # "hit" is 1 from step 4 on (w_4 = 3.44 > 3) and ties from then; the loss keeps falling.
    loss, _ = _loss_fn(outputs, batch)
    return loss, {"loss": loss, "hit": (outputs[0, 0] > 3.0).astype(jnp.float32)}


def test_a_tie_on_the_best_metric_goes_to_the_lower_loss(tmp_path):
    task = Task(model=_Scalar(), loss_fn=_saturating_loss_fn, inputs=lambda b: (b["x"],),
                best_metric=("hit", "max"))  # fmt: skip
    result = _run(tmp_path, task=task, steps=9, early_stopping_patience=None)
    assert result.summary["best_step"] == 9  # hit = 1 from step 4; step 9 has the lowest loss
    np.testing.assert_allclose(result.best_variables["params"]["w"], [_w(9)], rtol=1e-5)
    # With patience, the falling loss keeps resetting the count: no early stop.
    result = _run(tmp_path / "patient", task=task, steps=9, early_stopping_patience=2)
    assert not result.summary["early_stopped"] and result.summary["best_step"] == 9


def test_a_finite_evaluation_replaces_a_nan_best():
    from efficient.train.loop import _BestTracker

    tracker = _BestTracker(("score", "max"), patience=None)
    assert tracker.update({"score": float("nan"), "loss": 1.0}, step=1)
    assert tracker.update({"score": -3.0, "loss": 2.0}, step=2)
    assert not tracker.update({"score": float("nan"), "loss": 0.5}, step=3)
    assert not tracker.update({"score": -3.0, "loss": float("nan")}, step=4)  # tie, loss unknown
    assert tracker.best_step == 2


def test_an_improvement_restarts_the_patience_count():
    from efficient.train.loop import _BestTracker

    tracker = _BestTracker(("score", "max"), patience=2)
    assert tracker.update({"score": 1.0}, step=1)
    assert not tracker.update({"score": 0.5}, step=2)  # one evaluation without gain
    assert tracker.update({"score": 2.0}, step=3)  # a gain: the count starts again
    assert not tracker.update({"score": 1.0}, step=4)
    assert not tracker.exhausted  # one since the best, not two
    assert not tracker.update({"score": 1.0}, step=5)
    assert tracker.exhausted and tracker.best_step == 3


def test_a_tie_with_an_equal_loss_is_no_improvement():
    from efficient.train.loop import _BestTracker

    tracker = _BestTracker(("score", "max"), patience=1)
    assert tracker.update({"score": 1.0, "loss": 0.5}, step=1)
    assert not tracker.update({"score": 1.0, "loss": 0.5}, step=2)  # strictly lower loss only
    assert tracker.exhausted and tracker.best_step == 1


def test_without_a_best_metric_the_lowest_loss_is_best():
    from efficient.train.loop import _BestTracker

    tracker = _BestTracker(None, patience=None)
    assert tracker.update({"loss": 2.0}, step=1)
    assert tracker.update({"loss": 1.0}, step=2)
    assert not tracker.update({"loss": 1.5}, step=3)
    assert not tracker.update({"loss": 1.0}, step=4)  # a tie on the loss itself: no gain
    assert tracker.best_step == 2 and tracker.best == {"loss": 1.0, "step": 2}


def test_an_early_stop_is_checkpointed_and_its_resume_trains_no_further(tmp_path, capsys):
    stop = BEST_STEP + PATIENCE  # 10: not a multiple of checkpoint_every (4)
    _run(tmp_path)
    assert (tmp_path / "checkpoints" / str(stop)).is_dir()
    capsys.readouterr()
    again = _run(tmp_path, resume=True).summary
    # From the stopping step itself (not from step 8, retraining 9 and 10 to stop again).
    assert f"resumed from step {stop}" in capsys.readouterr().out
    assert again["step"] == stop and again["early_stopped"]
    train_steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")
                   if r["split"] == "train"]  # fmt: skip
    assert train_steps == list(range(1, stop + 1))


def test_an_old_checkpoint_without_its_log_says_the_best_is_lost(tmp_path, caplog):
    _run(tmp_path, stop_after=5)
    _drop(tmp_path, "log")  # a checkpoint from before run records ...
    (tmp_path / "metrics.jsonl").unlink()  # ... and its log gone: nothing to rebuild from
    with caplog.at_level("WARNING"):
        _run(tmp_path, resume=True, steps=6)
    assert "start afresh" in caplog.text
