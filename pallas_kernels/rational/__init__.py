"""Group-rational (GR-KAN) activation: reference, XLA path, Pallas kernels, init presets.

Kolmogorov-Arnold Transformer (arXiv 2409.10594), §4; FlashKAT (arXiv 2505.13813), §4.
"""

from pallas_kernels.rational.api import group_rational
from pallas_kernels.rational.kernel import BlockSizes
from pallas_kernels.rational.presets import (
    PRESETS,
    VARIANCE_GAINS,
    RationalPreset,
    init_coefficients,
    variance_gain,
)
from pallas_kernels.rational.reference import group_rational_reference

__all__ = [
    "PRESETS",
    "VARIANCE_GAINS",
    "BlockSizes",
    "RationalPreset",
    "group_rational",
    "group_rational_reference",
    "init_coefficients",
    "variance_gain",
]
