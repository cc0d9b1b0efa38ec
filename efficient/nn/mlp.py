"""The transformer feed-forward block: Dense -> activation (exact GELU by default) -> Dense.

Attention Is All You Need (arXiv:1706.03762 §3.3); GELU (arXiv:1606.08415 §2). On channels-last
feature maps it is also the 1x1-conv MLP of conv-transformers (LowFormer, arXiv:2409.03460).
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.nn.conv import TRUNC_NORMAL

# PyTorch's nn.GELU() is the exact erf form; Flax's nn.gelu defaults to the tanh approximation.
gelu_exact = functools.partial(jax.nn.gelu, approximate=False)


class Mlp(nn.Module):
    """Dense(D -> mlp_dim) + activation + Dense(mlp_dim -> features) over the last axis.

    Attributes:
      mlp_dim: hidden width F.
      features: output width; None keeps the input width D.
      use_bias: biases on both Dense layers.
      activation: between the two layers (exact GELU by default).
      kernel_init: initializer of the (unboxed) kernels.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    mlp_dim: int
    features: int | None = None
    use_bias: bool = True
    activation: Callable[[Array], Array] = gelu_exact
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "*B D"]) -> Float[Array, "*B _F"]:
        features = x.shape[-1] if self.features is None else self.features
        common = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        # Megatron split: the hidden dimension is the one sharded over 'tensor' in both layers,
        # so the pair needs one all-reduce at the end and none in between.
        x = nn.Dense(
            self.mlp_dim,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("mlp",)),
            name="fc1",
            **common,
        )(x)
        x = self.activation(x)
        return nn.Dense(
            features,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            name="fc2",
            **common,
        )(x)


class GatedMlp(nn.Module):
    """down(activation(gate(x)) * up(x)): SwiGLU with the default SiLU (Llama, Qwen2, LaCT).

    GLU Variants Improve Transformer (arXiv:2002.05202 §2). Three bias-free Dense layers named
    'gate', 'up', 'down' as in the Llama/Qwen2 checkpoints.

    Attributes:
      mlp_dim: hidden width F.
      features: output width; None keeps the input width D.
      use_bias: biases on the three Dense layers (off in Llama/Qwen2).
      activation: applied to the gate (SiLU: SwiGLU; GELU: GeGLU).
      kernel_init: initializer of the (unboxed) kernels.
      out_kernel_init: of the 'down' kernel; None uses `kernel_init`.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    mlp_dim: int
    features: int | None = None
    use_bias: bool = False
    activation: Callable[[Array], Array] = jax.nn.silu
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    out_kernel_init: initializers.Initializer | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "*B D"]) -> Float[Array, "*B _F"]:
        features = x.shape[-1] if self.features is None else self.features
        common = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)

        def dense(name, width, init, axes):
            return nn.Dense(
                width,
                kernel_init=nn.with_logical_partitioning(init, axes),
                bias_init=nn.with_logical_partitioning(initializers.zeros, axes[1:]),
                name=name,
                **common,
            )

        gate = dense("gate", self.mlp_dim, self.kernel_init, ("embed", "mlp"))(x)  # [*B, F]
        up = dense("up", self.mlp_dim, self.kernel_init, ("embed", "mlp"))(x)  # [*B, F]
        down_init = self.out_kernel_init or self.kernel_init
        return dense("down", features, down_init, ("mlp", "embed"))(self.activation(gate) * up)
