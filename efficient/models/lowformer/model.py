"""LowFormer: FusedMBConv stages, then conv-attention ("Lowtention") stages, then a classifier head.

LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones
(arXiv:2409.03460, WACV 2025), the macro-design and attention sections. Follows the official
`lowformer_model.py` (github altair199797/LowFormer) with fastit, bb_convin2 and
bb_convattention on, as in every released config. Channels-last (NHWC) throughout.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.models.lowformer.config import LowFormerConfig, attention_heads
from efficient.nn import (
    TRUNC_NORMAL,
    ConvBN,
    DropPath,
    FusedMBConv,
    GroupNorm,
    LayerNorm,
    MBConv,
    Mlp,
    conv_transpose_2d,
    dot_product_attention,
)

_ACT = jax.nn.hard_swish


def upsample_geometry(strides: int) -> tuple[int, int]:
    """(kernel_size, padding) of the Lowtention ConvTranspose that undoes an attention stride.

    Stride s > 1: kernel 2s, padding s // 2 (maps h -> s h for even s); stride 1: kernel 3, pad 1.
    """
    return (2 * strides, strides // 2) if strides > 1 else (3, 1)


class Lowtention(nn.Module):
    """LowFormer's convolutional attention (the official `ConvAttention` with `fuseconv=True`).

    y = BN(depthwise k x k conv, stride s)(x); q, k, v = 1x1 projections of y to H heads of K
    dims; o = softmax(q k^T / sqrt(K)) v over the (H/s)(W/s) tokens; out = ConvTranspose(o)
    (dense, kernel 2s, stride s; it also plays the role of the output projection), cropped to the
    input's H x W. k = 5 when s > 1, else 3.

    Parameter layout (for porting): the qkv kernel is [C, H, 3, K] (PyTorch's `pwise` weight
    [H*3*K, C, 1, 1] reshaped to [H, 3, K, C] and moved: its channels are per head [q|k|v]); the
    upsample kernel is [k, k, H, K, C] (PyTorch's ConvTranspose2d weight [H*K, C, k, k]).

    Attributes:
      num_heads: H.
      head_dim: K.
      strides: the attention stride s.
      fold_bn: BatchNorm-folded (inference) form of the depthwise conv.
      dtype: compute dtype; the attention logits and softmax run in float32.
      param_dtype: parameter storage dtype.
    """

    num_heads: int
    head_dim: int
    strides: int = 2
    fold_bn: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], *, train: bool) -> Float[Array, "B H W C"]:
        batch, height, width, channels = x.shape
        heads, head_dim, s = self.num_heads, self.head_dim, self.strides
        y = ConvBN(
            channels,
            5 if s > 1 else 3,
            strides=s,
            feature_group_count=channels,
            fold_bn=self.fold_bn,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv_proj",
        )(x, train=train)
        _, h, w, _ = y.shape
        # Heads are the tensor-parallel unit in both projections, so a 'tensor' split of the
        # heads needs no communication inside the attention.
        qkv_kernel = self.param(
            "qkv",
            nn.with_logical_partitioning(TRUNC_NORMAL, ("embed", "heads", None, "head_dim")),
            (channels, heads, 3, head_dim),
            self.param_dtype,
        )
        k_up, p_up = upsample_geometry(s)
        up_kernel = self.param(
            "upsample_kernel",
            nn.with_logical_partitioning(
                TRUNC_NORMAL, ("conv_height", "conv_width", "heads", "head_dim", "embed")
            ),
            (k_up, k_up, heads, head_dim, channels),
            self.param_dtype,
        )
        up_bias = self.param(
            "upsample_bias",
            nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            (channels,),
            self.param_dtype,
        )
        y, qkv_kernel, up_kernel, up_bias = nn.dtypes.promote_dtype(
            y, qkv_kernel, up_kernel, up_bias, dtype=self.dtype
        )
        tokens = y.reshape(batch, h * w, channels)  # [B, T, C]
        qkv = jnp.einsum("BTC,CHJK->JBTHK", tokens, qkv_kernel)  # [3, B, T, H, K]
        o = dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, T, H, K]
        o = o.reshape(batch, h, w, heads * head_dim)  # [B, h, w, H*K]
        up_kernel = up_kernel.reshape(k_up, k_up, heads * head_dim, channels)  # [k, k, H*K, C]
        out = conv_transpose_2d(o, up_kernel, strides=s, padding=p_up)  # [B, ~sh, ~sw, C]
        if out.shape[1] < height or out.shape[2] < width:
            raise ValueError(
                f"Lowtention(strides={s}) upsampled {h}x{w} tokens to {out.shape[1:3]}, smaller "
                f"than the {height}x{width} input."
            )
        # The stride-s conv rounds odd sizes up (ceil(H/s) tokens), so the upsampled map can be
        # one pixel larger than the input; the official code crops it.
        return out[:, :height, :width] + up_bias.reshape(1, 1, 1, channels)  # [B, H, W, C]


class LowFormerBlock(nn.Module):
    """x += Lowtention(GN(x)); x += MLP(GN(x)); x += Local(x), each branch with drop path.

    Local is a FusedMBConv (first conv with bias, expand 4) below `mbconv_min_width` channels and
    an MBConv at or above it.

    Attributes:
      num_heads: Lowtention heads.
      head_dim: Lowtention head width.
      attention_strides: Lowtention stride.
      mlp_dim: hidden width of the MLP.
      expand_ratio: of the local block.
      use_mbconv: MBConv (True) or FusedMBConv (False) local block.
      drop_path_rates: stochastic-depth rates of the (attention, mlp, local) branches.
      zero_init_last: zero the last BatchNorm scale of the local block.
      fold_bn: BatchNorm-folded (inference) form.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    num_heads: int
    head_dim: int
    attention_strides: int
    mlp_dim: int
    expand_ratio: float = 4.0
    use_mbconv: bool = False
    drop_path_rates: tuple[float, float, float] = (0.0, 0.0, 0.0)
    zero_init_last: bool = True
    fold_bn: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"], *, train: bool) -> Float[Array, "B H W C"]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        rate_att, rate_mlp, rate_local = self.drop_path_rates
        y = GroupNorm(name="attention_norm", **dtypes)(x)
        y = Lowtention(
            self.num_heads,
            self.head_dim,
            self.attention_strides,
            fold_bn=self.fold_bn,
            name="attention",
            **dtypes,
        )(y, train=train)
        x = x + DropPath(rate_att)(y, deterministic=not train)
        y = GroupNorm(name="mlp_norm", **dtypes)(x)
        y = Mlp(self.mlp_dim, name="mlp", **dtypes)(y)
        x = x + DropPath(rate_mlp)(y, deterministic=not train)
        local_kwargs = dict(
            features=x.shape[-1],
            expand_ratio=self.expand_ratio,
            fold_bn=self.fold_bn,
            zero_init_last=self.zero_init_last,
            name="local",
            **dtypes,
        )
        if self.use_mbconv:
            local = MBConv(**local_kwargs)
        else:
            local = FusedMBConv(use_bias=(True, False), **local_kwargs)
        return x + DropPath(rate_local)(local(x, train=train), deterministic=not train)


def drop_path_rates(config: LowFormerConfig) -> tuple[tuple[float, ...], ...]:
    """Stochastic-depth rate of every residual branch of stages 1-4, per stage.

    The official `apply_droppath` walks `backbone.stages` with `nn.Module.modules()` and gives
    the i-th residual branch (identity shortcut) the rate `p * (i + 1) / n` after skipping the
    first `skip`. Inside a LowFormer block that walk meets the local branch before the attention
    and MLP branches, so the order here is (local, attention, mlp) for the ramp, while the
    returned tuples are ordered as `LowFormerBlock.drop_path_rates` wants: (attention, mlp, local).

    Returns:
      For stages 1-2, one rate per residual block (blocks 2..d); for stages 3-4, three rates per
      LowFormer block, flattened (attention, mlp, local) per block.
    """
    counts = [max(config.depths[1] - 1, 0), max(config.depths[2] - 1, 0)]
    counts += [3 * config.depths[3], 3 * config.depths[4]]
    total = sum(counts)
    valid = max(total - config.drop_path_skip, 0)
    ramp = [0.0] * min(config.drop_path_skip, total)
    ramp += [config.drop_path_rate * (i + 1) / valid for i in range(valid)]
    per_stage, start = [], 0
    for stage, count in enumerate(counts):
        rates = ramp[start : start + count]
        start += count
        if stage >= 2:  # (local, attention, mlp) walk order -> (attention, mlp, local)
            rates = [r for i in range(0, count, 3) for r in (*rates[i + 1 : i + 3], rates[i])]
        per_stage.append(tuple(rates))
    return tuple(per_stage)


class _Stem(nn.Module):
    """3x3 conv (stride `stem_stride`) + BN + hardswish, then `depths[0]` residual FusedMBConvs."""

    config: LowFormerConfig

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        cfg = self.config
        common = dict(fold_bn=cfg.fold_bn, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        x = ConvBN(
            cfg.widths[0], 3, strides=cfg.stem_stride, activation=_ACT, name="conv", **common
        )(x, train=train)
        for i in range(cfg.depths[0]):
            x = x + FusedMBConv(
                cfg.widths[0],
                expand_ratio=4.0 if cfg.huge_model else 2.0,
                zero_init_last=cfg.zero_init_last_gamma,
                name=f"blocks_{i}",
                **common,
            )(x, train=train)
        return x


class _ConvStage(nn.Module):
    """Stage 1 or 2: a downsampling FusedMBConv, then residual FusedMBConvs (depth 0: identity)."""

    config: LowFormerConfig
    stage: int  # 1 or 2
    rates: tuple[float, ...]

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        cfg = self.config
        common = dict(fold_bn=cfg.fold_bn, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        width = cfg.widths[self.stage]
        for i in range(cfg.depths[self.stage]):
            if i == 0:
                x = FusedMBConv(
                    width,
                    expand_ratio=6.0 if cfg.bigit or cfg.huge_model else cfg.expand_ratio,
                    strides=cfg.stage_strides[self.stage - 1],
                    name="blocks_0",
                    **common,
                )(x, train=train)
                continue
            y = FusedMBConv(
                width,
                expand_ratio=cfg.expand_ratio,
                zero_init_last=cfg.zero_init_last_gamma,
                name=f"blocks_{i}",
                **common,
            )(x, train=train)
            x = x + DropPath(self.rates[i - 1])(y, deterministic=not train)
        return x


class _AttentionStage(nn.Module):
    """Stage 3 or 4: a downsampling FusedMBConv, then `depths[stage]` LowFormer blocks."""

    config: LowFormerConfig
    stage: int  # 3 or 4
    rates: tuple[float, ...]

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        cfg = self.config
        common = dict(fold_bn=cfg.fold_bn, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        width = cfg.widths[self.stage]
        # Official: expand 6 if bigit, or if huge_model in stage 3 only.
        big = cfg.bigit or (cfg.huge_model and self.stage == 3)
        x = FusedMBConv(
            width,
            expand_ratio=6.0 if big else cfg.expand_ratio,
            strides=cfg.stage_strides[self.stage - 1],
            name="downsample",
            **common,
        )(x, train=train)
        num_heads, head_dim = attention_heads(width)
        for i in range(cfg.depths[self.stage]):
            x = LowFormerBlock(
                num_heads,
                head_dim,
                cfg.attention_strides[self.stage - 3],
                mlp_dim=cfg.mlp_ratio * width,
                expand_ratio=cfg.expand_ratio,
                use_mbconv=width >= cfg.mbconv_min_width,
                drop_path_rates=self.rates[3 * i : 3 * i + 3],
                zero_init_last=cfg.zero_init_last_gamma,
                name=f"blocks_{i}",
                **common,
            )(x, train=train)
        return x


class _Head(nn.Module):
    """1x1 conv + BN + hardswish, global average pool, Dense (no bias) + LN + hardswish, Dense."""

    config: LowFormerConfig

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        cfg = self.config
        dtypes = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        x = ConvBN(
            cfg.head_widths[0], 1, activation=_ACT, fold_bn=cfg.fold_bn, name="conv", **dtypes
        )(x, train=train)
        x = jnp.mean(x, axis=(1, 2))  # [B, C]
        # The hidden head width plays the MLP role: 'tensor'-split, reduced by the classifier.
        x = nn.Dense(
            cfg.head_widths[1],
            use_bias=False,
            kernel_init=nn.with_logical_partitioning(TRUNC_NORMAL, ("embed", "mlp")),
            name="pre_logits",
            **dtypes,
        )(x)
        x = _ACT(LayerNorm(name="norm", **dtypes)(x))
        return nn.Dense(
            cfg.num_classes,
            kernel_init=nn.with_logical_partitioning(TRUNC_NORMAL, ("mlp", "classes")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("classes",)),
            name="classifier",
            **dtypes,
        )(x)


class LowFormer(nn.Module):
    """LowFormer image classifier.

    Variables: 'params' and, unless `config.fold_bn`, 'batch_stats' (BatchNorm running averages,
    updated when `train=True` with `mutable=['batch_stats']`). Drop path draws from the 'dropout'
    RNG when `train=True` and `config.drop_path_rate > 0`.

    Attributes:
      config: the architecture (see `LowFormerConfig` and its presets).
    """

    config: LowFormerConfig

    def setup(self):
        rates = drop_path_rates(self.config)
        self.stem = _Stem(self.config)
        self.stages = [
            _ConvStage(self.config, 1, rates[0]),
            _ConvStage(self.config, 2, rates[1]),
            _AttentionStage(self.config, 3, rates[2]),
            _AttentionStage(self.config, 4, rates[3]),
        ]
        self.head = _Head(self.config)

    def features(
        self, images: Float[Array, "B H W C"], *, train: bool
    ) -> tuple[Float[Array, "B _h _w _c"], ...]:
        """The outputs of the stem and of stages 1-4 (at 224 px: 112, 56, 28, 14, 7 pixels wide).

        Use as `model.apply(variables, images, train=False, method=LowFormer.features)`.

        Raises:
          ValueError: if `images` is not [B, H, W, in_channels].
        """
        if images.ndim != 4 or images.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"images must be [B, H, W, {self.config.in_channels}] (channels last), "
                f"got shape {images.shape}."
            )
        outputs = [self.stem(images, train=train)]
        for stage in self.stages:
            outputs.append(stage(outputs[-1], train=train))
        return tuple(outputs)

    def __call__(
        self, images: Float[Array, "B H W C"], *, train: bool
    ) -> Float[Array, "B classes"]:
        """Class logits (in `config.dtype`) of channels-last `images`."""
        return self.head(self.features(images, train=train)[-1], train=train)
