"""Layers shared by two or more models."""

from efficient.nn.attention import (
    MultiHeadAttention,
    attention_mask,
    dot_product_attention,
    rope,
)
from efficient.nn.causal_conv import CausalConv1d
from efficient.nn.conv import (
    TRUNC_NORMAL,
    ConvBN,
    conv_general_dilated,
    conv_transpose_2d,
    lax_convolutions,
)
from efficient.nn.drop_path import DropPath
from efficient.nn.kan import GRKAN, GroupRational
from efficient.nn.lact import FastWeights, lact
from efficient.nn.mbconv import FusedMBConv, MBConv
from efficient.nn.mlp import GatedMlp, Mlp, gelu_exact
from efficient.nn.norms import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from efficient.nn.patch_embed import PatchEmbed
from efficient.nn.ssd import Mamba2Mixer, ssd_chunked, ssd_quadratic, ssd_scan

__all__ = [
    "TRUNC_NORMAL",
    "BatchNorm",
    "CausalConv1d",
    "ConvBN",
    "DropPath",
    "FastWeights",
    "FusedMBConv",
    "GRKAN",
    "GatedMlp",
    "GroupNorm",
    "GroupRational",
    "LayerNorm",
    "MBConv",
    "Mamba2Mixer",
    "MultiHeadAttention",
    "Mlp",
    "PatchEmbed",
    "RMSNorm",
    "attention_mask",
    "conv_general_dilated",
    "conv_transpose_2d",
    "dot_product_attention",
    "gelu_exact",
    "lact",
    "lax_convolutions",
    "rope",
    "ssd_chunked",
    "ssd_quadratic",
    "ssd_scan",
]
