"""FFT convolution as Monarch matmuls: reference, XLA path, Pallas kernels.

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908).
"""

from pallas_kernels.fft_conv.api import fft_conv
from pallas_kernels.fft_conv.kernel import BlockSizes
from pallas_kernels.fft_conv.monarch import monarch_factors
from pallas_kernels.fft_conv.reference import fft_conv_reference, kept_frequency_mask

__all__ = [
    "BlockSizes",
    "fft_conv",
    "fft_conv_reference",
    "kept_frequency_mask",
    "monarch_factors",
]
