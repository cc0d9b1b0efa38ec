"""SASRec (arXiv:1808.09781) as RecBole implements it: the attention baseline of TiM4Rec."""

from efficient.models.sasrec.config import SASRecConfig
from efficient.models.sasrec.model import SASRec, SASRecLayer

__all__ = ["SASRec", "SASRecConfig", "SASRecLayer"]
