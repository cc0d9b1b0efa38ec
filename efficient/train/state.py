"""The training state: one pytree holding everything a checkpoint must restore."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrainState:
    """Parameters, model state, optimizer state, RNG and counters.

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      params: the 'params' collection.
      model_state: every other mutable collection (e.g. {'batch_stats': ...}); may be empty.
      opt_state: the Optax state.
      rng: raw key data (uint32) of the base key; step t uses `fold_in(base, t)`, so the
        randomness of a step never depends on how the run was split by resumes.
      metric_sums: per-metric sums of the train metrics since the last log record, kept on
        device (no host sync per step) and checkpointed, so logged averages survive a resume.
      metric_count: number of steps summed in `metric_sums`.
      nonfinite_count: updates dropped because the loss or gradients were not finite.
      first_nonfinite_step: the first such step, or -1.
    """

    # Leaves are typed Any: a pytree's leaves are Arrays, tracers, ShapeDtypeStructs (eval_shape,
    # restore targets) or shardings at different times, and the test-time type checker sees all.
    step: Any  # int32 []
    params: Any
    model_state: Any
    opt_state: Any
    rng: Any  # uint32 [2] (threefry key data)
    metric_sums: Any  # {name: float32 []}
    metric_count: Any  # float32 []
    nonfinite_count: Any  # int32 []
    first_nonfinite_step: Any  # int32 []

    def step_key(self, step: jax.Array | None = None) -> jax.Array:
        """The PRNG key for `step` (default: the current step)."""
        base = jax.random.wrap_key_data(self.rng)
        return jax.random.fold_in(base, self.step if step is None else step)

    def variables(self) -> dict[str, Any]:
        """The model's variables, as `model.apply` takes them."""
        return {"params": self.params, **self.model_state}

    def reset_metrics(self) -> TrainState:
        return self.replace(
            metric_sums=jax.tree.map(jnp.zeros_like, self.metric_sums),
            metric_count=jnp.zeros_like(self.metric_count),
        )
