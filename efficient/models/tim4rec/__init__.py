"""TiM4Rec (arXiv:2409.16182): time-aware SSD for sequential recommendation; SSD4Rec with the
time branch off."""

from efficient.models.tim4rec.config import TiM4RecConfig
from efficient.models.tim4rec.model import (
    SequenceNorm,
    TiM4Rec,
    TimeBranch,
    TiSSD,
    TiSSDLayer,
)

__all__ = [
    "SequenceNorm",
    "TiM4Rec",
    "TiM4RecConfig",
    "TiSSD",
    "TiSSDLayer",
    "TimeBranch",
]
