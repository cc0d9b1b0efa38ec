"""Writing new positions into a decoding cache (the 'cache' collection of the LM layers).

The attention, Hyena and LaCT layers keep what they need of the positions seen so far in
fixed-size arrays [B, S_max, ...] with a traced `cache_index`. A call that would write past
S_max cannot raise inside jit (the index is traced), and `lax.dynamic_update_slice` would clamp
the write onto the last slots — a plausible but wrong answer. So `write` raises where the shapes
alone show the overflow (more new positions than slots), and `poison_overflow` turns the layer's
output into NaN where only the index shows it, so an overflowing decode loop cannot go unnoticed.
"""

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int

__all__ = ["poison_overflow", "write"]


def write(cache: Array, update: Array, start: Int[Array, ""], *, layer: str) -> Array:
    """`cache` [B, S_max, ...] with `update` [B, T, ...] written at slots start..start+T-1.

    Raises:
        ValueError: T > S_max (names `layer` and both sizes).
    """
    slots, new = cache.shape[1], update.shape[1]
    if new > slots:
        raise ValueError(
            f"{layer}: {new} new positions do not fit its decoding cache of {slots} slots; "
            "size the cache for the prompt and every generated token (init_cache's max_len)"
        )
    zero = jnp.zeros((), jnp.int32)
    starts = (zero, start.astype(jnp.int32)) + (zero,) * (cache.ndim - 2)
    return lax.dynamic_update_slice(cache, update.astype(cache.dtype), starts)


def poison_overflow(y: Array, start: Int[Array, ""], new: int, slots: int) -> Array:
    """y, or NaN everywhere if positions start..start+new-1 ran past the cache's `slots`."""
    return jnp.where(start + new > slots, jnp.asarray(jnp.nan, y.dtype), y)
