"""LowFormer (arXiv:2409.03460): hardware-efficient convolutional transformer backbones."""

from efficient.models.lowformer.config import LowFormerConfig, attention_heads
from efficient.models.lowformer.fold import fold_batch_norm
from efficient.models.lowformer.model import LowFormer, LowFormerBlock, Lowtention

__all__ = [
    "LowFormer",
    "LowFormerBlock",
    "LowFormerConfig",
    "Lowtention",
    "attention_heads",
    "fold_batch_norm",
]
