"""ViT / DeiT configuration and presets.

Training data-efficient image transformers & distillation through attention (DeiT,
arXiv:2012.12877, Table 1); the architecture is ViT's (arXiv:2010.11929 §3.1).
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from efficient.checks import (
    check_field_types,
    check_float_dtypes,
    check_positive,
    check_positive_ints,
    validates_arguments,
)


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """A plain ViT classifier: patch embedding, class token, learned position embedding, pre-LN
    transformer blocks, final LayerNorm, linear head on the class token.

    Attributes:
      image_size: square input size; the position embedding is learned for exactly this size.
      patch_size: p; it must divide `image_size`.
      in_channels: image channels.
      num_classes: classifier outputs.
      features: model width D.
      num_layers: transformer blocks.
      num_heads: attention heads; `head_dim = features // num_heads`.
      mlp_dim: MLP hidden width F.
      layer_norm_eps: 1e-6 as in DeiT/timm (not torch's default 1e-5).
      drop_path_rate: maximum stochastic-depth rate, linear over the blocks (DeiT: 0.1).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    features: int = 192
    num_layers: int = 12
    num_heads: int = 3
    mlp_dim: int = 768
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        check_positive_ints(self, (
            "image_size", "patch_size", "in_channels", "num_classes", "features", "num_layers",
            "num_heads", "mlp_dim",
        ))  # fmt: skip
        check_positive(self, ("layer_norm_eps",))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} must divide image_size={self.image_size}."
            )
        if self.features % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide features={self.features}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate}: must be in [0, 1).")

    @property
    def head_dim(self) -> int:
        return self.features // self.num_heads

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def deit_tiny(cls) -> "ViTConfig":
        """DeiT-Ti (Table 1): D 192, 12 layers, 3 heads, 5M params (5,717,416), 72.2% top-1."""
        return cls(features=192, num_layers=12, num_heads=3, mlp_dim=768, drop_path_rate=0.1)

    @classmethod
    def deit_small(cls) -> "ViTConfig":
        """DeiT-S (Table 1): D 384, 12 layers, 6 heads, 22M params (22,050,664), 79.8% top-1."""
        return cls(features=384, num_layers=12, num_heads=6, mlp_dim=1536, drop_path_rate=0.1)

    @classmethod
    def smoke(cls) -> "ViTConfig":
        """A tiny ViT for CPU tests: 32x32x3 inputs, patch 8 (16 tokens), D 32, 2 layers."""
        return cls(
            image_size=32,
            patch_size=8,
            num_classes=10,
            features=32,
            num_layers=2,
            num_heads=2,
            mlp_dim=64,
        )
