"""LowFormer configuration and the paper's presets.

LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones
(arXiv:2409.03460, WACV 2025), the architecture section; sizes follow the official
`lowformer_model.py` and the model table of the README of github altair199797/LowFormer.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from efficient.checks import check_field_types, check_float_dtypes, validates_arguments


def attention_heads(width: int) -> tuple[int, int]:
    """(num_heads, head_dim) of the Lowtention in a stage of `width` channels.

    The official ConvAttention (head_dim_mul=0.5) uses `max(1, floor(0.5 C / 30))` heads of
    `floor(C / heads) * 0.5` dims: attention runs at about half the channel width.
    """
    num_heads = max(1, (width // 2) // 30)
    return num_heads, (width // num_heads) // 2


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class LowFormerConfig:
    """A LowFormer classifier.

    Attributes:
      widths: channels of [stem, stage 1, stage 2, stage 3, stage 4].
      depths: blocks per stage: residual FusedMBConvs in the stem; FusedMBConvs in stages 1-2 (the
        first one downsamples, no residual); LowFormer blocks in stages 3-4 (after one
        downsampling FusedMBConv).
      bigit: expand ratio 6 (instead of 4) in the downsampling blocks.
      huge_model: expand ratio 4 (instead of 2) in the stem blocks, and 6 in the stage-1/2
        downsampling blocks (B3).
      head_widths: (1x1 conv width, hidden Dense width) of the classifier head.
      num_classes: classifier outputs.
      in_channels: image channels.
      stem_stride: stride of the stem's 3x3 conv.
      stage_strides: strides of the downsampling block of stages 1-4 (a stage-1/2 of depth 0 has no
        downsampling block, as in the official code).
      attention_strides: Lowtention stride in stages 3 and 4 (kernel 5 when > 1, else 3).
      expand_ratio: of the non-downsampling FusedMBConv/MBConv blocks.
      mlp_ratio: hidden width of the LowFormer-block MLP, in multiples of the stage width.
      mbconv_min_width: the local branch of a LowFormer block is an MBConv at or above this
        width, a FusedMBConv below it (256 in the paper).
      drop_path_rate: maximum stochastic-depth rate, reached linearly over the residual branches of
        stages 1-4 (the stem's are never dropped, as in the official training code).
      drop_path_skip: the first this many residual branches of stages 1-4 get rate 0 (B3: 2).
      zero_init_last_gamma: zero the last BatchNorm scale of the residual conv blocks (the
        official `--last_gamma 0` default).
      fold_bn: the inference form: convs carry biases and there is no BatchNorm
        (see `fold_batch_norm`).
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    widths: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int, int]
    bigit: bool = False
    huge_model: bool = False
    head_widths: tuple[int, int] = (1536, 1600)
    num_classes: int = 1000
    in_channels: int = 3
    stem_stride: int = 2
    stage_strides: tuple[int, int, int, int] = (2, 2, 2, 2)
    attention_strides: tuple[int, int] = (2, 1)
    expand_ratio: float = 4.0
    mlp_ratio: int = 4
    mbconv_min_width: int = 256
    drop_path_rate: float = 0.0
    drop_path_skip: int = 0
    zero_init_last_gamma: bool = True
    fold_bn: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        for name, size in (
            ("widths", 5),
            ("depths", 5),
            ("head_widths", 2),
            ("stage_strides", 4),
            ("attention_strides", 2),
        ):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != size:
                raise ValueError(f"{name}={value!r}: must be a tuple of {size} ints.")
        if min(self.widths) < 1 or min(self.head_widths) < 1:
            raise ValueError(f"widths={self.widths}, head_widths={self.head_widths}: must be >= 1.")
        if min(self.depths) < 0:
            raise ValueError(f"depths={self.depths}: must be >= 0.")
        strides = (self.stem_stride, *self.stage_strides, *self.attention_strides)
        if min(strides) < 1:
            raise ValueError(
                f"stem_stride={self.stem_stride}, stage_strides={self.stage_strides}, "
                f"attention_strides={self.attention_strides}: strides must be >= 1."
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate}: must be in [0, 1).")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(
                f"num_classes={self.num_classes}, in_channels={self.in_channels}: must be >= 1."
            )

    # Presets: the README model table of github altair199797/LowFormer and
    # configs/cls/imagenet/b*.yaml (flags, drop path). All use fastit, bb_convin2, bb_convattention.

    @classmethod
    def b0(cls) -> "LowFormerConfig":
        """LowFormer-B0: 14.1M params, 944M MACs, 78.4% ImageNet top-1 at 224 px."""
        return cls(widths=(16, 32, 64, 128, 256), depths=(0, 1, 1, 3, 4), drop_path_rate=0.05)

    @classmethod
    def b1(cls) -> "LowFormerConfig":
        """LowFormer-B1: 17.9M params, 1410M MACs, 79.9% ImageNet top-1 at 224 px."""
        return cls(
            widths=(16, 32, 64, 128, 256),
            depths=(0, 1, 1, 5, 5),
            bigit=True,
            drop_path_rate=0.05,
        )

    @classmethod
    def b15(cls) -> "LowFormerConfig":
        """LowFormer-B1.5: 33.9M params, 2573M MACs, 81.2% ImageNet top-1 at 224 px (bighead)."""
        return cls(
            widths=(20, 40, 80, 160, 320),
            depths=(0, 1, 1, 6, 6),
            bigit=True,
            head_widths=(2304, 2560),
            drop_path_rate=0.1,
        )

    @classmethod
    def b3(cls) -> "LowFormerConfig":
        """LowFormer-B3: 57.1M params, 6098M MACs, 83.6% ImageNet top-1 at 224 px."""
        return cls(
            widths=(32, 64, 128, 256, 512),
            depths=(1, 2, 3, 6, 6),
            bigit=True,
            huge_model=True,
            drop_path_rate=0.1,
            drop_path_skip=2,
        )

    @classmethod
    def smoke(cls) -> "LowFormerConfig":
        """A tiny LowFormer for CPU tests on 32x32x3 inputs, 10 classes.

        Every kind of block appears once: a residual stem block, a residual stage-2 block,
        Lowtention with stride 2 (4 tokens) and 1 (16 tokens), and both local branches
        (FusedMBConv at width 32, MBConv at width 48 via `mbconv_min_width=48`).
        Stage outputs at 32 px: 16 / 16 / 8 / 4 / 4.
        """
        return cls(
            widths=(8, 16, 24, 32, 48),
            depths=(1, 1, 2, 1, 1),
            head_widths=(64, 64),
            num_classes=10,
            stage_strides=(1, 2, 2, 1),
            mbconv_min_width=48,
        )

    @classmethod
    def fashion_mnist(cls) -> "LowFormerConfig":
        """LowFormer-B0 adapted to 28x28x1 Fashion-MNIST, 10 classes: B0 at half width.

        Kept from B0: depths, flags, every block and its order, the attention strides (2, 1),
        the 4x MLP/expansion ratios. Changed, and why: `in_channels=1`, `num_classes=10`; the stem
        does not downsample (`stem_stride=1`), so the stages see 14 / 7 / 4 / 2 px instead of
        B0's 56 / 28 / 14 / 7 px at 224 (B0's stride 32 would leave a 28 px image 1x1 at stage 4);
        widths and head widths are halved (8, 16, 32, 64, 128; head 768 -> 800) to pay for the
        extra resolution. Measured on 2 CPU cores (batch 128, 300 steps, same recipe): B0's widths
        with stem stride 2 and no stage-4 downsampling reached 76-79% test accuracy at 504 ms per
        step; this adaptation reached 81% at 366 ms per step.
        """
        return cls(
            widths=(8, 16, 32, 64, 128),
            depths=(0, 1, 1, 3, 4),
            head_widths=(768, 800),
            num_classes=10,
            in_channels=1,
            stem_stride=1,
            stage_strides=(2, 2, 2, 2),
            attention_strides=(2, 1),
            drop_path_rate=0.05,
        )
