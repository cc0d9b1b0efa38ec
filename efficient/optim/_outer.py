"""The two-level loop shared by DiLoCo and NoLoCo: inner steps, and every H steps an outer step.

DiLoCo: Distributed Low-Communication Training of Language Models (Douillard et al.,
arXiv:2311.08105, Algorithm 1); NoLoCo (Kolehmainen et al., arXiv:2506.10911, §3).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

# (fast, slow, momentum, sync_index) -> (new_slow, new_momentum); fast/slow/momentum are pytrees
# like params, sync_index is the int32 number of syncs before this one.
SyncFn = Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]]


def compute_dtype(dtype) -> jnp.dtype:
    """Outer arithmetic runs in at least float32: bf16 weights would round the small
    pseudo-gradients φ - θ and the momentum recursion away."""
    dtype = jnp.dtype(dtype)
    # Spelled out rather than jnp.promote_types, which refuses bf16 -> f32 in "strict" mode.
    return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def check_outer(sync_period, outer_learning_rate, outer_momentum) -> None:
    """ValueErrors naming the argument for the hyperparameters both optimizers share."""
    if isinstance(sync_period, bool) or not isinstance(sync_period, numbers.Integral):
        raise ValueError(f"sync_period={sync_period!r}: must be an integer >= 1.")
    if sync_period < 1:
        raise ValueError(f"sync_period={sync_period}: must be >= 1 (inner steps per outer step).")
    if (
        not isinstance(outer_learning_rate, numbers.Real)
        or not math.isfinite(outer_learning_rate)
        or outer_learning_rate <= 0
    ):
        raise ValueError(
            f"outer_learning_rate={outer_learning_rate!r}: must be a finite number > 0."
        )
    if not isinstance(outer_momentum, numbers.Real) or not 0 <= outer_momentum < 1:
        raise ValueError(f"outer_momentum={outer_momentum!r}: must be in [0, 1).")


def outer_transformation(
    inner: optax.GradientTransformation,
    *,
    sync_period: int,
    state_cls: type,
    sync_fn: SyncFn,
    name: str,
) -> optax.GradientTransformationExtraArgs:
    """Wrap `inner` so that every `sync_period`-th update ends with `sync_fn` and θ ← φ.

    The state is `state_cls(count, inner_state, slow_params, momentum)`. On ordinary steps the
    returned updates are exactly the inner optimizer's; on a sync step they are φ_new - params,
    so that `optax.apply_updates` lands on the new slow weights.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return state_cls(
            count=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
            # A copy, so that donating params and state together never donates one buffer twice.
            slow_params=jax.tree.map(jnp.copy, params),
            momentum=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                f"{name} needs `params` in update(updates, state, params): "
                "the outer step compares the fast weights with the slow ones."
            )
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        count = optax.safe_int32_increment(state.count)

        def sync(operands):
            inner_updates, slow, momentum = operands
            fast = optax.apply_updates(params, inner_updates)
            new_slow, new_momentum = sync_fn(fast, slow, momentum, count // sync_period - 1)

            def to_slow(s, p, u):
                dtype = compute_dtype(p.dtype)
                return (s.astype(dtype) - p.astype(dtype)).astype(u.dtype)

            return jax.tree.map(to_slow, new_slow, params, inner_updates), new_slow, new_momentum

        operands = (inner_updates, state.slow_params, state.momentum)
        if sync_period == 1:
            new_updates, slow, momentum = sync(operands)
        else:
            new_updates, slow, momentum = lax.cond(
                count % sync_period == 0, sync, lambda ops: ops, operands
            )
        return new_updates, state_cls(
            count=count, inner_state=inner_state, slow_params=slow, momentum=momentum
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
