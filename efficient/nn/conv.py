"""Conv + BatchNorm + activation, and a transposed convolution with PyTorch's semantics.

Batch Normalization (arXiv:1502.03167 §3.1-3.2: BN after a conv, an affine map at inference);
the transposed convolution is the adjoint of a strided convolution (arXiv:1603.07285 §4).
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.nn.norms import ZEROS_NORM, BatchNorm

# PyTorch vision code (EfficientViT, LowFormer) initialises every conv/linear weight with
# trunc_normal(std=0.02) and zero biases; the models here follow it.
TRUNC_NORMAL = initializers.truncated_normal(stddev=0.02)

_NHWC = ("NHWC", "HWIO", "NHWC")
_FORCE_LAX = contextvars.ContextVar("efficient_nn_force_lax_conv", default=False)


@contextlib.contextmanager
def lax_convolutions() -> Iterator[None]:
    """While tracing inside this context, `conv_general_dilated` is `lax.conv_general_dilated`.

    For FLOP counting: XLA's cost analysis counts the im2col of the tiny-map route as a
    convolution of its own, so MACs read from `compiled.cost_analysis()` are the architecture's
    only under this context. It acts at trace time: wrap the `jit(...).lower(...)` call.
    """
    token = _FORCE_LAX.set(True)
    try:
        yield
    finally:
        _FORCE_LAX.reset(token)


def _depthwise_shift_add(x, kernel, strides, padding, preferred_element_type):
    """Depthwise conv as a sum of kh*kw shifted, scaled copies of the input (one XLA fusion).

    XLA:CPU's grouped convolution is 3-30x slower than this, forward and backward (measured on 2
    cores for LowFormer's shapes, 2x2 to 56x56 maps); GPUs and TPUs keep the native op.
    """
    kh, kw = kernel.shape[:2]
    batch, height, width, channels = x.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads((height, width), (kh, kw), strides, padding)
    (top, bottom), (left, right) = padding
    sh, sw = strides
    out_h = (height + top + bottom - kh) // sh + 1
    out_w = (width + left + right - kw) // sw + 1
    acc = preferred_element_type or (jnp.float32 if jnp.finfo(x.dtype).bits < 32 else x.dtype)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))).astype(acc)
    out = jnp.zeros((batch, out_h, out_w, channels), acc)
    for u in range(kh):
        for v in range(kw):
            end = (batch, u + sh * (out_h - 1) + 1, v + sw * (out_w - 1) + 1, channels)
            tap = lax.slice(xp, (0, u, v, 0), end, (1, sh, sw, 1))  # [B, h, w, C]
            out = out + tap * kernel[u, v, 0].astype(acc).reshape(1, 1, 1, channels)
    return out.astype(preferred_element_type or x.dtype)


def conv_general_dilated(
    lhs: Float[Array, "B H W C"],
    rhs: Float[Array, "kh kw Cg O"],
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: Any = None,
) -> Float[Array, "B h w O"]:
    """`lax.conv_general_dilated`, routed around two slow XLA:CPU paths (same result).

    - A dense convolution whose output map is smaller than its kernel (a 3x3 conv on a 2x2 map:
      the late stages of small-image models) runs on XLA:CPU at ~4 GFLOP/s against ~90 GFLOP/s
      for a 4x4 map (2 cores, measured); as im2col + one matmul it is 5x faster forward and
      backward. Taken on every backend (the math is the same; GPUs run the matmul well).
    - A depthwise convolution (NHWC, multiplier 1, no dilation) on the CPU backend is a sum of
      shifted, scaled inputs (`_depthwise_shift_add`).

    Every other case, and every case inside `lax_convolutions()`, goes to
    `lax.conv_general_dilated` unchanged. The signature is lax's, so this can be passed as
    `flax.linen.Conv(conv_general_dilated=...)`.
    """
    if _FORCE_LAX.get():
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers or _NHWC,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    kwargs = dict(
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    is_nhwc = lhs.ndim == 4 and dimension_numbers in (None, _NHWC, nhwc)
    depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1
    undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if is_nhwc and depthwise and undilated and jax.default_backend() == "cpu":
        return _depthwise_shift_add(lhs, rhs, window_strides, padding, preferred_element_type)
    if is_nhwc and feature_group_count == 1 and batch_group_count == 1:
        kh, kw, channels, features = rhs.shape
        out = jax.eval_shape(
            lambda a, b: lax.conv_general_dilated(
                a, b, window_strides, padding, dimension_numbers=_NHWC, **kwargs
            ),
            lhs,
            rhs,
        ).shape
        if out[1] < kh or out[2] < kw:
            patches = lax.conv_general_dilated_patches(
                lhs, (kh, kw), window_strides, padding, dimension_numbers=_NHWC, **kwargs
            )  # [B, h, w, C*kh*kw], channel-major
            kernel = rhs.transpose(2, 0, 1, 3).reshape(channels * kh * kw, features)
            return jnp.einsum(
                "BhwK,KO->BhwO",
                patches,
                kernel,
                precision=precision,
                preferred_element_type=preferred_element_type,
            )  # [B, h, w, O]
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        dimension_numbers=dimension_numbers or _NHWC,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        **kwargs,
    )


class ConvBN(nn.Module):
    """A 'same'-padded 2-D convolution, then BatchNorm (optional), then an activation (optional).

    Padding is PyTorch's symmetric `kernel_size // 2` on both sides, not Flax's 'SAME' (which pads
    more at the end for even inputs and strides > 1): it keeps ported weights meaningful.

    With `fold_bn=True` there is no BatchNorm and the conv carries a bias: the inference form that
    `efficient.models.lowformer.fold_batch_norm` produces from the trained one.

    Attributes:
      features: output channels.
      kernel_size: square kernel size (odd).
      strides: square stride.
      feature_group_count: 1 for a dense conv; the input channels for a depthwise conv.
      use_bias: a conv bias (kept even before a BatchNorm, as some PyTorch code has it).
      use_norm: apply BatchNorm after the conv.
      activation: applied last; None for a linear layer.
      fold_bn: the BatchNorm-folded form (conv with bias, no BatchNorm); needs `use_norm`.
      zero_init_norm: initialise the BatchNorm scale to zero (last layer of a residual branch).
      kernel_init: initializer of the (unboxed) kernel.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    features: int
    kernel_size: int = 1
    strides: int = 1
    feature_group_count: int = 1
    use_bias: bool = False
    use_norm: bool = True
    activation: Callable[[Array], Array] | None = None
    fold_bn: bool = False
    zero_init_norm: bool = False
    kernel_init: initializers.Initializer = TRUNC_NORMAL
    dtype: Any = None
    param_dtype: Any = jax.numpy.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], *, train: bool) -> Float[Array, "B h w F"]:
        in_features = x.shape[-1]
        depthwise = self.feature_group_count > 1 and self.feature_group_count == in_features
        # A depthwise kernel's input dimension has size 1: nothing to shard there.
        names = ("conv_height", "conv_width", None if depthwise else "conv_in", "conv_out")
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=self.strides,
            padding=((pad, pad), (pad, pad)),
            feature_group_count=self.feature_group_count,
            use_bias=self.use_bias or (self.use_norm and self.fold_bn),
            kernel_init=nn.with_logical_partitioning(self.kernel_init, names),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("conv_out",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            conv_general_dilated=conv_general_dilated,
            name="conv",
        )(x)
        if self.use_norm and not self.fold_bn:
            extra = {"scale_init": ZEROS_NORM} if self.zero_init_norm else {}
            x = BatchNorm(
                use_running_average=not train,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="bn",
                **extra,
            )(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def conv_transpose_2d(
    x: Float[Array, "B h w Ci"],
    kernel: Float[Array, "k k Ci Co"],
    *,
    strides: int,
    padding: int,
    precision: lax.PrecisionLike = None,
) -> Float[Array, "B H W Co"]:
    """`torch.nn.ConvTranspose2d` (groups=1, dilation=1, output_padding=0) on NHWC inputs.

    out[b, i*s - p + u, j*s - p + v, o] += x[b, i, j, c] * kernel[u, v, c, o]: each input pixel
    scatters a kernel-sized patch, the outputs are `(h - 1) * s - 2p + k` tall. Computed as a
    convolution of the stride-dilated input with the spatially flipped kernel and padding k-1-p.

    Args:
      x: input, channels last.
      kernel: [k, k, C_in, C_out]; a PyTorch weight [C_in, C_out, k, k] maps here by
        `transpose(2, 3, 0, 1)`.
      strides: the upsampling factor s.
      padding: PyTorch's `padding` p (it crops p pixels from each side of the full output).
      precision: passed to `lax.conv_general_dilated`.

    Returns:
      [B, (h-1)s - 2p + k, (w-1)s - 2p + k, C_out].

    Raises:
      ValueError: if the kernel is not square or `padding` is out of [0, k-1].
    """
    k = kernel.shape[0]
    if kernel.shape[1] != k:
        raise ValueError(f"kernel must be square [k, k, Ci, Co], got shape {kernel.shape}.")
    if not 0 <= padding <= k - 1:
        raise ValueError(f"padding={padding}: must be in [0, {k - 1}] for kernel size {k}.")
    edge = k - 1 - padding
    return conv_general_dilated(
        x,
        kernel[::-1, ::-1],
        window_strides=(1, 1),
        padding=((edge, edge), (edge, edge)),
        lhs_dilation=(strides, strides),
        precision=precision,
    )  # [B, H, W, Co]
