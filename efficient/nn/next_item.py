"""Pieces the next-item recommenders share (TiM4Rec, SSD4Rec, SASRec): the batch checks, the
interest vector at each row's last real position, and full-ranking scores over the item table.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Float32, Int

from efficient.checks import as_array, check_range, concrete_values, validates_arguments

__all__ = ["check_inputs", "check_sequences", "item_scores", "last_position"]


@validates_arguments  # it is the check: its own messages name a bad argument
def check_inputs(
    items: Array,
    timestamps: Array,
    lengths: Array,
    *,
    max_len: int,
    exact: bool,
    num_items: int,
    time_aware: bool,
    train: bool,
) -> None:
    """Checks of a recommender batch: shapes and dtypes always; values (`check_sequences`) when
    the arrays are concrete, as in an eager `model.apply`. Under jit they are unknown, and the
    data pipelines check every batch they build.

    Args:
      items: int [B, T] item ids, left-aligned, 0 = padding.
      timestamps: float [B, T].
      lengths: int [B], the real positions of each row.
      max_len: the model's L.
      exact: T must equal L (else T <= L).
      num_items: the largest item id.
      time_aware: the model reads `timestamps` (their values are checked only then).
      train: the model's flag (True or False: a string "False" would turn dropout on).

    Raises:
      ValueError: naming the argument whose type, shape, dtype or value is wrong.
    """
    for name, x in (("items", items), ("timestamps", timestamps), ("lengths", lengths)):
        if not isinstance(x, jax.Array | np.ndarray):
            raise ValueError(f"{name}: {type(x).__name__}; expected a jax or numpy array.")
    if not isinstance(train, bool | np.bool_):
        raise ValueError(f"train={train!r}: expected True or False.")
    if items.ndim != 2 or not jnp.issubdtype(items.dtype, jnp.integer):
        raise ValueError(f"items: shape {items.shape}, dtype {items.dtype}; expected int [B, T].")
    B, T = items.shape
    if not 1 <= T <= max_len or (exact and max_len > T):
        allowed = f"exactly max_len={max_len} (pad to it)" if exact else f"1..max_len={max_len}"
        raise ValueError(f"items: {T} positions; expected {allowed}.")
    if timestamps.shape != (B, T) or not jnp.issubdtype(timestamps.dtype, jnp.floating):
        raise ValueError(
            f"timestamps: shape {timestamps.shape}, dtype {timestamps.dtype}; expected float "
            f"[B, T] = {[B, T]} like items."
        )
    if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"lengths: shape {lengths.shape}, dtype {lengths.dtype}; expected int [B] = {[B]}."
        )
    check_sequences(
        items, num_items=num_items, timestamps=timestamps if time_aware else None, lengths=lengths
    )


# Arguments unannotated on purpose: this function is the check, and its messages name the
# argument; run-time jaxtyping checks would pre-empt them with less specific errors.
def check_sequences(
    items,
    *,
    num_items: int,
    timestamps=None,
    lengths=None,
    targets=None,
) -> None:
    """Validates a batch of right-padded item sequences; raises a ValueError naming the argument.

    Shapes and dtypes are always checked; values only when the arrays are concrete (numpy, or
    jax arrays outside jit), since under jit they are not known.

    Args:
        items: int [B, T] item ids in 0..num_items, 0 = padding, non-zero ones first.
        num_items: the largest item id.
        timestamps: optional float [B, T], finite and non-decreasing within each sequence
            (over its first `lengths` positions, or its non-padding items).
        lengths: optional int [B] in 0..T; row b's first lengths[b] items are non-zero and
            the rest 0 (length 0 marks a padding row).
        targets: optional int [B] in 1..num_items (0 allowed on rows of length 0).

    Raises:
        ValueError: a shape, dtype or value is out of range.
    """
    items, timestamps, lengths, targets = (
        as_array(x) for x in (items, timestamps, lengths, targets)
    )
    if items.ndim != 2:
        raise ValueError(f"items: shape {np.shape(items)}, expected [B, T].")
    if not jnp.issubdtype(items.dtype, jnp.integer):
        raise ValueError(f"items: dtype {items.dtype}, expected an integer dtype.")
    B, T = items.shape
    if T == 0:
        raise ValueError(f"items: shape {items.shape}, expected at least one position (T >= 1).")
    for name, x, shape, kind in (
        ("timestamps", timestamps, (B, T), jnp.floating),
        ("lengths", lengths, (B,), jnp.integer),
        ("targets", targets, (B,), jnp.integer),
    ):
        if x is None:
            continue
        if tuple(np.shape(x)) != shape:
            raise ValueError(f"{name}: shape {tuple(np.shape(x))}, expected {list(shape)}.")
        if not jnp.issubdtype(x.dtype, kind):
            raise ValueError(f"{name}: dtype {x.dtype}, expected {kind.__name__}.")
    given = [x for x in (items, timestamps, lengths, targets) if x is not None]
    values = [concrete_values(x) for x in given]
    if any(v is None for v in values):
        return
    ids = values[0]
    check_range("items", ids, 0, num_items, "0 = padding, 1..num_items")
    if lengths is not None:
        n = concrete_values(lengths)
        check_range("lengths", n, 0, T, "0..T")
    else:
        n = np.where((ids == 0).any(1), np.argmax(ids == 0, axis=1), T)  # first padding
    inside = np.arange(T) < n[:, None]  # [B, T]
    bad = np.argwhere(inside != (ids != 0))
    if len(bad):
        b, t = bad[0]
        raise ValueError(
            f"items: row {b} has id {ids[b, t]} at position {t} with length {n[b]}; sequences "
            "are left-aligned, 1..num_items in the first `lengths` positions and 0 after them."
        )
    if timestamps is not None:
        ts = concrete_values(timestamps)
        if not np.isfinite(ts).all():
            raise ValueError("timestamps: expected finite values.")
        drops = np.argwhere((np.diff(ts, axis=1) < 0) & inside[:, 1:])
        if len(drops):
            b, t = drops[0]
            raise ValueError(
                f"timestamps: row {b} goes back in time at position {t + 1} ({ts[b, t]} -> "
                f"{ts[b, t + 1]}); each sequence must be non-decreasing (sorted by time)."
            )
    if targets is not None:
        y = concrete_values(targets)
        bad = np.flatnonzero(((y < 1) & (n > 0)) | (y < 0) | (y > num_items))
        if len(bad):
            raise ValueError(
                f"targets: {y[bad[0]]} in row {bad[0]} is outside 1..num_items = 1..{num_items}."
            )


def last_position(hidden: Float[Array, "B T D"], lengths: Int[Array, " B"]) -> Array:
    """hidden[b, lengths[b] - 1]: the interest vector (RecBole's `gather_indexes`). Rows of
    length 0 (batch padding) read position 0 instead of wrapping around."""
    last = jnp.clip(lengths - 1, 0, hidden.shape[1] - 1)
    return hidden[jnp.arange(hidden.shape[0]), last]  # [B, D]


def item_scores(
    hidden: Float[Array, "B D"], embedding: Float[Array, "V D"]
) -> Float32[Array, "B V"]:
    """Scores of every item id (tied embeddings, logits = h Eᵀ), in float32 whatever the
    compute dtype: bfloat16 scores tie often in a full ranking."""
    return jnp.einsum("BD,VD->BV", hidden.astype(jnp.float32), embedding.astype(jnp.float32))
