"""THE training loop: any Linen model + loss + Grain pipeline, sharded over a mesh, resumable."""

from __future__ import annotations

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
from tqdm.auto import tqdm

from efficient.sharding import BATCH_AXES, batch_sharding, logical_to_sharding, make_mesh
from efficient.train.checkpoint import Checkpointer, abstract_like
from efficient.train.config import TrainConfig
from efficient.train.metrics import MetricsWriter, plot_metrics
from efficient.train.optimizer import learning_rate_schedule, make_optimizer
from efficient.train.state import TrainState
from efficient.train.steps import make_eval_step, make_train_step
from efficient.train.task import Task

log = logging.getLogger(__name__)


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
    state: TrainState
    summary: dict[str, Any]
    workdir: pathlib.Path


def init_state(
    task: Task, tx: optax.GradientTransformation, example_batch, seed: int, mesh
) -> tuple[TrainState, Any]:
    """Initialise a sharded TrainState directly on the mesh; returns (state, its shardings)."""

    def init_fn(rng_data):
        rng = jax.random.wrap_key_data(rng_data)
        params_key, dropout_key = jax.random.split(rng)
        example = jax.tree.map(lambda x: jnp.asarray(x[:1]), example_batch)
        inputs = task.inputs(example)
        variables = task.model.init(
            {"params": params_key, "dropout": dropout_key}, *inputs, train=False
        )
        params = variables["params"]
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

    rng_data = jax.random.key_data(jax.random.key(seed))
    boxed = jax.eval_shape(init_fn, rng_data)
    shardings = logical_to_sharding(boxed, mesh)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng_data)
    return state, shardings


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
      eval_data: a callable returning a fresh finite iterable of eval batches (with `mask`).
      workdir: where metrics, TensorBoard events, checkpoints, plots and summary go.
      resume: continue from the latest checkpoint in `workdir` (k steps + resume + n-k steps
        gives the same per-step losses as n steps).
      run_config: written to `workdir/config.json` if given (the experiment's full config).
      devices: the devices of the mesh (default: all).

    Returns:
      The final state, the summary (also written to `summary.json`), and the workdir.

    Raises:
      NonFiniteLossError: a non-finite loss/gradient occurred and `on_nonfinite='stop'`.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if run_config is not None and not (resume and (workdir / "config.json").exists()):
        (workdir / "config.json").write_text(json.dumps(run_config, indent=2, default=str))

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
    state, shardings = init_state(task, tx, example, config.seed, mesh)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))

    checkpointer = Checkpointer(
        workdir, keep=config.keep_checkpoints, async_save=config.async_checkpointing
    )
    if not resume and checkpointer.latest_step() is not None:
        checkpointer.close()
        raise FileExistsError(
            f"{workdir} already holds checkpoints (latest step {checkpointer.latest_step()}); "
            "pass resume=True (--resume) to continue it, or choose another workdir."
        )
    start = 0
    if resume and (latest := checkpointer.latest_step()) is not None:
        state, data_state = checkpointer.restore(latest, abstract_like(state, shardings))
        if stateful and data_state:
            train_iter.set_state(data_state)
        elif not stateful:
            log.warning("resuming with a data iterator that has no state: data restarts.")
        start = int(state.step)
        log.info("resumed from step %d in %s", start, checkpointer.directory)
    elif resume:
        log.info("no checkpoint in %s; starting from step 0", checkpointer.directory)

    writer = MetricsWriter(workdir, resume_step=start if resume else None)
    data_sharding = batch_sharding(mesh)
    train_step = jax.jit(
        make_train_step(task, tx),
        in_shardings=(shardings, data_sharding),  # one sharding for every batch leaf
        out_shardings=shardings,
        donate_argnums=0,
    )
    reset_metrics = jax.jit(TrainState.reset_metrics, out_shardings=shardings, donate_argnums=0)
    eval_step = jax.jit(make_eval_step(task), in_shardings=(shardings, data_sharding))

    def run_eval(step: int) -> dict[str, float] | None:
        if eval_data is None:
            return None
        metrics = evaluate(eval_step, state, eval_data(), data_sharding)
        writer.write(step, "eval", metrics)
        return metrics

    saved_step = start

    def save(step: int) -> None:
        nonlocal saved_step
        if step != saved_step:  # e.g. a checkpoint step that is also the stop_after step
            checkpointer.save(step, state, train_iter.get_state() if stateful else None)
            saved_step = step

    status, last_train, last_eval, best_eval = "completed", {}, None, None
    examples = jax.tree.leaves(example)[0].shape[0] * jax.process_count()
    t_start = t_log = time.perf_counter()
    last_log_step = start
    stop = _StopFlag()
    bar = tqdm(
        total=config.steps, initial=start, unit="step", dynamic_ncols=True,
        disable=not config.progress or jax.process_index() != 0, desc=workdir.name,
    )  # fmt: skip
    try:
        with stop.installed(), jax.set_mesh(mesh):
            step = start
            while step < config.steps:
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
                    if bad and config.on_nonfinite == "stop":
                        status = "diverged"
                        raise NonFiniteLossError(int(first_bad))
                    now = time.perf_counter()
                    rate = (step - last_log_step) / max(now - t_log, 1e-9)
                    t_log, last_log_step = now, step
                    last_train = {k: float(v) / max(float(count), 1.0) for k, v in sums.items()}
                    record = dict(last_train, steps_per_s=rate, examples_per_s=rate * examples)
                    record["learning_rate"] = float(schedule(step - 1))
                    if bad:
                        record["skipped_updates"] = int(bad)
                    writer.write(step, "train", record)
                    state = reset_metrics(state)
                    bar.set_postfix(
                        loss=f"{last_train.get('loss', math.nan):.4f}",
                        ex_s=f"{rate * examples:.0f}",
                    )
                if (config.eval_every and step % config.eval_every == 0) or final:
                    last_eval = run_eval(step)
                    if last_eval is not None:
                        best_eval = _better(best_eval, last_eval, step, task.best_metric)
                        bar.write(f"step {step}: eval " + _fmt(last_eval))
                if step % config.checkpoint_every == 0 or final:
                    save(step)
                if pause and not final:
                    save(step)
                    status = "paused"
                    bar.write(f"stop_after={config.stop_after}: checkpoint saved at step {step}.")
                    break
                if stop.signal is not None:
                    save(step)
                    status = "interrupted"
                    bar.write(
                        f"{signal.Signals(stop.signal).name} at step {step}: checkpoint saved; "
                        "continue with --resume."
                    )
                    break
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
        wall = time.perf_counter() - t_start
        summary = {
            "status": status,
            "step": int(jax.device_get(state.step)) if status != "diverged" else None,
            "steps": config.steps,
            "num_params": num_params,
            "final_train": last_train,
            "final_eval": last_eval,
            "best_eval": best_eval,
            "skipped_updates": int(jax.device_get(state.nonfinite_count)),
            "wall_time_s": wall,
            "mesh": dict(mesh.shape),
            **_provenance(),
        }
        if jax.process_index() == 0:
            (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            plot_metrics(workdir / "metrics.jsonl", workdir / "plots")
    return TrainResult(state=state, summary=summary, workdir=workdir)


def _better(best, current, step, metric=None):
    # Default: higher accuracy wins when reported, else lower loss.
    if metric is not None:
        key, sign = metric[0], 1 if metric[1] == "max" else -1
    else:
        key, sign = ("accuracy", 1) if "accuracy" in current else ("loss", -1)
    if key not in current:
        return best
    if best is None or sign * current[key] > sign * best[key]:
        return dict(current, step=step)
    return best


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
