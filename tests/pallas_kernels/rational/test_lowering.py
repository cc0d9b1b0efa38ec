"""The rational kernels lower for GPU (Triton) and TPU (Mosaic) from this CPU-only machine.

Lowering only (no compilation, no execution): catches ops or block shapes the hardware lowerings
reject, which interpret mode cannot.
"""

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.rational import BlockSizes, api, init_coefficients
from tests.pallas_kernels.conftest import TRITON_DEPRECATION


def _lower(platform: str, width: int, dtype, block_sizes: BlockSizes | None = None) -> str:
    numerator, denominator = init_coefficients("swish", 8)
    x = jax.ShapeDtypeStruct((2, 197, width), dtype)

    def loss(x, numerator, denominator):
        y = api.group_rational(
            x, numerator, denominator, implementation="pallas", block_sizes=block_sizes
        )
        return y.astype(jnp.float32).sum()

    fwd_bwd = jax.value_and_grad(loss, argnums=(0, 1, 2))
    lowered = jax.jit(fwd_bwd).trace(x, numerator, denominator)
    return lowered.lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
@pytest.mark.parametrize(
    ("width", "dtype", "spec"),
    [
        (192, jnp.float32, None),
        (3072, jnp.bfloat16, None),
        (768, jnp.bfloat16, "256x64"),
        (768, jnp.bfloat16, "256x64l8f32p1-loop"),
        (768, jnp.bfloat16, "256x64l8f32u4p1-loop"),
    ],
)
def test_lowers_for_triton(fake_gpu, width, dtype, spec):
    text = _lower("cuda", width, dtype, spec and BlockSizes.parse(spec))
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2  # forward, backward


@pytest.mark.parametrize(
    ("width", "dtype", "spec"),
    [
        (768, jnp.float32, None),
        (1536, jnp.bfloat16, None),
        (768, jnp.float32, "256x128-loop"),
        (768, jnp.bfloat16, "256x128l16f64p1-loop"),
        (768, jnp.bfloat16, "256x128l16f32u2p1-loop"),
    ],
)
def test_lowers_for_tpu(monkeypatch, width, dtype, spec):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    text = _lower("tpu", width, dtype, spec and BlockSizes.parse(spec))
    assert text.count("stablehlo.custom_call @tpu_custom_call") == 2  # forward, backward


def test_default_block_sizes_by_platform():
    from pallas_kernels import platform
    from pallas_kernels.rational import kernel

    with platform.compiling_for("gpu"):
        gpu = kernel.default_block_sizes()
    assert (gpu.reduce, gpu.leaf_rows, gpu.chunk_rows) == ("loop", 16, 256)
    for name in ("tpu", "cpu"):
        with platform.compiling_for(name):
            assert kernel.default_block_sizes() == BlockSizes()
