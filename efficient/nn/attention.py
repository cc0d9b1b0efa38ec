"""Multi-head scaled dot-product attention (bidirectional; self- or cross-attention).

Attention Is All You Need (arXiv:1706.03762 §3.2.2).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Bool, Float

from efficient.nn.conv import TRUNC_NORMAL


def dot_product_attention(
    query: Float[Array, "B T H K"],
    key: Float[Array, "B S H K"],
    value: Float[Array, "B S H K"],
    *,
    mask: Bool[Array, "#B #H T S"] | None = None,
) -> Float[Array, "B T H K"]:
    """softmax(q k^T / sqrt(K)) v per head, with float32 logits and softmax whatever the dtype.

    Written out instead of calling `jax.nn.dot_product_attention`, whose XLA path calls
    `promote_types(bf16, float32)` and so fails under `jax_numpy_dtype_promotion="strict"`.

    Args:
      query: queries.
      key: keys.
      value: values.
      mask: True where query t may attend to key s; None attends everywhere.

    Returns:
      The attention output, in the query's dtype.
    """
    scale = query.shape[-1] ** -0.5
    logits = jnp.einsum("BTHK,BSHK->BHTS", query, key, preferred_element_type=jnp.float32)
    logits = logits * scale  # [B, H, T, S]
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)  # [B, H, T, S]
    out = jnp.einsum("BHTS,BSHK->BTHK", weights, value, preferred_element_type=jnp.float32)
    return out.astype(query.dtype)  # [B, T, H, K]


class MultiHeadAttention(nn.Module):
    """Separate q/k/v projections to [heads, head_dim], softmax(q k^T / sqrt(K)) v, output Dense.

    Projections are kept separate (not one fused qkv kernel) so that each carries the
    ('embed', 'heads', 'head_dim') axis names a Megatron-style split expects, and so that k/v can
    later take a different head count (grouped-query attention) without reshaping checkpoints.

    Attributes:
      num_heads: H.
      head_dim: K.
      features: output width; None keeps the query width D.
      use_bias: biases on all four projections (ViT/DeiT have them).
      kernel_init: initializer of the (unboxed) kernels.
      dtype: compute dtype; the attention logits and softmax run in float32 regardless.
      param_dtype: parameter storage dtype.
    """

    num_heads: int
    head_dim: int
    features: int | None = None
    use_bias: bool = True
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs_q: Float[Array, "B T D"],
        inputs_kv: Float[Array, "B S E"] | None = None,
        *,
        mask: Bool[Array, "#B #H T S"] | None = None,
    ) -> Float[Array, "B T _F"]:
        """Attend from `inputs_q` to `inputs_kv` (default: to itself).

        Args:
          inputs_q: queries' source.
          inputs_kv: keys' and values' source; None for self-attention.
          mask: True where a query may attend to a key; None attends everywhere.

        Returns:
          [B, T, features].
        """
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        features = inputs_q.shape[-1] if self.features is None else self.features

        def project(name: str, x: Array) -> Array:
            return nn.DenseGeneral(
                (self.num_heads, self.head_dim),
                use_bias=self.use_bias,
                kernel_init=nn.with_logical_partitioning(
                    self.kernel_init, ("embed", "heads", "head_dim")
                ),
                bias_init=nn.with_logical_partitioning(initializers.zeros, ("heads", "head_dim")),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )(x)

        q = project("query", inputs_q)  # [B, T, H, K]
        k = project("key", inputs_kv)  # [B, S, H, K]
        v = project("value", inputs_kv)  # [B, S, H, K]
        x = dot_product_attention(q, k, v, mask=mask)  # [B, T, H, K]
        return nn.DenseGeneral(
            features,
            axis=(-2, -1),
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(
                self.kernel_init, ("heads", "head_dim", "embed")
            ),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)  # [B, T, F]
