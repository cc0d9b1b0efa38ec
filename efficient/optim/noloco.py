"""NoLoCo as an Optax transformation: H inner steps, then an outer step averaged in random pairs.

NoLoCo: No-all-reduce Low Communication Optimizer for Model Training (Kolehmainen, Blagoev,
Donaghy, Ersoy, Nies; arXiv:2506.10911, §3), following the official code
(github.com/jkolehm/noloco, `src/noloco/sparse_optimizer_c.py`, `SparseOptimizerC`).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import optax
from jax import lax

from efficient.optim._outer import check_outer, compute_dtype, outer_transformation
from efficient.optim.pairing import _check_group, _check_group_size, group_mean


class NoLoCoState(NamedTuple):
    """State of `noloco` on one replica (φ and δ differ between replicas after the first sync)."""

    count: jax.Array  # [] int32: inner steps taken
    inner_state: optax.OptState  # the inner optimizer's state, kept across syncs
    slow_params: optax.Params  # φ_i: this replica's outer weights, like params
    momentum: optax.Params  # δ_i: outer momentum as a displacement (φ_i += δ_i), like params


def noloco(
    inner: optax.GradientTransformation,
    *,
    sync_period: int = 50,
    outer_learning_rate: float = 0.7,
    outer_momentum: float = 0.5,
    group_size: int = 2,
    axis_name: str | None = "replica",
    num_replicas: int | None = None,
    num_pairings: int = 64,
) -> optax.GradientTransformationExtraArgs:
    r"""NoLoCo: DiLoCo whose outer step averages within small random groups, with no all-reduce.

    Replica i keeps fast weights θ_i (the params the model trains with), slow weights φ_i and an
    outer momentum δ_i. Each update is one `inner` step on θ_i. After every H = `sync_period`
    inner steps the replicas split into random groups G of n = `group_size` (a random perfect
    matching for n = 2) and each takes the official code's heavy-ball outer step
    (α = `outer_momentum`, β = `outer_learning_rate`):

    .. math::

      δ_i ← α δ_i + β \operatorname{mean}_{j∈G_i}(θ_j - φ_j)
                  + β (\operatorname{mean}_{j∈G_i} φ_j - φ_i), \qquad
      φ_i ← φ_i + δ_i, \qquad θ_i ← φ_i.

    The two β terms collapse to β (mean_G θ_j - φ_i), so this is heavy-ball SGD
    (`optax.sgd(β, momentum=α)`, trace = -δ_i / β) on the gossip pseudo-gradient

    .. math::  g_i = φ_i - \operatorname{mean}_{j∈G_i} θ_j, \qquad δ_i ← α δ_i - β g_i,

    and only the fast weights θ_j travel: one model-sized message per group peer, where the
    official code sends φ_j and θ_j - φ_j to a root and back. With one group of all N replicas
    it is DiLoCo with heavy-ball momentum; over any partition into equal groups the replica mean
    of φ follows exactly that DiLoCo step on the means, since mean_i mean_{G_i} θ = mean_i θ_i.

    Sign and form follow the official code (φ += δ with δ built from +β(mean θ - φ)): the paper
    calls the step a "modified Nesterov" one and its Eq. 2 prints a different sign, but the code
    that produced its results is heavy ball as above. The inner state is never reset or averaged.

    Groups: the t-th sync (t = 0, 1, ...) uses `pairings(N, n, (t + 1) * H)`, the official
    `np.random.default_rng(step + 1).permutation(N)` dealt round-robin into groups, so every
    replica knows every group without talking. A group mean is n - 1 `lax.ppermute` shifts
    around each group's ring. `lax.ppermute` takes a static permutation, so every partition is
    its own branch of a `lax.switch` compiled into the program; program size and compile time
    grow with the number of branches. Hence `num_pairings` = P: the first P syncs use exactly
    the official code's partitions, then the schedule cycles (sync t uses partition t mod P).
    The union of P >= 3 random matchings connects all replicas with high probability, so
    cycling keeps the gossip mixing; P = 64 leaves the random-matching statistics of the paper
    intact for thousands of inner steps at a modest program size. Identical partitions share a
    branch (n = N compiles one).

    `update(updates, state, params)` returns the inner updates on ordinary steps and
    φ_new - params on sync steps, so `optax.apply_updates(params, updates)` gives the new fast
    weights either way. The sync runs inside jit under `lax.cond` on the step counter; the
    compiled program holds collective-permutes only, no all-reduce over `axis_name`.

    Collectives: `update` must run where `axis_name` is bound, one replica per index of that
    axis (typically `jax.shard_map` over the mesh's "replica" axis with params, grads and state
    split over it; `jax.vmap(..., axis_name=...)` works too). All replicas must start from the
    same params (the official code averages the initial weights). `axis_name=None` means one
    replica (then n must be 1).

    Args:
      inner: the inner optimizer (the paper uses Adam; any Optax transformation, schedules
        included).
      sync_period: H, inner steps between outer steps (>= 1; the paper uses 50).
      outer_learning_rate: β > 0 (0.7 in the paper's configs).
      outer_momentum: α in [0, 1) (0.5 in the paper's configs).
      group_size: n, replicas averaged together (2 in the paper); must divide N.
      axis_name: the mapped axis the replicas live on, or None for one replica.
      num_replicas: N; None reads the size of `axis_name` when `update` is traced. If given it
        is checked against that size.
      num_pairings: P, distinct partitions precomputed before the schedule cycles (>= 1).

    Returns:
      An `optax.GradientTransformationExtraArgs` with `NoLoCoState`; `update` needs `params`
      and passes extra keyword arguments on to `inner`.

    Raises:
      ValueError: for sync_period < 1, β <= 0, α outside [0, 1), group_size < 1 or not dividing
        num_replicas, num_pairings < 1, or if `update` gets no params.

    Example (two replicas mapped with `jax.vmap`; `jax.shard_map` over a mesh axis works alike):

    >>> import jax, jax.numpy as jnp, optax
    >>> from efficient.optim import noloco
    >>> tx = noloco(optax.sgd(0.1), sync_period=2, group_size=2)
    >>> params = {"w": jnp.zeros((2, 3))}  # [replica, 3]
    >>> grads = {"w": jnp.array([[1.0] * 3, [3.0] * 3])}
    >>> state = jax.vmap(tx.init)(params)
    >>> step = jax.vmap(tx.update, axis_name="replica")
    >>> for _ in range(2):
    ...     updates, state = step(grads, state, params)
    ...     params = optax.apply_updates(params, updates)
    >>> print(params["w"][:, 0].round(3))  # θ = -0.2, -0.6; g = 0 - (-0.4); δ = -0.7 g
    [-0.28 -0.28]

    References:
      Kolehmainen et al., "NoLoCo: No-all-reduce Low Communication Optimizer for Model
      Training", arXiv:2506.10911 (2025); official code github.com/jkolehm/noloco.
      Douillard et al., "DiLoCo", arXiv:2311.08105 (2023).
    """
    check_outer(sync_period, outer_learning_rate, outer_momentum)
    if axis_name is not None and not isinstance(axis_name, str):
        raise ValueError(f"axis_name={axis_name!r}: must be a mesh axis name (str) or None.")
    if isinstance(num_pairings, bool) or not isinstance(num_pairings, numbers.Integral):
        raise ValueError(f"num_pairings={num_pairings!r}: must be an integer >= 1.")
    if num_pairings < 1:
        raise ValueError(f"num_pairings={num_pairings}: must be >= 1.")
    if axis_name is None:
        if num_replicas not in (None, 1):
            raise ValueError(
                f"num_replicas={num_replicas!r}: must be 1 (or None) without axis_name."
            )
        num_replicas = 1
    _check_group_size(group_size)
    if num_replicas is not None:
        _check_group(num_replicas, group_size)
    lr, mu = float(outer_learning_rate), float(outer_momentum)

    def replicas() -> int:
        if axis_name is None:
            return 1
        size = lax.axis_size(axis_name)
        if num_replicas is not None and size != num_replicas:
            raise ValueError(
                f"num_replicas={num_replicas}, but axis {axis_name!r} has {size} replicas."
            )
        _check_group(size, group_size)
        return size

    def sync(fast, slow, momentum, sync_index):
        mean_fast = group_mean(
            fast,
            axis_name=axis_name,
            num_replicas=replicas(),
            group_size=group_size,
            sync_period=sync_period,
            num_pairings=num_pairings,
            sync_index=sync_index,
            compute_dtype=compute_dtype,
        )
        # g_i = φ_i - mean_G θ_j; δ_i ← α δ_i - β g_i; φ_i ← φ_i + δ_i.
        new_momentum = jax.tree.map(
            lambda m, s, t: mu * m.astype(t.dtype) - lr * (s.astype(t.dtype) - t),
            momentum,
            slow,
            mean_fast,
        )
        new_slow = jax.tree.map(
            lambda s, d: (s.astype(d.dtype) + d).astype(s.dtype), slow, new_momentum
        )
        new_momentum = jax.tree.map(lambda d, m: d.astype(m.dtype), new_momentum, momentum)
        return new_slow, new_momentum

    return outer_transformation(
        inner, sync_period=sync_period, state_cls=NoLoCoState, sync_fn=sync, name="noloco"
    )
