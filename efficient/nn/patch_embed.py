"""Patch embedding: non-overlapping p x p patches -> a linear projection per patch (a strided conv).

An Image is Worth 16x16 Words (arXiv:2010.11929 §3.1).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.nn.conv import TRUNC_NORMAL, conv_general_dilated


class PatchEmbed(nn.Module):
    """[B, H, W, C] images -> [B, (H/p)(W/p), D] tokens in row-major patch order.

    Attributes:
      features: D.
      patch_size: p; it must divide H and W.
      kernel_init: initializer of the (unboxed) kernel.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    features: int
    patch_size: int
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Float[Array, "B H W C"]) -> Float[Array, "B T D"]:
        """Embed the patches of `images`.

        Raises:
          ValueError: if `patch_size` does not divide the image height and width.
        """
        _, height, width, _ = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"patch_size={p} must divide the image size, got {height}x{width}.")
        # The input channels (3 or 1) are too few to shard; the output is the model width.
        names = ("conv_height", "conv_width", None, "embed")
        x = nn.Conv(
            self.features,
            (p, p),
            strides=p,
            padding="VALID",
            kernel_init=nn.with_logical_partitioning(self.kernel_init, names),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            conv_general_dilated=conv_general_dilated,  # im2col + matmul: exact for patches
            name="proj",
        )(images)  # [B, H/p, W/p, D]
        B, rows, cols, D = x.shape
        return x.reshape(B, rows * cols, D)  # [B, T, D] (no -1: B may be 0)
