"""Configuration of the training loop and its optimizer (frozen, keyword-only dataclasses)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from efficient.checks import check_field_types, validates_arguments
from efficient.sharding import MeshConfig


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """An Optax optimizer with a warm-up + decay learning-rate schedule.

    Attributes:
      name: "adamw" (decoupled weight decay), "sgd" (Nesterov momentum) or "lion".
      learning_rate: peak learning rate, reached after `warmup_steps`.
      schedule: decay after warm-up: "cosine" (to `end_lr_factor * learning_rate` at count
        `steps`, just after the last update, which uses count steps - 1: optax's convention),
        "linear", or "constant".
      weight_decay: applied to parameters with two or more dimensions only (kernels, embeddings),
        never to biases or norm scales, as in most vision and LM recipes.
      weight_decay_exclude: names of parameters that never decay either, matched against every
        key of a parameter's path: ("pos_embed", "cls_token") is timm's `no_weight_decay()` for
        the ViTs here (KAT and DeiT train that way; the presets here decay them).
      grad_clip_norm: clip the global gradient norm to this value; None disables clipping.
    """

    name: Literal["adamw", "sgd", "lion"] = "adamw"
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    end_lr_factor: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_exclude: tuple[str, ...] = ()
    grad_clip_norm: float | None = None

    def __post_init__(self):
        check_field_types(self)


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class OuterConfig:
    """Low-communication training across the mesh's `replica` axis: every replica keeps its own
    parameters and optimizer state and runs the inner optimizer (`OptimizerConfig`) on its share
    of the batch; every `sync_period` steps the outer step of `efficient.optim.diloco` (all
    replicas average, `pmean`) or `efficient.optim.noloco` (random groups, `ppermute`) runs
    inside the jitted step.

    Attributes:
      name: "diloco" or "noloco".
      sync_period: H, inner steps per outer step.
      learning_rate: the outer learning rate (both papers: 0.7).
      momentum: the outer momentum (DiLoCo 0.9 Nesterov; NoLoCo 0.5 heavy ball).
      nesterov: DiLoCo only: Nesterov (True, the paper) or heavy-ball momentum.
      group_size: NoLoCo only: replicas averaged together (2: random pairs).
    """

    name: Literal["diloco", "noloco"] = "noloco"
    sync_period: int = 50
    learning_rate: float = 0.7
    momentum: float = 0.5
    nesterov: bool = True
    group_size: int = 2

    def __post_init__(self):
        check_field_types(self)
        for name in ("sync_period", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"OuterConfig.{name}={getattr(self, name)}: must be >= 1.")


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How long to train, what to log and keep, and what to do when things go wrong.

    Attributes:
      steps: total optimizer steps (a resumed run continues up to this count).
      log_every: steps between metric records (train metrics are averaged over the interval).
      eval_every: steps between evaluations; 0 evaluates only at the end.
      checkpoint_every: steps between checkpoints; the last step is always saved.
      keep_checkpoints: how many recent checkpoints Orbax keeps.
      on_nonfinite: "stop" ends the run naming the first step whose loss or gradients were not
        finite; "skip" drops such updates and counts them (the optimizer state stays as it was,
        so each skip delays the schedule by a step). In both modes the bad update is never
        applied, so saved checkpoints stay finite.
      seed: seeds parameter init and the per-step dropout keys (data has its own seed).
      progress: show progress: tqdm's bar on a terminal or in a notebook, a status line every
        30 s in a log file or pipe (`efficient.train.progress`).
      stop_after: end this session at this step (with a checkpoint) although the run, its
        schedule included, is `steps` long; `--resume` continues it. For time-sliced jobs.
      early_stopping_patience: end the run (status "completed", `early_stopped` true in the
        summary) once the task's `best_metric` has not improved in this many consecutive
        evaluations (a tie improves when its eval loss is lower); None trains all `steps`.
        Needs `eval_every` > 0 and eval data.
      keep_best: keep the parameters (and model state) of the best evaluation: in device
        memory while training (one extra copy of the parameters), in `workdir/best/` at every
        checkpoint, and in `TrainResult.best_variables`; test data is then evaluated with them.
      outer: None: the mesh's `replica` axis is plain data parallelism (one model, gradients
        all-reduced). An `OuterConfig`: the state holds one copy per replica (every leaf gets a
        leading axis of size `mesh.replica`, sharded over it; checkpoints hold all of them),
        and evaluation uses the replica mean of the parameters.
    """

    steps: int = 1000
    log_every: int = 50
    eval_every: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    async_checkpointing: bool = True
    on_nonfinite: Literal["stop", "skip"] = "stop"
    seed: int = 0
    progress: bool = True
    stop_after: int | None = None
    early_stopping_patience: int | None = None
    keep_best: bool = False
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    outer: OuterConfig | None = None

    def __post_init__(self):
        check_field_types(self)
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}: must be >= 1.")
        if self.eval_every < 0:
            raise ValueError(f"TrainConfig.eval_every={self.eval_every}: must be >= 0.")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ValueError(
                    f"TrainConfig.early_stopping_patience={self.early_stopping_patience}: must "
                    "be >= 1 (evaluations), or None to disable early stopping."
                )
            if self.eval_every == 0:
                raise ValueError(
                    "TrainConfig.early_stopping_patience needs periodic evaluations: set "
                    "eval_every > 0."
                )
