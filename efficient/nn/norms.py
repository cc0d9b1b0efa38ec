"""Normalisation layers with PyTorch's defaults, float32 statistics and logical axis names.

Batch Normalization (arXiv:1502.03167 §3); Group Normalization (arXiv:1803.08494 §3);
Layer Normalization (arXiv:1607.06450 §3).

Why not `flax.linen`'s: its norms call `jnp.promote_types(dtype, float32)` and subtract float32
statistics from the raw input, which `jax_numpy_dtype_promotion="strict"` rejects for bf16, and
their defaults are not PyTorch's (eps 1e-6 for Group/LayerNorm). These keep Flax's variable names
('scale', 'bias'; 'batch_stats' 'mean', 'var'), normalise in float32 (at least) whatever the input
dtype, and return `dtype` (the input's dtype when None).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Float

# Norm scales and offsets are per channel and tiny: the 'norm' logical axis keeps them replicated.
_ONES = nn.with_logical_partitioning(initializers.ones, ("norm",))
_ZEROS = nn.with_logical_partitioning(initializers.zeros, ("norm",))
ZEROS_NORM = _ZEROS  # a zero scale init, for "zero the last gamma of a residual branch"
# Running statistics are per channel too; boxed like the scales so that every leaf of a model's
# variables names its axes (`efficient.sharding.logical_to_sharding` replicates them).
_STAT_ZEROS = nn.with_logical_partitioning(jnp.zeros, ("norm",))
_STAT_ONES = nn.with_logical_partitioning(jnp.ones, ("norm",))


def _upcast(x: Array) -> Array:
    return x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x


def _moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Mean and biased variance over `axes` (kept), two-pass for accuracy."""
    mean = jnp.mean(x, axes, keepdims=True)
    return mean, jnp.mean(jnp.square(x - mean), axes, keepdims=True)


class _Affine(nn.Module):
    """Shared tail: per-channel scale and bias, cast to the output dtype."""

    use_scale: bool = True
    use_bias: bool = True
    scale_init: initializers.Initializer = _ONES
    bias_init: initializers.Initializer = _ZEROS
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _affine(self, y: Array, like: Array) -> Array:
        shape = (1,) * (y.ndim - 1) + (y.shape[-1],)
        if self.use_scale:
            scale = self.param("scale", self.scale_init, (y.shape[-1],), self.param_dtype)
            y = y * _upcast(scale).reshape(shape)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (y.shape[-1],), self.param_dtype)
            y = y + _upcast(bias).reshape(shape)
        return y.astype(self.dtype or like.dtype)


class LayerNorm(_Affine):
    """LayerNorm over the last axis; eps 1e-5 as torch (ViT/DeiT pass 1e-6, as timm does).

    Attributes:
      epsilon: added to the variance.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Float[Array, "*B C"]) -> Float[Array, "*B C"]:
        x32 = _upcast(x)
        mean, var = _moments(x32, (x.ndim - 1,))
        return self._affine((x32 - mean) * lax.rsqrt(var + self.epsilon), x)


class GroupNorm(_Affine):
    """GroupNorm on channels-last input: per example, over all non-batch axes of each group.

    `num_groups=1` (the default here) is torch's `GroupNorm(1, C)`: statistics over H, W and C.

    Attributes:
      num_groups: G; it must divide the channels.
      epsilon: added to the variance (torch: 1e-5).
    """

    num_groups: int = 1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Float[Array, "B *S C"]) -> Float[Array, "B *S C"]:
        """Normalise `x`.

        Raises:
          ValueError: if `num_groups` does not divide the channels.
        """
        channels, groups = x.shape[-1], self.num_groups
        if channels % groups:
            raise ValueError(f"num_groups={groups} must divide the {channels} channels.")
        xg = _upcast(x).reshape(*x.shape[:-1], groups, channels // groups)  # [B, *S, G, C/G]
        mean, var = _moments(xg, (*range(1, xg.ndim - 2), xg.ndim - 1))
        y = ((xg - mean) * lax.rsqrt(var + self.epsilon)).reshape(x.shape)  # [B, *S, C]
        return self._affine(y, x)


class BatchNorm(_Affine):
    """BatchNorm over every axis but the last, with torch's momentum and running-variance rule.

    Training normalises with the batch's biased variance and updates the running variance with
    the unbiased one (n / (n - 1)), as `torch.nn.BatchNorm2d` does; momentum 0.9 here is torch's
    0.1. Running statistics live in the 'batch_stats' collection (float32) and are not updated
    while initialising. Under `jax.jit` with a sharded batch the means are global (XLA inserts
    the reduction), so no `axis_name` is needed.

    Attributes:
      use_running_average: normalise with the running statistics (eval) instead of the batch's.
      momentum: running = momentum * running + (1 - momentum) * batch.
      epsilon: added to the variance.
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(
        self, x: Float[Array, "*B C"], use_running_average: bool | None = None
    ) -> Float[Array, "*B C"]:
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", _STAT_ZEROS, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", _STAT_ONES, (channels,), jnp.float32)
        x32 = _upcast(x)
        shape = (1,) * (x.ndim - 1) + (channels,)
        if use_running_average:
            mean, var = ra_mean.value.reshape(shape), ra_var.value.reshape(shape)
        else:
            mean, var = _moments(x32, tuple(range(x.ndim - 1)))  # [1, ..., C] each
            if not self.is_initializing():
                n = x.size // channels
                unbiased = var.reshape(channels) * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean.reshape(channels)
                ra_var.value = m * ra_var.value + (1.0 - m) * unbiased
        y = (x32 - mean.astype(x32.dtype)) * lax.rsqrt(var.astype(x32.dtype) + self.epsilon)
        return self._affine(y, x)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale over the last axis, in float32 (Llama, Qwen2, Mamba-2).

    Root Mean Square Layer Normalization (arXiv:1910.07467 §4). No mean subtraction, no bias.

    Attributes:
      epsilon: added to the mean square (Qwen2: 1e-6; Llama 2: 1e-5).
      use_scale: learn a per-channel scale (initialised to ones).
      dtype: output dtype; None keeps the input's.
      param_dtype: parameter storage dtype.
    """

    epsilon: float = 1e-6
    use_scale: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "*B C"]) -> Float[Array, "*B C"]:
        x32 = _upcast(x)
        y = x32 * lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        if self.use_scale:
            scale = self.param("scale", _ONES, (x.shape[-1],), self.param_dtype)
            y = y * _upcast(scale).reshape((1,) * (x.ndim - 1) + (x.shape[-1],))
        return y.astype(self.dtype or x.dtype)
