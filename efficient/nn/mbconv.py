"""Inverted-residual conv blocks: MBConv and FusedMBConv (no residual inside; callers add it).

MobileNetV2: Inverted Residuals and Linear Bottlenecks (arXiv:1801.04381 §3.3);
EfficientNetV2: Smaller Models and Faster Training (arXiv:2104.00298 §3.2, Fused-MBConv).
Layer names follow EfficientViT/LowFormer (`spatial_conv`, `point_conv`, ...): weights port by name.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from efficient.nn.conv import ConvBN


class FusedMBConv(nn.Module):
    """k x k conv (C -> eC, stride s) + BN + act, then 1x1 conv (eC -> features) + BN.

    Attributes:
      features: output channels.
      expand_ratio: e; the hidden width is `round(C * e)` as in the PyTorch code.
      kernel_size: of the spatial conv.
      strides: of the spatial conv.
      use_bias: (spatial conv, point conv) biases; LowFormer's local block has (True, False).
      activation: after the spatial conv.
      fold_bn: BatchNorm-folded (inference) form, see `ConvBN`.
      zero_init_last: zero the last BatchNorm scale (the block is a residual branch).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    features: int
    expand_ratio: float = 4.0
    kernel_size: int = 3
    strides: int = 1
    use_bias: tuple[bool, bool] = (False, False)
    activation: Callable[[Array], Array] = jax.nn.hard_swish
    fold_bn: bool = False
    zero_init_last: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], *, train: bool) -> Float[Array, "B h w F"]:
        common = dict(fold_bn=self.fold_bn, dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = round(x.shape[-1] * self.expand_ratio)
        x = ConvBN(
            hidden,
            self.kernel_size,
            strides=self.strides,
            use_bias=self.use_bias[0],
            activation=self.activation,
            name="spatial_conv",
            **common,
        )(x, train=train)
        return ConvBN(
            self.features,
            1,
            use_bias=self.use_bias[1],
            zero_init_norm=self.zero_init_last,
            name="point_conv",
            **common,
        )(x, train=train)


class MBConv(nn.Module):
    """1x1 expand (bias) + act, depthwise k x k (bias) + act, 1x1 project + BN.

    The first two convs have a bias and no norm, as in EfficientViT/LowFormer's local block.

    Attributes:
      features: output channels.
      expand_ratio: e; the hidden width is `round(C * e)`.
      kernel_size: of the depthwise conv.
      strides: of the depthwise conv.
      activation: after the expand and depthwise convs.
      fold_bn: BatchNorm-folded (inference) form, see `ConvBN`.
      zero_init_last: zero the last BatchNorm scale (the block is a residual branch).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    features: int
    expand_ratio: float = 4.0
    kernel_size: int = 3
    strides: int = 1
    activation: Callable[[Array], Array] = jax.nn.hard_swish
    fold_bn: bool = False
    zero_init_last: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], *, train: bool) -> Float[Array, "B h w F"]:
        common = dict(fold_bn=self.fold_bn, dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = round(x.shape[-1] * self.expand_ratio)
        x = ConvBN(
            hidden,
            1,
            use_bias=True,
            use_norm=False,
            activation=self.activation,
            name="inverted_conv",
            **common,
        )(x, train=train)
        x = ConvBN(
            hidden,
            self.kernel_size,
            strides=self.strides,
            feature_group_count=hidden,
            use_bias=True,
            use_norm=False,
            activation=self.activation,
            name="depth_conv",
            **common,
        )(x, train=train)
        return ConvBN(
            self.features,
            1,
            zero_init_norm=self.zero_init_last,
            name="point_conv",
            **common,
        )(x, train=train)
