"""Plain ViT / DeiT (arXiv:2010.11929, arXiv:2012.12877): the transformer baseline."""

from efficient.models.vit.config import ViTConfig
from efficient.models.vit.model import ViT, ViTBlock

__all__ = ["ViT", "ViTBlock", "ViTConfig"]
