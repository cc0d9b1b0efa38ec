"""NoLoCo's random replica groups, and their group mean by point-to-point collectives.

NoLoCo: No-all-reduce Low Communication Optimizer (Kolehmainen et al., arXiv:2506.10911, §3),
following the official code (github.com/jkolehm/noloco, `src/noloco/sparse_optimizer_c.py`).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Int


def pairings(num_replicas: int, group_size: int, step: int) -> Int[np.ndarray, "groups size"]:
    """The replica groups that average together at the sync after inner step `step`.

    A transcription of the official code: every replica draws the same permutation
    `np.random.default_rng(step + 1).permutation(num_replicas)`, and its `batched(perm, n)`
    deals it out round-robin, so group k holds perm[k], perm[k + N/n], perm[k + 2N/n], ...
    The official optimizer passes its inner-step counter, so the t-th sync (t = 0, 1, ...) uses
    `step = (t + 1) * sync_period`. The groups depend on nothing but the arguments: every replica
    computes the same partition without talking to the others.

    Args:
      num_replicas: N, the number of replicas.
      group_size: n, replicas per group; must divide N (n = 2 gives a random perfect matching).
      step: the seed (the inner-step count at the sync), >= 0.

    Returns:
      An int array [N / n, n]: row k lists the replica indices of group k, in the official
      code's order (its first entry is the group's root there).

    Raises:
      ValueError: if N < 1, n < 1, n does not divide N, or step < 0.
    """
    _check_group(num_replicas, group_size)
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step={step!r}: must be an integer >= 0.")
    perm = np.random.default_rng(int(step) + 1).permutation(num_replicas)
    # batched(perm, n): element i goes to group i % (N / n).
    return perm.reshape(group_size, num_replicas // group_size).T  # [N/n, n]


def _check_group_size(group_size) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
        raise ValueError(f"group_size={group_size!r}: must be an integer >= 1.")
    if group_size < 1:
        raise ValueError(f"group_size={group_size}: must be >= 1.")


def _check_group(num_replicas, group_size) -> None:
    _check_group_size(group_size)
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral):
        raise ValueError(f"num_replicas={num_replicas!r}: must be an integer >= 1.")
    if num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas}: must be >= 1.")
    if num_replicas % group_size:
        raise ValueError(
            f"group_size={group_size} must divide num_replicas={num_replicas} "
            "(every replica belongs to exactly one group)."
        )


@functools.cache
def _pairing_table(
    num_replicas: int, group_size: int, sync_period: int, num_pairings: int
) -> tuple[tuple[tuple[tuple[int, ...], ...], ...], np.ndarray]:
    """The distinct partitions among the first `num_pairings` syncs, and which one each sync uses.

    Returns (branches, branch_of): `branches[b]` is a partition (groups sorted, members sorted);
    sync t uses `branches[branch_of[t % num_pairings]]`. Identical partitions share one branch,
    so group_size == num_replicas compiles a single exchange.
    """
    branches: list[tuple[tuple[int, ...], ...]] = []
    branch_of = np.zeros(num_pairings, np.int32)
    for t in range(num_pairings):
        groups = pairings(num_replicas, group_size, (t + 1) * sync_period)
        canonical = tuple(sorted(tuple(sorted(int(r) for r in g)) for g in groups))
        if canonical not in branches:
            branches.append(canonical)
        branch_of[t] = branches.index(canonical)
    return tuple(branches), branch_of


def _ring_sum(tree, axis_name: str, groups: tuple[tuple[int, ...], ...], compute_dtype):
    """Sum of `tree` over each replica's group with n - 1 shifts around the group's ring.

    Shift r sends member j's value to member (j + r) mod n of the same group, so after shifts
    1..n-1 each replica has received every other member's value once. Values travel in their
    own dtype (bf16 stays bf16 on the wire) and are summed in `compute_dtype`.
    """
    total = jax.tree.map(lambda x: x.astype(compute_dtype(x.dtype)), tree)
    size = len(groups[0])
    for shift in range(1, size):
        perm = [(g[j], g[(j + shift) % size]) for g in groups for j in range(size)]
        received = lax.ppermute(tree, axis_name, perm)
        total = jax.tree.map(lambda t, x: t + x.astype(t.dtype), total, received)
    return total


def group_mean(
    tree,
    *,
    axis_name: str,
    num_replicas: int,
    group_size: int,
    sync_period: int,
    num_pairings: int,
    sync_index: jax.Array,
    compute_dtype,
):
    """Mean of `tree` over this replica's group at sync `sync_index`, by `lax.ppermute` only.

    Must run where `axis_name` is bound (inside `jax.shard_map`, `jax.vmap(axis_name=...)`).
    `lax.ppermute` needs a static permutation, so the partition is chosen with `lax.switch`
    among the precomputed ones; `sync_index` is the same on every replica (it derives from the
    step counter), so all replicas take the same branch and the permutes match up.
    """
    if group_size == 1:
        return jax.tree.map(lambda x: x.astype(compute_dtype(x.dtype)), tree)
    branches, branch_of = _pairing_table(num_replicas, group_size, sync_period, num_pairings)

    def branch(groups):
        total = _ring_sum(tree, axis_name, groups, compute_dtype)
        return jax.tree.map(lambda t: t / group_size, total)

    if len(branches) == 1:
        return branch(branches[0])
    index = jnp.asarray(branch_of)[sync_index % num_pairings]
    return lax.switch(index, [functools.partial(branch, g) for g in branches])
