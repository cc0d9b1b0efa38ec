"""The reference decoder-only transformer, its presets and generation."""

from efficient.models.transformer.config import TransformerConfig
from efficient.models.transformer.generate import generate, init_cache, sample_logits
from efficient.models.transformer.model import DecoderBlock, Transformer

__all__ = [
    "DecoderBlock",
    "Transformer",
    "TransformerConfig",
    "generate",
    "init_cache",
    "sample_logits",
]
