"""The LaCT language model: the transformer's pre-norm block with the LaCT layer (sliding-window
attention + large-chunk test-time training) as the token mixer.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884) §5.2; the block and model
follow the released LM code (a1600012888/LaCT, lact_llm/lact_model/modeling_lact.py).
"""

import flax.linen as nn
from jaxtyping import Array, Float, Int

from efficient.models.lact.config import LaCTConfig
from efficient.models.lact.layer import LaCTLayer, _inits
from efficient.models.transformer.model import lm_head, token_embedding
from efficient.nn import GatedMlp, RMSNorm


class LaCTBlock(nn.Module):
    """x + LaCTLayer(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

    Attributes:
      config: the model configuration.
    """

    config: LaCTConfig

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
        kernel_init, out_init = _inits(c)
        y = RMSNorm(c.norm_eps, name="mixer_norm", **dtypes)(x)
        x = x + LaCTLayer(c, name="lact")(y, positions, decode)
        y = RMSNorm(c.norm_eps, name="mlp_norm", **dtypes)(x)
        y = GatedMlp(
            c.mlp_dim, kernel_init=kernel_init, out_kernel_init=out_init, name="mlp", **dtypes
        )(y)
        return x + y


class LaCT(nn.Module):
    """LaCT language model: tokens [B, T] -> next-token logits [B, T, V].

    Same calling convention as `efficient.models.transformer.Transformer`, so the language-model
    experiments train it and `efficient.models.transformer.generate` / `init_cache` decode it
    (see `LaCTLayer` for what decoding recomputes).

    Attributes:
      config: the model configuration.
    """

    config: LaCTConfig

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
            The attention window and the TTT chunks follow slot order whatever the positions.
          train: training mode (the model has no dropout; accepted for the trainer's protocol).
          decode: use and extend the layers' caches.

        Returns:
          Logits in the compute dtype.
        """
        del train  # no dropout or other train-only behaviour
        c = self.config
        embed = token_embedding(c)
        x = embed(tokens)  # [B, T, D]
        # static_argnums counts the module as argument 0: `decode` is argument 3.
        block = nn.remat(LaCTBlock, static_argnums=(3,)) if c.remat else LaCTBlock
        for i in range(c.num_layers):
            x = block(c, name=f"layer_{i}")(x, positions, decode)
        return lm_head(c, embed, x)
