"""DiLoCo as an Optax transformation: H inner steps, then an all-reduced outer Nesterov step.

DiLoCo: Distributed Low-Communication Training of Language Models (Douillard et al.,
arXiv:2311.08105, §2 and Algorithm 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax
from jax import lax

from efficient.optim._outer import check_outer, compute_dtype, outer_transformation


class DiLoCoState(NamedTuple):
    """State of `diloco` on one replica."""

    count: jax.Array  # [] int32: inner steps taken
    inner_state: optax.OptState  # the inner optimizer's state, kept across syncs (paper §6.1)
    slow_params: optax.Params  # φ: outer weights, like params (shape and dtype)
    momentum: optax.Params  # δ: outer momentum as a displacement (φ += δ), like params


def diloco(
    inner: optax.GradientTransformation,
    *,
    sync_period: int,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.9,
    nesterov: bool = True,
    axis_name: str | None = "replica",
) -> optax.GradientTransformationExtraArgs:
    r"""DiLoCo: every replica runs `inner`; every H steps all replicas average and step outward.

    Replica i keeps fast weights θ_i (the params the model trains with), and all replicas share
    the slow weights φ and the outer momentum δ. Each update is one `inner` step on θ_i; after
    every H = `sync_period` inner steps the replicas all-reduce the pseudo-gradient and take one
    outer SGD-momentum step (η = `outer_learning_rate`, μ = `outer_momentum`):

    .. math::

      Δ = \frac{1}{N} \sum_i (φ - θ_i), \qquad δ ← μ δ - η Δ, \qquad
      φ ← φ + μ δ - η Δ \ \text{(Nesterov)} \quad \text{or} \quad φ ← φ + δ,
      \qquad θ_i ← φ.

    This is `optax.sgd(η, momentum=μ, nesterov=...)` applied to Δ, with optax's trace equal to
    -δ / η; the paper, OpenDiLoCo (H = 500, η = 0.7, μ = 0.9, Nesterov) and MaxText use that
    outer optimizer. The inner state (e.g. Adam's moments) is kept across syncs, as the paper
    does. With one replica, η = 1 and μ = 0 the sync is φ ← θ, the inner optimizer alone.

    `update(updates, state, params)` returns the inner updates on ordinary steps and
    φ_new - params on sync steps, so `optax.apply_updates(params, updates)` gives the new fast
    weights either way. The sync runs inside jit under `lax.cond` on the step counter.

    Collectives: `update` must run where `axis_name` is bound, one replica per index of that axis
    (typically `jax.shard_map` over the mesh's "replica" axis, with params, grads and state
    split over it); the pseudo-gradient is averaged with `lax.pmean`, an all-reduce, in at least
    float32. `axis_name=None` means a single replica (no communication). All replicas must start
    from the same params, as the paper does.

    Args:
      inner: the inner optimizer (any Optax transformation, schedules included).
      sync_period: H, inner steps between syncs (>= 1).
      outer_learning_rate: η > 0.
      outer_momentum: μ in [0, 1).
      nesterov: Nesterov momentum (the paper) or heavy ball (φ ← φ + δ).
      axis_name: the mapped axis the replicas live on, or None for one replica.

    Returns:
      An `optax.GradientTransformationExtraArgs` with `DiLoCoState`; `update` needs `params`
      and passes extra keyword arguments on to `inner`.

    Raises:
      ValueError: for sync_period < 1, η <= 0 or μ outside [0, 1), or if `update` gets no params.

    Example (two replicas mapped with `jax.vmap`; `jax.shard_map` over a mesh axis works alike):

    >>> import jax, jax.numpy as jnp, optax
    >>> from efficient.optim import diloco
    >>> tx = diloco(optax.sgd(0.1), sync_period=2)
    >>> params = {"w": jnp.zeros((2, 3))}  # [replica, 3]
    >>> grads = {"w": jnp.array([[1.0] * 3, [3.0] * 3])}
    >>> state = jax.vmap(tx.init)(params)
    >>> step = jax.vmap(tx.update, axis_name="replica")
    >>> for _ in range(2):
    ...     updates, state = step(grads, state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> print(params["w"][:, 0].round(3))  # Δ = 0.4, δ = -0.28, φ = 0.9 δ - 0.28
    [-0.532 -0.532]

    References:
      Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models",
      arXiv:2311.08105 (2023). Jaghouar et al., "OpenDiLoCo", arXiv:2407.07852 (2024).
    """
    check_outer(sync_period, outer_learning_rate, outer_momentum)
    if axis_name is not None and not isinstance(axis_name, str):
        raise ValueError(f"axis_name={axis_name!r}: must be a mesh axis name (str) or None.")
    lr, mu = float(outer_learning_rate), float(outer_momentum)

    def sync(fast, slow, momentum, sync_index):
        del sync_index
        delta = jax.tree.map(
            lambda s, f: s.astype(compute_dtype(s.dtype)) - f.astype(compute_dtype(s.dtype)),
            slow,
            fast,
        )
        if axis_name is not None:
            delta = lax.pmean(delta, axis_name)
        new_momentum = jax.tree.map(lambda m, d: mu * m.astype(d.dtype) - lr * d, momentum, delta)
        if nesterov:
            step = jax.tree.map(lambda m, d: mu * m - lr * d, new_momentum, delta)
        else:
            step = new_momentum
        new_slow = jax.tree.map(lambda s, u: (s.astype(u.dtype) + u).astype(s.dtype), slow, step)
        new_momentum = jax.tree.map(lambda m, s: m.astype(s.dtype), new_momentum, slow)
        return new_slow, new_momentum

    return outer_transformation(
        inner, sync_period=sync_period, state_cls=DiLoCoState, sync_fn=sync, name="diloco"
    )
