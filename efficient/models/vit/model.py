"""Vision Transformer: patch tokens + class token, pre-LN transformer blocks, linear head.

An Image is Worth 16x16 Words (arXiv:2010.11929 §3.1, Eq. 1-4), with the training-time
stochastic depth of DeiT's recipe (arXiv:2012.12877). Matches timm's `VisionTransformer` (class
token, learned position embedding, LayerNorm eps 1e-6, exact GELU): the plain-ViT baseline.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from efficient.models.vit.config import ViTConfig
from efficient.nn import TRUNC_NORMAL, DropPath, LayerNorm, Mlp, MultiHeadAttention, PatchEmbed


class ViTBlock(nn.Module):
    """x += DropPath(MHA(LN(x))); x += DropPath(MLP(LN(x))).

    Attributes:
      num_heads: attention heads.
      head_dim: per-head width.
      mlp_dim: MLP hidden width.
      layer_norm_eps: LayerNorm epsilon.
      drop_path_rate: stochastic-depth rate of both branches.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
      mlp: the feed-forward sub-module, unbound (`parent=None`; it is adopted under the name
        "mlp"); None: `Mlp(mlp_dim)` with exact GELU. KAT passes a GR-KAN block here.
    """

    num_heads: int
    head_dim: int
    mlp_dim: int
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32
    mlp: nn.Module | None = None

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"], *, train: bool) -> Float[Array, "B T D"]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = LayerNorm(epsilon=self.layer_norm_eps, name="norm1", **dtypes)(x)
        y = MultiHeadAttention(self.num_heads, self.head_dim, name="attention", **dtypes)(y)
        x = x + DropPath(self.drop_path_rate)(y, deterministic=not train)
        y = LayerNorm(epsilon=self.layer_norm_eps, name="norm2", **dtypes)(x)
        mlp = Mlp(self.mlp_dim, name="mlp", **dtypes) if self.mlp is None else self.mlp
        y = mlp(y)
        return x + DropPath(self.drop_path_rate)(y, deterministic=not train)


class ViT(nn.Module):
    """ViT/DeiT image classifier. Drop path draws from the 'dropout' RNG when training.

    Variants that only change the feed-forward block (KAT) subclass it and override `block_mlp`.

    Attributes:
      config: the architecture (see `ViTConfig` and its presets).
    """

    config: ViTConfig

    def block_mlp(self) -> nn.Module | None:
        """The feed-forward module of one block, unbound (`parent=None`); None: the GELU `Mlp`."""
        return None

    @nn.compact
    def __call__(
        self, images: Float[Array, "B H W C"], *, train: bool, features_only: bool = False
    ) -> Float[Array, "B classes"] | Float[Array, "B N D"]:
        """Class logits (in `config.dtype`) of channels-last `images`.

        With `features_only`, the patch tokens after the final LayerNorm instead, [B, N, D] in
        row-major patch order (the class token dropped; no head parameters are created): the
        feature map a multimodal model reads, as LLaVA reads its vision tower's patch features.

        Raises:
          ValueError: if `images` is not [B, image_size, image_size, in_channels].
        """
        cfg = self.config
        expected = (cfg.image_size, cfg.image_size, cfg.in_channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"images must be [B, {cfg.image_size}, {cfg.image_size}, {cfg.in_channels}] "
                f"(the position embedding is learned for that size), got {images.shape}."
            )
        dtypes = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        x = PatchEmbed(cfg.features, cfg.patch_size, name="patch_embed", **dtypes)(images)
        batch, features = x.shape[0], cfg.features
        cls_token = self.param(
            "cls_token",
            nn.with_logical_partitioning(TRUNC_NORMAL, (None, None, "embed")),
            (1, 1, features),
            cfg.param_dtype,
        )
        pos_embed = self.param(
            "pos_embed",
            nn.with_logical_partitioning(TRUNC_NORMAL, (None, "seq", "embed")),
            (1, cfg.num_patches + 1, features),
            cfg.param_dtype,
        )
        cls_token = jnp.broadcast_to(cls_token.astype(x.dtype), (batch, 1, features))
        x = jnp.concatenate([cls_token, x], axis=1) + pos_embed.astype(x.dtype)  # [B, T+1, D]
        for i in range(cfg.num_layers):
            # DeiT/timm: the rate grows linearly from 0 (first block) to drop_path_rate (last).
            rate = cfg.drop_path_rate * i / max(cfg.num_layers - 1, 1)
            x = ViTBlock(
                cfg.num_heads,
                cfg.head_dim,
                cfg.mlp_dim,
                layer_norm_eps=cfg.layer_norm_eps,
                drop_path_rate=rate,
                mlp=self.block_mlp(),
                name=f"blocks_{i}",
                **dtypes,
            )(x, train=train)
        x = LayerNorm(epsilon=cfg.layer_norm_eps, name="norm", **dtypes)(x)
        if features_only:
            return x[:, 1:]  # [B, N, D]
        return nn.Dense(
            cfg.num_classes,
            kernel_init=nn.with_logical_partitioning(TRUNC_NORMAL, ("embed", "classes")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("classes",)),
            name="head",
            **dtypes,
        )(x[:, 0])  # [B, classes]
