"""Hyena: a long-convolution language model on `fft_conv`, its presets and filters."""

from efficient.models.hyena.config import HyenaConfig
from efficient.models.hyena.filter import ImplicitFilter, exponential_decay, positional_features
from efficient.models.hyena.model import Hyena, HyenaBlock, HyenaOperator

__all__ = [
    "Hyena",
    "HyenaBlock",
    "HyenaConfig",
    "HyenaOperator",
    "ImplicitFilter",
    "exponential_decay",
    "positional_features",
]
