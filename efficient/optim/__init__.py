"""Optimizers: DiLoCo and NoLoCo as Optax transformations, and NoLoCo's replica pairings."""

from efficient.optim.diloco import DiLoCoState, diloco
from efficient.optim.noloco import NoLoCoState, noloco
from efficient.optim.pairing import pairings

__all__ = ["DiLoCoState", "NoLoCoState", "diloco", "noloco", "pairings"]
