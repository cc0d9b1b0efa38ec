"""Kolmogorov-Arnold Transformer (KAT, arXiv:2409.10594): a ViT with GR-KAN blocks as MLPs."""

from efficient.models.kat.config import KATConfig
from efficient.models.kat.model import KAT

__all__ = ["KAT", "KATConfig"]
