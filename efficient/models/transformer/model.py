"""The reference decoder-only transformer (Llama / Qwen2 layout) that the LM papers build on.

Llama 2 (arXiv:2307.09288 §2.2); Qwen2 Technical Report (arXiv:2407.10671 §2.2).
"""

import math
from typing import Any

import flax.linen as nn
from jax.nn import initializers
from jaxtyping import Array, Float, Int

from efficient.models.transformer.config import TransformerConfig
from efficient.nn import GatedMlp, MultiHeadAttention, RMSNorm


def residual_inits(
    config: TransformerConfig,
) -> tuple[initializers.Initializer, initializers.Initializer]:
    """(kernel init, init of the projections that end a residual branch)."""
    std = config.init_std
    out_std = std / math.sqrt(2 * config.num_layers) if config.scale_residual_init else std
    return initializers.normal(std), initializers.normal(out_std)


def token_embedding(config: Any) -> nn.Embed:
    """The token embedding `embed` [V, D] of a decoder LM (N(0, init_std), axes ('vocab',
    'embed')); `config` needs vocab_size, features, init_std, dtype, param_dtype. Call it inside
    a compact method (the caller adopts it)."""
    return nn.Embed(
        config.vocab_size,
        config.features,
        embedding_init=nn.with_logical_partitioning(
            initializers.normal(config.init_std), ("vocab", "embed")
        ),
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        name="embed",
    )


def lm_head(config: Any, embed: nn.Embed, x: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
    """`final_norm` (RMSNorm) then the logits: the transposed embedding when
    `config.tie_embeddings`, else an untied `head` Dense [D, V] without bias."""
    c = config
    x = RMSNorm(c.norm_eps, name="final_norm", dtype=c.dtype, param_dtype=c.param_dtype)(x)
    if c.tie_embeddings:
        return embed.attend(x)  # [B, T, V]
    return nn.Dense(
        c.vocab_size,
        use_bias=False,
        kernel_init=nn.with_logical_partitioning(
            initializers.normal(c.init_std), ("embed", "vocab")
        ),
        dtype=c.dtype,
        param_dtype=c.param_dtype,
        name="head",
    )(x)  # [B, T, V]


class DecoderBlock(nn.Module):
    """x + Attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

    Attributes:
      config: the model configuration.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        positions: Int[Array, "B T"] | None = None,
        decode: bool = False,
    ) -> Float[Array, "B T D"]:
        # Positional arguments so that `nn.remat(..., static_argnums=(3,))` can mark `decode`.
        c = self.config
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        kernel_init, out_init = residual_inits(c)
        y = RMSNorm(c.norm_eps, name="attention_norm", **dtypes)(x)
        y = MultiHeadAttention(
            num_heads=c.num_heads,
            head_dim=c.resolved_head_dim,
            num_kv_heads=c.kv_heads,
            use_bias=c.qkv_bias,
            out_bias=False,
            rope_theta=c.rope_theta,
            causal=True,
            sliding_window=c.sliding_window,
            logit_soft_cap=c.logit_soft_cap,
            implementation=c.attention_implementation,
            kernel_init=kernel_init,
            out_kernel_init=out_init,
            name="attention",
            **dtypes,
        )(y, positions=positions, decode=decode)
        x = x + y
        y = RMSNorm(c.norm_eps, name="mlp_norm", **dtypes)(x)
        y = GatedMlp(
            c.mlp_dim, kernel_init=kernel_init, out_kernel_init=out_init, name="mlp", **dtypes
        )(y)
        return x + y


class Transformer(nn.Module):
    """Decoder-only language model: tokens [B, T] -> next-token logits [B, T, V].

    With `decode=True` every attention layer reads and extends its KV cache (the 'cache'
    collection; see `efficient.models.transformer.init_cache` and `generate`), so a prompt can be
    fed at once and then one token per call.

    Attributes:
      config: the model configuration.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        tokens: Int[Array, "B T"],
        *,
        positions: Int[Array, "B T"] | None = None,
        train: bool = False,
        decode: bool = False,
    ) -> Float[Array, "B T V"]:
        """Logits of the next token at every position.

        Args:
          tokens: token ids in [0, vocab_size).
          positions: RoPE positions; None means 0..T-1 (or continuing the cache when decoding).
          train: training mode (the model has no dropout; accepted for the trainer's protocol).
          decode: use and extend the KV cache.

        Returns:
          Logits in the compute dtype.
        """
        del train  # no dropout or other train-only behaviour
        c = self.config
        embed = token_embedding(c)
        x = embed(tokens)  # [B, T, D]
        # static_argnums counts the module as argument 0: `decode` is argument 3.
        block = nn.remat(DecoderBlock, static_argnums=(3,)) if c.remat else DecoderBlock
        for i in range(c.num_layers):
            x = block(c, name=f"layer_{i}")(x, positions, decode)
        return lm_head(c, embed, x)
