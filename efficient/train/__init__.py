"""The one training loop: state, steps, checkpoints, metrics. Knows no model."""

from efficient.train.checkpoint import Checkpointer
from efficient.train.config import OptimizerConfig, OuterConfig, TrainConfig
from efficient.train.loop import (
    NonFiniteLossError,
    ResumeError,
    TrainResult,
    evaluate,
    init_state,
    train,
)
from efficient.train.metrics import MetricsWriter, plot_metrics, read_metrics
from efficient.train.optimizer import learning_rate_schedule, make_optimizer
from efficient.train.state import TrainState
from efficient.train.steps import make_eval_step, make_train_step
from efficient.train.task import (
    Task,
    classification_loss,
    next_token_loss,
    replace_params,
    token_inputs,
)

__all__ = [
    "Checkpointer",
    "MetricsWriter",
    "NonFiniteLossError",
    "ResumeError",
    "OptimizerConfig",
    "OuterConfig",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "classification_loss",
    "evaluate",
    "init_state",
    "learning_rate_schedule",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "next_token_loss",
    "plot_metrics",
    "read_metrics",
    "replace_params",
    "token_inputs",
    "train",
]
