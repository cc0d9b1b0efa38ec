"""Causal depthwise 1-D convolution over time (Mamba-2's short conv, Hyena's short filters).

Mamba: Linear-Time Sequence Modeling with Selective State Spaces (arXiv:2312.00752 §3.4);
Transformers are SSMs (Mamba-2, arXiv:2405.21060 §7).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Float


class CausalConv1d(nn.Module):
    """y[t, c] = sum_{j < W} kernel[j, c] * x[t - W + 1 + j, c] (+ bias[c]), zeros before t = 0.

    Written as W shifted multiply-adds rather than `lax.conv_general_dilated` with
    `feature_group_count=C`: for the short kernels these models use (W = 3..4) XLA fuses the
    adds into one elementwise loop on every backend, while a grouped convolution is slow on CPU
    and needs a layout change on GPU. The kernel layout [W, C] matches torch's Conv1d weight
    [C, 1, W] transposed.

    Attributes:
      kernel_size: W.
      use_bias: per-channel bias.
      channel_axis: logical axis name of the channels (e.g. 'embed', or 'mlp' for an inner width).
      kernel_init: initializer of the (unboxed) kernel [W, C].
      bias_init: initializer of the (unboxed) bias [C].
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    kernel_size: int
    use_bias: bool = True
    channel_axis: str = "embed"
    kernel_init: initializers.Initializer = initializers.lecun_normal()
    bias_init: initializers.Initializer = initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B T C"]) -> Float[Array, "B T C"]:
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size={self.kernel_size}: expected >= 1.")
        W, C = self.kernel_size, x.shape[-1]
        dtype = self.dtype or x.dtype
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, ("conv_width", self.channel_axis)),
            (W, C),
            self.param_dtype,
        ).astype(dtype)
        T = x.shape[1]
        padded = jnp.pad(x.astype(dtype), ((0, 0), (W - 1, 0), (0, 0)))  # [B, T + W - 1, C]
        y = sum(padded[:, j : j + T] * kernel[j][None, None, :] for j in range(W))  # [B, T, C]
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(self.bias_init, (self.channel_axis,)),
                (C,),
                self.param_dtype,
            )
            y = y + bias.astype(dtype)[None, None, :]
        return y


def torch_default_init(kernel_size: int) -> dict[str, initializers.Initializer]:
    """`kernel_init` and `bias_init` of torch's depthwise `nn.Conv1d` default.

    torch draws both from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = W for a depthwise
    conv (kaiming_uniform with a = sqrt(5) for the weight; std 1/sqrt(3 W)).
    """
    bound = 1.0 / kernel_size**0.5

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return dict(
        kernel_init=initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
        bias_init=bias_init,
    )
