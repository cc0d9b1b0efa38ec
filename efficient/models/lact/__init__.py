"""LaCT: the large-chunk test-time-training language model, its layer and presets."""

from efficient.models.lact.config import LaCTConfig
from efficient.models.lact.layer import LaCTLayer, sliding_window_attention
from efficient.models.lact.model import LaCT, LaCTBlock

__all__ = ["LaCT", "LaCTBlock", "LaCTConfig", "LaCTLayer", "sliding_window_attention"]
