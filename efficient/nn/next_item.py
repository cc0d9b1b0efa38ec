"""Pieces the next-item recommenders share (TiM4Rec, SSD4Rec, SASRec): the batch checks, the
interest vector at each row's last real position, and full-ranking scores over the item table.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float, Float32, Int

__all__ = ["check_inputs", "item_scores", "last_position"]


def check_inputs(
    items: Array, timestamps: Array, lengths: Array, *, max_len: int, exact: bool
) -> None:
    """Shape and dtype checks of a recommender batch. Values cannot be checked under jit: the
    data side checks them (`efficient.data.ranking.check_sequences`, on every batch it builds;
    models do not import it).

    Args:
      items: int [B, T] item ids, left-aligned, 0 = padding.
      timestamps: float [B, T].
      lengths: int [B], the real positions of each row.
      max_len: the model's L.
      exact: T must equal L (else T <= L).

    Raises:
      ValueError: naming the argument whose shape or dtype is wrong.
    """
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
