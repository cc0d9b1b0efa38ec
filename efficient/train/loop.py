"""THE training loop: any Linen model + loss + Grain pipeline, sharded over a mesh, resumable."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from efficient.sharding import BATCH_AXES, batch_sharding, logical_to_sharding, make_mesh
from efficient.sharding.collectives import collectives, sync_bytes
from efficient.train import replicas as replicas_lib
from efficient.train.checkpoint import Checkpointer, abstract_like
from efficient.train.config import TrainConfig
from efficient.train.metrics import MetricsWriter, plot_metrics, read_metrics, write_text_atomic
from efficient.train.optimizer import learning_rate_schedule, make_optimizer
from efficient.train.progress import progress_bar
from efficient.train.state import TrainState
from efficient.train.steps import make_eval_step, make_train_step
from efficient.train.task import Task

log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """A run directory cannot be resumed as asked: its config.json describes another run, or its
    latest checkpoint does not restore."""


# TrainConfig fields that say how a session runs, not what the run is: they may differ between
# the sessions of one run.
_SESSION_FIELDS = frozenset({"progress", "stop_after"})


def config_differences(saved: Any, ours: Any, path: str = "") -> list[str]:
    """Dotted paths where two `to_json` config trees differ, as "path: saved -> ours".

    TrainConfig's session fields (progress, stop_after) are not compared, nor fields that the
    saved tree lacks: fields added to a config since the run started, which resume with their
    current values."""
    if isinstance(saved, dict) and isinstance(ours, dict):
        skip = _SESSION_FIELDS if ours.get("__type__") == "TrainConfig" else frozenset()
        keys = saved.keys() - skip
        return [
            diff
            for key in sorted(keys)
            for diff in config_differences(
                saved.get(key), ours.get(key), f"{path}.{key}" if path else key
            )
        ]
    return [] if saved == ours else [f"{path or '<config>'}: {saved!r} -> {ours!r}"]


class NonFiniteLossError(RuntimeError):
    """Raised when `on_nonfinite='stop'` and a step produced a non-finite loss or gradient."""

    def __init__(self, step: int):
        super().__init__(
            f"non-finite loss or gradients at step {step}; the update was dropped and the run "
            "stopped (set train.on_nonfinite=skip to drop such updates and continue)."
        )
        self.step = step


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      state: the state after the last step.
      summary: the run's summary (also in `workdir/summary.json`).
      workdir: the run directory.
      best_variables: `{"params": ..., **model_state}` of the best evaluation when
        `TrainConfig.keep_best` is set and an evaluation happened; else None. (Stacked per
        replica, like `state`, when `TrainConfig.outer` is set.)
      replicas: R when the state is stacked per replica (`TrainConfig.outer`), else None.
    """

    state: TrainState
    summary: dict[str, Any]
    workdir: pathlib.Path
    best_variables: dict[str, Any] | None = None
    replicas: int | None = None

    @property
    def params(self) -> Any:
        """The model's parameters: the state's, or their replica mean (what evaluation used)."""
        if self.replicas is None:
            return self.state.params
        return replicas_lib.replica_mean(self.state).params


class _BestTracker:
    """The best evaluation so far and the evaluations since it (for early stopping).

    An evaluation improves when the task's `best_metric` is strictly better than the best so far
    (the first one always does), or equal to it with a strictly lower eval loss (accuracy on a
    small eval set ties often; the lower loss breaks the tie). `exhausted` once `patience`
    evaluations in a row did not. (Keras' convention, which counts no tie; RecBole's
    `early_stopping` counts every tie as an improvement and stops one evaluation later, at the
    patience + 1-th.)
    """

    def __init__(self, metric: tuple[str, str] | None, patience: int | None):
        self.metric = metric
        self.patience = patience
        self.best: dict[str, Any] | None = None  # the best eval's metrics, plus "step"
        self.since_best = 0

    def _key(self, metrics: dict) -> tuple[str, int]:
        if self.metric is not None:
            return self.metric[0], 1 if self.metric[1] == "max" else -1
        return ("accuracy", 1) if "accuracy" in metrics else ("loss", -1)

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """Record an evaluation; True when it is the new best."""
        key, sign = self._key(metrics)
        if key not in metrics:
            if self.metric is not None:  # named by the task: a misspelling, not an absence
                raise ValueError(
                    f"Task.best_metric={self.metric!r}: the eval metrics are {', '.join(metrics)}."
                )
            if self.patience is not None:
                raise ValueError(
                    f"early stopping watches the eval metric {key!r}, which the task does not "
                    f"report (it reports {', '.join(metrics)}); set Task.best_metric."
                )
            return False
        if self.best is None or self._better(metrics, key, sign):
            self.best, self.since_best = dict(metrics, step=step), 0
            return True
        self.since_best += 1
        return False

    def _better(self, metrics: dict[str, float], key: str, sign: int) -> bool:
        value, best = metrics[key], self.best[key]
        if math.isnan(best) or math.isnan(value):  # a finite value beats a NaN one
            return math.isnan(best) and not math.isnan(value)
        if value != best:
            return sign * value > sign * best
        loss, best_loss = metrics.get("loss", math.nan), self.best.get("loss", math.nan)
        return key != "loss" and loss < best_loss  # False when either is NaN or missing

    def to_json(self) -> dict[str, Any]:
        """What `load` takes back (for the checkpoint's run record)."""
        return {"best": self.best, "since_best": self.since_best}

    def load(self, saved: dict[str, Any]) -> None:
        self.best, self.since_best = saved["best"], int(saved["since_best"])

    @property
    def best_step(self) -> int | None:
        return None if self.best is None else int(self.best["step"])

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def reason(self) -> str:
        key = self.metric[0] if self.metric is not None else "the best metric"
        return (
            f"early stopping: {key} did not improve in {self.patience} evaluations after step "
            f"{self.best_step}"
        )


# What a train record holds beside the task's metrics.
_RATE_FIELDS = frozenset(
    {"steps_per_s", "examples_per_s", "learning_rate", "elapsed_s", "skipped_updates"}
)


def _record_metrics(record: dict) -> dict[str, float]:
    # metrics.jsonl keeps non-finite values as strings ("nan"); float() reads them back.
    return {k: float(v) for k, v in record.items() if k not in ("step", "split") and v is not None}


def init_state(
    task: Task,
    tx: optax.GradientTransformation,
    example_batch,
    seed: int,
    mesh,
    replicas: int | None = None,
) -> tuple[TrainState, Any]:
    """Initialise a sharded TrainState directly on the mesh; returns (state, its shardings).

    With `replicas` = R, R copies stacked on a leading axis sharded over the mesh's `replica`
    axis (`efficient.train.replicas.stack_replicas`: equal parameters, per-replica dropout keys).
    """

    def init_fn(rng_data):
        rng = jax.random.wrap_key_data(rng_data)
        params_key, dropout_key = jax.random.split(rng)
        example = jax.tree.map(lambda x: jnp.asarray(x[:1]), example_batch)
        inputs = task.inputs(example)
        variables = task.model.init(
            {"params": params_key, "dropout": dropout_key}, *inputs, train=False
        )
        params = variables["params"]
        if task.init_params is not None:
            params = task.init_params(params)
            variables = {**variables, "params": params}
        model_state = {k: v for k, v in variables.items() if k != "params"}
        outputs = task.model.apply(nn.unbox(variables), *inputs, train=False)
        _, metrics = task.loss_fn(outputs, example)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=_opt_init(tx, params),
            rng=rng_data,
            metric_sums={k: jnp.zeros((), jnp.float32) for k in metrics},
            metric_count=jnp.zeros((), jnp.float32),
            nonfinite_count=jnp.zeros((), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    shardings = {}

    def make(rng_data):
        # Traced once: the shardings come from the boxed state's logical axes in the same trace
        # and pin the outputs (a separate `jax.eval_shape` for them traced the model again).
        boxed = init_fn(rng_data)
        state = nn.unbox(boxed)
        shardings["state"] = logical_to_sharding(boxed, mesh)
        if replicas is not None:
            state = replicas_lib.stack_replicas(state, replicas)
            shardings["state"] = replicas_lib.stacked_shardings(shardings["state"], mesh)
        return jax.lax.with_sharding_constraint(state, shardings["state"])

    rng_data = jax.random.key_data(jax.random.key(seed))
    # The state is built once, so on CPU its program is compiled without XLA's backend (LLVM)
    # optimisation: for the initialisers' threefry bits over every parameter that took longer
    # than anything else in a short run (LowFormer smoke: 18.5 s to compile, 3.4 s without; the
    # build then runs in 0.04 s instead of 0.01). Floats may differ from an optimised build's
    # in the last bit, as they do between backends.
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    with jax.set_mesh(mesh):
        state = jax.jit(make, compiler_options=options)(rng_data)
    return state, shardings["state"]


def _opt_init(tx, params):
    with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
        return tx.init(params)


def _device_batch(batch, sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def _check_batch(batch, mesh) -> None:
    shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
    local = jax.tree.leaves(batch)[0].shape[0]
    global_size = local * jax.process_count()
    if global_size % shards:
        raise ValueError(
            f"global batch size {global_size} is not divisible by the {shards} data-parallel "
            f"shards of the mesh {dict(mesh.shape)}; choose a batch size that is a multiple of "
            f"{shards}."
        )


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next step."""

    def __init__(self):
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.signal is not None:  # second signal: give up on a graceful stop
                signal.signal(signum, previous[signum])
                raise KeyboardInterrupt
            self.signal = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _provenance() -> dict[str, Any]:
    """Device, versions, commit and time of this session's start: the code that ran, even if the
    checkout moves on during a long run."""
    from efficient.bench.harness import environment

    return dataclasses.asdict(environment())


def evaluate(eval_step, state, eval_data: Iterable, sharding) -> dict[str, float]:
    """Weighted mean of each metric over the eval set (padding has weight 0)."""
    sums: dict[str, float] = {}
    total = 0.0
    for batch in eval_data:
        metrics, weight = jax.device_get(eval_step(state, _device_batch(batch, sharding)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * float(weight)
        total += float(weight)
    if total == 0:
        raise ValueError("the eval data yielded no examples.")
    return {k: v / total for k, v in sums.items()}


def train(
    task: Task,
    config: TrainConfig,
    *,
    train_data: Iterable,
    eval_data: Callable[[], Iterable] | None = None,
    test_data: Callable[[], Iterable] | None = None,
    workdir: str | pathlib.Path,
    resume: bool = False,
    run_config: dict | None = None,
    devices=None,
) -> TrainResult:
    """Train `task.model` for `config.steps` steps; log, evaluate, checkpoint, plot.

    Args:
      task: model, loss and input mapping.
      config: steps, logging, checkpoints, optimizer, mesh.
      train_data: an (infinite) iterable of per-process numpy batches; if its iterator has
        `get_state`/`set_state` (Grain), the data position is checkpointed and resumed exactly.
      eval_data: a callable returning a fresh finite iterable of eval batches (with `mask`):
        the validation data that picks the best evaluation and drives early stopping.
      test_data: like `eval_data`; evaluated once when the run completes (early stopping
        included), with the best evaluation's parameters when `config.keep_best` is set, else
        the final ones. Reported in the summary's "test" (and "test_step": whose parameters).
      workdir: where metrics, TensorBoard events, checkpoints, plots and summary go.
      resume: continue from the latest checkpoint in `workdir` (k steps + resume + n-k steps
        gives the same per-step losses as n steps). The best evaluation, the early-stopping
        count, the last metrics and the time spent come from the checkpoint's run record (from
        the eval records in `metrics.jsonl` for a checkpoint written before run records), the
        best parameters from `workdir/best/`.
      run_config: written to `workdir/config.json` if given (the experiment's full config).
      devices: the devices of the mesh (default: all).

    Returns:
      The final state, the summary (also written to `summary.json`), and the workdir.

    Raises:
      NonFiniteLossError: a non-finite loss/gradient occurred and `on_nonfinite='stop'`.
      ValueError: early stopping without `eval_data`, or `best_metric` missing from its metrics.
    """
    if config.early_stopping_patience is not None and eval_data is None:
        raise ValueError("TrainConfig.early_stopping_patience is set but no eval_data was given.")
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Multi-process runs share `workdir`: process 0 writes the files (config, metrics, summary,
    # plots); Orbax coordinates the checkpoint writes of all processes itself.
    primary = jax.process_index() == 0
    provenance = _provenance()  # the summary's; now, before the checkout can change
    config_path = workdir / "config.json"
    if run_config is not None and resume and config_path.exists():
        # A resume continues the run config.json describes; other settings would make a run
        # that no file describes (and a changed model would fail in the restore).
        ours = json.loads(json.dumps(run_config, default=str))
        differences = config_differences(json.loads(config_path.read_text()), ours)
        if differences:
            shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
            raise ResumeError(
                f"{workdir} holds a run of another config ({shown}); resume it with the "
                "settings it was started with, or start the new settings in a new workdir."
            )
    elif primary and run_config is not None:
        write_text_atomic(config_path, json.dumps(run_config, indent=2, default=str))

    mesh = make_mesh(config.mesh, devices)
    train_iter: Iterator = iter(train_data)
    stateful = hasattr(train_iter, "get_state") and hasattr(train_iter, "set_state")
    if stateful:
        start_position = train_iter.get_state()
        example = next(train_iter)
        train_iter.set_state(start_position)
    else:
        example = next(train_iter)
        train_iter = itertools.chain([example], train_iter)
    _check_batch(example, mesh)

    tx = make_optimizer(config.optimizer, config.steps)
    schedule = learning_rate_schedule(config.optimizer, config.steps)
    replicas = mesh.shape[replicas_lib.AXIS] if config.outer is not None else None
    if replicas is not None:
        tx = replicas_lib.outer_optimizer(config.outer, tx)
    state, shardings = init_state(task, tx, example, config.seed, mesh, replicas)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    num_params //= replicas or 1  # one model's parameters

    checkpointer = Checkpointer(
        workdir, keep=config.keep_checkpoints, async_save=config.async_checkpointing
    )
    if not resume and checkpointer.latest_step() is not None:
        checkpointer.close()
        raise FileExistsError(
            f"{workdir} already holds checkpoints (latest step {checkpointer.latest_step()}); "
            "pass resume=True (--resume) to continue it, or choose another workdir."
        )
    start, run_record = 0, None
    if resume and (latest := checkpointer.latest_step()) is not None:
        try:
            state, data_state = checkpointer.restore(latest, abstract_like(state, shardings))
            run_record = checkpointer.run_record(latest)
        except Exception as e:  # noqa: BLE001 - Orbax raises many kinds for a damaged step
            steps = checkpointer.all_steps()
            checkpointer.close()
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise ResumeError(
                f"{checkpointer.directory}/{latest}: the checkpoint does not restore "
                f"({type(e).__name__}: {reason}); steps on disk: {steps}. If the model or its "
                "code changed since it was written, resume with the code that wrote it; if the "
                "step is damaged (a full disk, a copy cut short), delete its directory to resume "
                "from the step before."
            ) from e
        if stateful and data_state:
            train_iter.set_state(data_state)
        elif not stateful:
            log.warning("resuming with a data iterator that has no state: data restarts.")
        start = _step_number(state)
        if primary:  # on the terminal, not only in the log: a resume should say so
            print(f"resumed from step {start} ({checkpointer.directory})", flush=True)
    elif resume and primary:
        print(f"--resume: no checkpoint in {checkpointer.directory}; starting from step 0")

    log_found = (workdir / "metrics.jsonl").exists()  # before the writer starts a new one
    if jax.process_count() > 1:  # process 0's answer, so that all clean best/ alike (below)
        log_found = bool(multihost_utils.broadcast_one_to_all(np.int32(log_found)))
    writer = MetricsWriter(workdir, resume_step=start if resume else None, enabled=primary)
    if jax.process_count() > 1:  # the others read metrics.jsonl once process 0 has trimmed it
        multihost_utils.sync_global_devices("efficient.train: metrics.jsonl ready")
    tracker = _BestTracker(task.best_metric, config.early_stopping_patience)
    # What the run had reached at the checkpoint: the best evaluation and the evaluations since
    # it, the last metrics (the summary's when no step is left to run, as for a finished run
    # resumed), and its time so far.
    last_eval, logged_train, earlier_s = None, {}, 0.0
    # A checkpoint from before run records whose log is gone: nothing to rebuild them from.
    state_lost = start > 0 and run_record is None and not log_found
    if run_record is not None:
        tracker.load(run_record["tracker"])
        last_eval, logged_train = run_record["last_eval"], run_record["last_train"]
        earlier_s = float(run_record["elapsed_s"])
    elif state_lost:
        log.warning(
            "step %d's checkpoint has no run record (written before them) and %s is gone: the "
            "best evaluation and the early-stopping count start afresh from here.",
            start, writer.path,
        )  # fmt: skip
    elif resume and writer.path.exists():
        # A checkpoint from before run records: rebuilt from the log's records up to it (the
        # time is the last logged `elapsed_s`; from there to the end of that session is lost).
        for record in read_metrics(writer.path):
            if record.get("split") == "eval" and record["step"] <= start:
                last_eval = _record_metrics(record)
                tracker.update(last_eval, record["step"])
            elif record.get("split") == "train" and record["step"] <= start:
                earlier_s = float(record.get("elapsed_s", earlier_s))
                logged = _record_metrics(record)
                logged_train = {k: v for k, v in logged.items() if k not in _RATE_FIELDS}
    # Copies: the train step donates the state's buffers.
    variable_shardings = {"params": shardings.params, "model_state": shardings.model_state}
    copy_variables = jax.jit(
        lambda s: jax.tree.map(jnp.copy, {"params": s.params, "model_state": s.model_state}),
        out_shardings=variable_shardings,
    )
    best_checkpointer = (
        Checkpointer(workdir, keep=2, async_save=config.async_checkpointing, name="best")
        if config.keep_best
        else None
    )
    best_variables, best_saved_step = None, None
    if best_checkpointer is not None and not state_lost:  # else keep what is there
        for stale in set(best_checkpointer.all_steps()) - {tracker.best_step}:
            best_checkpointer.delete(stale)  # e.g. saved after the checkpoint resumed from
    if best_checkpointer is not None and tracker.best_step is not None:
        best_variables = _restore_best(
            best_checkpointer, tracker.best_step, copy_variables(state), variable_shardings
        )
        best_saved_step = tracker.best_step
        if best_variables is None:
            log.warning(
                "no saved parameters of the best evaluation (step %d) in %s; the current ones "
                "stand in for them.", tracker.best_step, best_checkpointer.directory,
            )  # fmt: skip
            best_variables = copy_variables(state)
    data_sharding = batch_sharding(mesh)
    step_fn = make_train_step(task, tx)
    eval_fn = make_eval_step(task)
    if replicas is not None:
        step_fn = replicas_lib.replica_train_step(step_fn, mesh)
        eval_fn = lambda s, b, base=eval_fn: base(replicas_lib.replica_mean(s), b)  # noqa: E731
    train_step = jax.jit(
        step_fn,
        in_shardings=(shardings, data_sharding),  # one sharding for every batch leaf
        out_shardings=shardings,
        donate_argnums=0,
    )
    communication = None
    if mesh.devices.size > 1:  # compile ahead once, to read what the step sends
        with jax.set_mesh(mesh):
            train_step = train_step.lower(state, _device_batch(example, data_sharding)).compile()
        communication = _communication(train_step.as_text(), mesh, config)
    reset_metrics = jax.jit(TrainState.reset_metrics, out_shardings=shardings, donate_argnums=0)
    eval_step = jax.jit(eval_fn, in_shardings=(shardings, data_sharding))

    def run_eval(step: int) -> dict[str, float] | None:
        if eval_data is None:
            return None
        metrics = evaluate(eval_step, state, eval_data(), data_sharding)
        writer.write(step, "eval", metrics)
        return metrics

    saved_step = start

    def save(step: int) -> None:
        nonlocal saved_step, best_saved_step
        # The best parameters are written with each checkpoint (not at each improvement), so
        # `best/` never holds an evaluation that a resume from the checkpoint would repeat.
        if best_checkpointer is not None and tracker.best_step not in (None, best_saved_step):
            best_checkpointer.save(tracker.best_step, best_variables, tracker.best)
            best_saved_step = tracker.best_step
        if step != saved_step:  # e.g. a checkpoint step that is also the stop_after step
            run = {
                "tracker": tracker.to_json(),
                "last_eval": last_eval,
                "last_train": last_train,
                "elapsed_s": earlier_s + time.perf_counter() - t_start,
            }
            checkpointer.save(step, state, train_iter.get_state() if stateful else None, run)
            saved_step = step

    status, last_train = "completed", logged_train
    stop_reason = tracker.reason() if tracker.exhausted else "steps"
    test_metrics, test_step = None, None
    examples = jax.tree.leaves(example)[0].shape[0] * jax.process_count()
    t_start = t_log = time.perf_counter()
    last_log_step = start
    stop = _StopFlag()
    bar = progress_bar(
        total=config.steps, initial=start, desc=workdir.name,
        enabled=config.progress and jax.process_index() == 0,
    )  # fmt: skip
    try:
        with stop.installed(), jax.set_mesh(mesh):
            step = start
            while step < config.steps and not tracker.exhausted:
                state = train_step(state, _device_batch(next(train_iter), data_sharding))
                step += 1
                bar.update(1)
                final = step == config.steps
                pause = config.stop_after is not None and step >= config.stop_after
                if step % config.log_every == 0 or final or pause or stop.signal is not None:
                    sums, count, bad, first_bad = jax.device_get(
                        (
                            state.metric_sums,
                            state.metric_count,
                            state.nonfinite_count,
                            state.first_nonfinite_step,
                        )
                    )
                    if replicas is not None:
                        sums, count, bad, first_bad = replicas_lib.host_counters(
                            sums, count, bad, first_bad
                        )
                    if bad and config.on_nonfinite == "stop":
                        status = "diverged"
                        raise NonFiniteLossError(int(first_bad))
                    now = time.perf_counter()
                    rate = (step - last_log_step) / max(now - t_log, 1e-9)
                    t_log, last_log_step = now, step
                    last_train = {k: float(v) / max(float(count), 1.0) for k, v in sums.items()}
                    record = dict(last_train, steps_per_s=rate, examples_per_s=rate * examples)
                    # The rate of this step's update: a skipped update leaves the optimizer
                    # state, its schedule count included, as it was (optax.apply_if_finite's
                    # convention), so each skip delays the schedule by one step.
                    delay = int(bad) if replicas is None else 0
                    record["learning_rate"] = float(schedule(step - 1 - delay))
                    record["elapsed_s"] = earlier_s + now - t_start
                    if bad:
                        record["skipped_updates"] = int(bad)
                    writer.write(step, "train", record)
                    if step % config.log_every == 0 or final:
                        # Not at a pause or a signal: the sums go on from the checkpoint, so the
                        # next record averages the same steps as in a run without the break.
                        state = reset_metrics(state)
                    bar.set_postfix(
                        loss=f"{last_train.get('loss', math.nan):.4f}",
                        ex_s=f"{rate * examples:.0f}",
                    )
                if (config.eval_every and step % config.eval_every == 0) or final:
                    last_eval = run_eval(step)
                    if last_eval is not None:
                        if tracker.update(last_eval, step) and config.keep_best:
                            best_variables = copy_variables(state)
                        bar.write(f"step {step}: eval " + _fmt(last_eval))
                if tracker.exhausted:
                    save(step)
                    stop_reason = tracker.reason()
                    bar.write(f"step {step}: {stop_reason}.")
                    break
                if step % config.checkpoint_every == 0 or final:
                    save(step)
                if pause and not final:
                    save(step)
                    checkpointer.wait()  # say "saved" only once it is on disk
                    status, stop_reason = "paused", f"stop_after={config.stop_after}"
                    bar.write(f"stop_after={config.stop_after}: checkpoint saved at step {step}.")
                    break
                if stop.signal is not None:
                    save(step)
                    checkpointer.wait()
                    status = "interrupted"
                    stop_reason = signal.Signals(stop.signal).name
                    bar.write(
                        f"{signal.Signals(stop.signal).name} at step {step}: checkpoint saved; "
                        "continue with --resume."
                    )
                    break
            if status == "completed" and test_data is not None:
                test_state = state
                test_step = _step_number(state)
                if best_variables is not None:
                    test_state = state.replace(**best_variables)
                    test_step = tracker.best_step
                test_metrics = evaluate(eval_step, test_state, test_data(), data_sharding)
                bar.write(f"test (parameters of step {test_step}): " + _fmt(test_metrics))
    finally:
        bar.close()
        checkpointer.close()
        if best_checkpointer is not None:
            best_checkpointer.close()
        writer.close()
        wall = time.perf_counter() - t_start
        summary = {
            "status": status,
            "step": _step_number(state) if status != "diverged" else None,
            "steps": config.steps,
            "num_params": num_params,
            "final_train": last_train,
            "final_eval": last_eval,
            "best_eval": tracker.best,
            "best_step": tracker.best_step,
            "early_stopped": tracker.exhausted,
            "stop_reason": "non-finite loss" if status == "diverged" else stop_reason,
            "test": test_metrics,
            "test_step": test_step,
            "skipped_updates": int(np.sum(jax.device_get(state.nonfinite_count))),
            "wall_time_s": earlier_s + wall,  # the run's, over its sessions
            "session_wall_time_s": wall,
            "mesh": dict(mesh.shape),
            "communication": communication,
            **provenance,
        }
        if primary:
            write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2, default=str))
            plot_metrics(workdir / "metrics.jsonl", workdir / "plots")
    best = None
    if best_variables is not None:
        best = {"params": best_variables["params"], **best_variables["model_state"]}
    return TrainResult(
        state=state, summary=summary, workdir=workdir, best_variables=best, replicas=replicas
    )


def _communication(hlo: str, mesh, config: TrainConfig) -> dict[str, Any]:
    """What one device sends, read from the compiled train step's collectives
    (`efficient.sharding.collectives`): per execution of its costliest path ("per sync": every
    step without an outer optimizer, the outer step's exchange with one) and averaged per step."""
    found = collectives(hlo)
    ops = dict(collections.Counter(c.op for c in found))
    per_sync = sync_bytes(found, mesh.devices.size)
    period = config.outer.sync_period if config.outer is not None else 1
    return {
        "collective_ops": ops,
        "bytes_per_device_per_sync": per_sync,
        "sync_period": period,
        "bytes_per_device_per_step": per_sync / period,
    }


def _step_number(state: TrainState) -> int:
    """The state's step (every replica of a stacked state is at the same step)."""
    return int(np.max(jax.device_get(state.step)))


def _restore_best(checkpointer: Checkpointer, step: int, like, shardings):
    """The {"params", "model_state"} saved for `step` in `best/`, or None if not there."""
    if step not in checkpointer.all_steps():
        return None
    variables, _ = checkpointer.restore(step, abstract_like(like, shardings))
    return variables


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
