"""Training across the mesh's `replica` axis with an outer optimizer (DiLoCo, NoLoCo).

With `TrainConfig.outer` set, every leaf of the `TrainState` gets a leading axis of size R (the
mesh's `replica` size) sharded over `replica`: each replica owns its parameters, optimizer state
(the outer state included), dropout key and metric sums. The train step is the ordinary one run
under `jax.shard_map` over `replica` alone (the other mesh axes stay automatic, so a replica can
itself be data-, FSDP- or tensor-parallel); the outer optimizer's collectives (`pmean` for
DiLoCo, `ppermute` for NoLoCo) bind to that axis inside the one jitted step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from efficient.optim import diloco, noloco
from efficient.train.config import OuterConfig
from efficient.train.state import TrainState

AXIS = "replica"

__all__ = [
    "AXIS",
    "host_counters",
    "outer_optimizer",
    "replica_mean",
    "replica_train_step",
    "stack_replicas",
    "stacked_shardings",
]


def outer_optimizer(
    config: OuterConfig, inner: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """`inner` wrapped in the outer optimizer `config` names, over the `replica` axis."""
    if config.name == "diloco":
        return diloco(
            inner, sync_period=config.sync_period, outer_learning_rate=config.learning_rate,
            outer_momentum=config.momentum, nesterov=config.nesterov, axis_name=AXIS,
        )  # fmt: skip
    return noloco(
        inner, sync_period=config.sync_period, outer_learning_rate=config.learning_rate,
        outer_momentum=config.momentum, group_size=config.group_size, axis_name=AXIS,
    )  # fmt: skip


def stacked_shardings(shardings: Any, mesh) -> Any:
    """Each leaf's sharding with a leading `replica` dimension in front of its own spec."""

    def one(sharding: NamedSharding) -> NamedSharding:
        if AXIS in jax.tree.leaves(tuple(sharding.spec)):
            raise ValueError(f"a state leaf is already sharded over {AXIS!r}: {sharding.spec}")
        return NamedSharding(mesh, P(AXIS, *sharding.spec))

    return jax.tree.map(one, shardings)


def stack_replicas(state: TrainState, replicas: int) -> TrainState:
    """R identical copies of `state` along a new leading axis, except the dropout key, which is
    `fold_in(key, r)` for replica r (the replicas see different data; their dropout differs too).
    """
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (replicas, *x.shape)), state)
    base = jax.random.wrap_key_data(state.rng)
    keys = jax.vmap(lambda r: jax.random.key_data(jax.random.fold_in(base, r)))(
        jnp.arange(replicas)
    )
    return stacked.replace(rng=keys)


def replica_train_step(
    step: Callable[[TrainState, Any], TrainState], mesh
) -> Callable[[TrainState, Any], TrainState]:
    """`step` run by every replica on its block of the stacked state and of the batch (the batch's
    leading dimension is split over `replica`, then over the data-parallel axes as usual)."""

    def per_replica(state: TrainState, batch: Any) -> TrainState:
        new = step(jax.tree.map(lambda x: x[0], state), batch)
        return jax.tree.map(lambda x: x[None], new)

    return jax.shard_map(
        per_replica, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P(AXIS),
        axis_names=frozenset({AXIS}),
    )  # fmt: skip


def replica_mean(state: TrainState) -> TrainState:
    """The state an evaluation sees: parameters and model state averaged over the replicas
    (NoLoCo's replicas differ between syncs; DiLoCo's fast weights too). Other fields keep R."""
    mean = lambda tree: jax.tree.map(lambda x: jnp.mean(x, axis=0).astype(x.dtype), tree)  # noqa: E731
    return state.replace(params=mean(state.params), model_state=mean(state.model_state))


def host_counters(sums: dict, count, bad, first_bad) -> tuple[dict, float, int, int]:
    """The loop's host-side counters of a stacked state reduced over the replicas: metric sums
    averaged (every replica took the same number of steps), skipped updates added, the first
    skipped step the earliest one."""
    sums = {k: float(np.mean(v)) for k, v in sums.items()}
    first = np.asarray(first_bad)
    first = int(first[first >= 0].min()) if (first >= 0).any() else -1
    return sums, float(np.max(count)), int(np.sum(bad)), first
