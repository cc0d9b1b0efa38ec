"""Multi-head attention: grouped KV heads, RoPE, causal / sliding-window / padding masks, logit soft
cap, cross-attention and a fixed-size KV cache for decoding — one implementation for every model.

Attention Is All You Need (arXiv:1706.03762 §3.2); GQA (arXiv:2305.13245 §2); RoPE (RoFormer,
arXiv:2104.09864 §3.4); sliding-window attention (Mistral 7B, arXiv:2310.06825 §2); logit soft
capping (Gemma 2, arXiv:2408.00118 §2).
"""

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Bool, Float, Int

from efficient.nn import decode_cache
from efficient.nn.conv import TRUNC_NORMAL

Implementation = Literal["einsum", "jax"]


def dot_product_attention(
    query: Float[Array, "B T H K"],
    key: Float[Array, "B S G K"],
    value: Float[Array, "B S G K"],
    *,
    mask: Bool[Array, "#B #H #T S"] | None = None,
    logit_soft_cap: float | None = None,
    implementation: Implementation = "einsum",
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Float[Array, "B T H K"]:
    """softmax(q k^T / sqrt(K)) v per head, with float32 logits and softmax whatever the dtype.

    Grouped-query attention: the H query heads are split into G groups of H / G consecutive
    heads, and group g reads KV head g (G = H is plain multi-head attention, G = 1 multi-query).

    The "einsum" implementation is written out instead of calling `jax.nn.dot_product_attention`
    because that one's XLA path calls `promote_types(bf16, float32)` (rejected under
    `jax_numpy_dtype_promotion="strict"`) and has no soft cap. "jax" calls it (on GPU it can
    pick cuDNN's fused kernel): use it for speed where neither matters.

    Args:
      query: queries.
      key: keys, G heads; G must divide H.
      value: values, G heads.
      mask: True where query t may attend to key s (broadcast over batch and heads when those
        dimensions are 1); None attends everywhere. A query with no allowed key gets a uniform
        average (einsum) — callers should not build such rows.
      logit_soft_cap: c > 0 replaces the scaled logits l by c * tanh(l / c); None leaves them.
      implementation: "einsum" (default) or "jax" (`jax.nn.dot_product_attention`, no soft cap).
      dropout_rate: dropout on the attention probabilities (BERT, SASRec), applied when
        `dropout_rng` is given; einsum only.
      dropout_rng: the PRNG key of that dropout; None: no dropout (evaluation).

    Returns:
      The attention output, in the query's dtype.

    Raises:
      ValueError: G does not divide H, or the soft cap is not positive or is combined with "jax".
    """
    B, T, H, K = query.shape
    S, G = key.shape[1], key.shape[2]
    if H % G:
        raise ValueError(f"key has {G} heads, which must divide the query's {H} heads.")
    if logit_soft_cap is not None and logit_soft_cap <= 0:
        raise ValueError(f"logit_soft_cap={logit_soft_cap}: expected a positive float or None.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate}: expected a float in [0, 1).")
    dropout = dropout_rng is not None and dropout_rate > 0.0
    if implementation == "jax":
        if logit_soft_cap is not None:
            raise ValueError('logit_soft_cap is not supported with implementation="jax".')
        if dropout:
            raise ValueError('attention dropout is not supported with implementation="jax".')
        with jax.numpy_dtype_promotion("standard"):
            return jax.nn.dot_product_attention(query, key, value, mask=mask)
    if implementation != "einsum":
        raise ValueError(f"implementation={implementation!r}: expected 'einsum' or 'jax'.")

    q = query.reshape(B, T, G, H // G, K)  # [B, T, G, r, K]
    logits = jnp.einsum("BTGrK,BSGK->BGrTS", q, key, preferred_element_type=jnp.float32)
    logits = logits * K**-0.5  # [B, G, r, T, S]
    if logit_soft_cap is not None:
        logits = logit_soft_cap * jnp.tanh(logits / logit_soft_cap)
    if mask is not None:
        mB, mH, mT = mask.shape[:3]
        groups = (1, 1) if mH == 1 else (G, H // G)
        mask = mask.reshape(mB, *groups, mT, S)  # [#B, #G, #r, #T, S]
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, G, r, T, S]
    if dropout:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    weights = weights.astype(value.dtype)
    out = jnp.einsum("BGrTS,BSGK->BTGrK", weights, value, preferred_element_type=jnp.float32)
    return out.reshape(B, T, H, K).astype(query.dtype)  # [B, T, H, K]


def rope(
    x: Float[Array, "B T H K"], positions: Int[Array, "B T"], *, theta: float
) -> Float[Array, "B T H K"]:
    """Rotary position embedding in the rotate-half layout (Llama, Qwen2, GPT-NeoX).

    Dimension i < K/2 pairs with i + K/2; the pair at position p turns by p * theta^(-2i/K).
    Angles and the rotation run in float32 (positions reach 1e5+, where bf16 angles are useless).

    Args:
      x: queries or keys; K must be even.
      positions: absolute position of every token.
      theta: the base wavelength (10_000 in RoFormer and Llama 2, 1e6 in Qwen2).

    Returns:
      The rotated `x`, in its dtype.
    """
    K = x.shape[-1]
    if K % 2:
        raise ValueError(f"rope needs an even head_dim; got {K}.")
    inv_freq = theta ** (-jnp.arange(0, K // 2, dtype=jnp.float32) * (2.0 / K))  # [K/2]
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]  # [B, T, K/2]
    cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, K/2]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # [B, T, H, K/2] each
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # [B, T, H, K]
    return out.astype(x.dtype)


def attention_mask(
    query_positions: Int[Array, "B T"],
    key_positions: Int[Array, "B S"],
    *,
    causal: bool,
    sliding_window: int | None = None,
    key_mask: Bool[Array, "B S"] | None = None,
) -> Bool[Array, "B 1 T S"]:
    """Which keys each query may attend to, from positions.

    Args:
      query_positions: position of each query.
      key_positions: position of each key.
      causal: keys at later positions than the query are hidden.
      sliding_window: w keeps only keys with q - w < k (the w most recent positions, the query's
        own included, as flash-attention's window (w - 1, 0)); None keeps all.
      key_mask: False marks padding keys.

    Returns:
      The mask, broadcast over heads.
    """
    q = query_positions[:, :, None]  # [B, T, 1]
    k = key_positions[:, None, :]  # [B, 1, S]
    mask = jnp.ones((q.shape[0], q.shape[1], k.shape[2]), bool)  # [B, T, S]
    if causal:
        mask &= k <= q
    if sliding_window is not None:
        mask &= q - k < sliding_window
    if key_mask is not None:
        mask &= key_mask[:, None, :]
    return mask[:, None]  # [B, 1, T, S]


def head_projection(
    name: str,
    heads: int,
    head_dim: int,
    axis: str,
    *,
    use_bias: bool,
    kernel_init: initializers.Initializer,
    bias_init: initializers.Initializer = initializers.zeros,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> nn.DenseGeneral:
    """The Dense [D] -> [heads, head_dim] of a query / key / value projection, its kernel named
    ('embed', axis, 'head_dim'). Call it inside a compact method (the caller adopts it)."""
    return nn.DenseGeneral(
        (heads, head_dim),
        use_bias=use_bias,
        kernel_init=nn.with_logical_partitioning(kernel_init, ("embed", axis, "head_dim")),
        bias_init=nn.with_logical_partitioning(bias_init, (axis, "head_dim")),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def output_projection(
    features: int,
    *,
    use_bias: bool,
    kernel_init: initializers.Initializer,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    name: str = "out",
) -> nn.DenseGeneral:
    """The Dense [heads, head_dim] -> [features] that ends an attention layer."""
    return nn.DenseGeneral(
        features,
        axis=(-2, -1),
        use_bias=use_bias,
        kernel_init=nn.with_logical_partitioning(kernel_init, ("heads", "head_dim", "embed")),
        bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with separate q/k/v projections to [heads, head_dim] and an output
    Dense; optionally grouped KV heads, RoPE, causal / sliding-window masks, soft cap, KV cache.

    Projections stay separate (not one fused qkv kernel) so that each carries the
    ('embed', 'heads' | 'kv_heads', 'head_dim') axis names a Megatron-style split expects and so
    that checkpoints of other codebases map one-to-one.

    Self-attention (no `inputs_kv`): RoPE (if `rope_theta`) on q and k at `positions`, then the
    `causal` / `sliding_window` masks from those positions. Cross-attention (`inputs_kv` given):
    no RoPE and no causal mask; `kv_mask` marks the real (unpadded) context tokens.

    Decoding (`decode=True`, self-attention only): keys and values go to a fixed-size cache in the
    'cache' collection (`cached_key`, `cached_value` [B, S_max, G, K], `cache_index`), written
    at `cache_index` (T tokens at once: a prompt, then one per step). Cache slot s holds position
    s, and masks are computed on slots, so a cached step sees exactly what the full causal
    forward sees. Create the cache by `init` with `decode=True` on a [B, S_max, D] input (its
    contents are zeros and index 0); `efficient.models.transformer.init_cache` does that.

    Attributes:
      num_heads: H, query heads.
      head_dim: K.
      num_kv_heads: G, key/value heads (must divide H); None means H (plain multi-head).
      features: output width; None keeps the query width D.
      use_bias: biases on the query/key/value projections.
      out_bias: bias on the output projection; None follows `use_bias` (Qwen2: qkv yes, out no).
      rope_theta: RoPE base for self-attention; None disables RoPE.
      causal: causal mask for self-attention.
      sliding_window: w: self-attention sees only the w most recent positions; None: all.
      logit_soft_cap: c * tanh(logits / c) before the softmax; None: off.
      implementation: see `dot_product_attention`.
      dropout_rate: dropout on the attention probabilities when called with `deterministic=False`
        (needs a 'dropout' PRNG stream).
      kernel_init: initializer of the (unboxed) projection kernels.
      out_kernel_init: of the output kernel; None uses `kernel_init`.
      dtype: compute dtype; the logits and softmax run in float32 regardless.
      param_dtype: parameter storage dtype.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int | None = None
    features: int | None = None
    use_bias: bool = True
    out_bias: bool | None = None
    rope_theta: float | None = None
    causal: bool = False
    sliding_window: int | None = None
    logit_soft_cap: float | None = None
    implementation: Implementation = "einsum"
    dropout_rate: float = 0.0
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    out_kernel_init: initializers.Initializer | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _kv_heads(self) -> int:
        kv_heads = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        if kv_heads < 1 or self.num_heads % kv_heads:
            raise ValueError(
                f"num_kv_heads={self.num_kv_heads}: must be a positive divisor of "
                f"num_heads={self.num_heads}."
            )
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window}: expected >= 1 or None.")
        return kv_heads

    @nn.compact
    def __call__(
        self,
        inputs_q: Float[Array, "B T D"],
        inputs_kv: Float[Array, "B S E"] | None = None,
        *,
        positions: Int[Array, "B T"] | None = None,
        mask: Bool[Array, "#B #H #T _S"] | None = None,
        kv_mask: Bool[Array, "B S"] | None = None,
        decode: bool = False,
        deterministic: bool = True,
    ) -> Float[Array, "B T _F"]:
        """Attend from `inputs_q` to `inputs_kv` (default: to itself).

        Args:
          inputs_q: queries' source.
          inputs_kv: keys' and values' source (cross-attention); None for self-attention.
          positions: positions of the queries for RoPE and the masks (self-attention); None
            means 0..T-1, or cache_index..cache_index+T-1 when decoding.
          mask: an extra mask, True where a query may attend to a key, and-ed with the others.
          kv_mask: False marks padding tokens of `inputs_kv` (cross-attention).
          decode: use and update the KV cache (self-attention only).
          deterministic: False applies `dropout_rate` to the attention probabilities.

        Returns:
          [B, T, features].
        """
        kv_heads = self._kv_heads()
        B, T, _ = inputs_q.shape
        features = inputs_q.shape[-1] if self.features is None else self.features
        cross = inputs_kv is not None
        if cross and decode:
            raise ValueError("decode=True is for self-attention; pass inputs_kv=None.")
        if kv_mask is not None and not cross:
            raise ValueError("kv_mask is for cross-attention; use mask for self-attention.")

        def project(name: str, x: Array, heads: int, axis: str) -> Array:
            return head_projection(
                name,
                heads,
                self.head_dim,
                axis,
                use_bias=self.use_bias,
                kernel_init=self.kernel_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )(x)

        source = inputs_kv if cross else inputs_q
        q = project("query", inputs_q, self.num_heads, "heads")  # [B, T, H, K]
        k = project("key", source, kv_heads, "kv_heads")  # [B, S, G, K]
        v = project("value", source, kv_heads, "kv_heads")  # [B, S, G, K]

        if cross:
            attn_mask = None if kv_mask is None else kv_mask[:, None, None, :]  # [B, 1, 1, S]
        else:
            if decode:
                k, v, positions, query_slots, key_slots = self._update_cache(k, v, positions)
            else:
                if positions is None:
                    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
                if self.rope_theta is not None:
                    k = rope(k, positions, theta=self.rope_theta)
                query_slots = key_slots = positions
            if self.rope_theta is not None:
                q = rope(q, positions, theta=self.rope_theta)
            attn_mask = attention_mask(
                query_slots, key_slots, causal=self.causal, sliding_window=self.sliding_window
            )  # [B, 1, T, S]
            if decode:
                # Slots past the last one written hold zeros, not keys.
                written = key_slots < query_slots[:, -1:] + 1  # [B, S]
                attn_mask &= written[:, None, None, :]
        if mask is not None:
            attn_mask = mask if attn_mask is None else attn_mask & mask
        x = dot_product_attention(
            q,
            k,
            v,
            mask=attn_mask,
            logit_soft_cap=self.logit_soft_cap,
            implementation=self.implementation,
            dropout_rate=self.dropout_rate,
            dropout_rng=None
            if deterministic or self.dropout_rate == 0.0
            else self.make_rng("dropout"),
        )  # [B, T, H, K]
        if decode:  # NaN if this call ran past the cache (query_slots[:, 0] is the cache index)
            x = decode_cache.poison_overflow(x, query_slots[0, 0], T, key_slots.shape[1])
        out_bias = self.use_bias if self.out_bias is None else self.out_bias
        return output_projection(
            features,
            use_bias=out_bias,
            kernel_init=self.out_kernel_init or self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )(x)  # [B, T, F]

    def _update_cache(self, k: Array, v: Array, positions: Array | None):
        """Write T new keys/values at the cache index.

        Keys are stored after RoPE so that each is rotated once, at its own position.

        Returns:
          (all cached keys [B, S, G, K], all cached values, the queries' positions [B, T],
          the queries' cache slots [B, T], every cache slot [B, S]).
        """
        B, T, G, K = k.shape
        initialized = self.has_variable("cache", "cached_key")
        # At init the input is [B, S_max, D]: it sizes the cache, and nothing is written.
        cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        start = cache_index.value
        if positions is None:
            positions = start + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        if self.rope_theta is not None:
            k = rope(k, positions, theta=self.rope_theta)
        S = cached_key.value.shape[1]
        if initialized:
            layer = f"attention {self.name!r}"
            cached_key.value = decode_cache.write(cached_key.value, k, start, layer=layer)
            cached_value.value = decode_cache.write(cached_value.value, v, start, layer=layer)
            cache_index.value = start + T
        slots = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))  # [B, S]
        # Masks compare slots with the queries' slots (start + t), not with `positions`, so that
        # custom positions move only RoPE.
        query_slots = start + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        return cached_key.value, cached_value.value, positions, query_slots, slots
