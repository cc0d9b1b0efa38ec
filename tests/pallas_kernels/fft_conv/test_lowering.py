"""The kernels lower for GPU (Triton) and TPU (Mosaic) from this CPU-only machine.

Lowering only: no PTX/Mosaic compilation, no execution. It catches what the interpret-mode tests
cannot: ops the hardware lowerings reject (3-D dots in Triton, complex dtypes, bad block shapes).
"""

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.fft_conv import BlockSizes, monarch, vjp
from tests.pallas_kernels.conftest import TRITON_DEPRECATION


def _lower(platform, n, gated, kept_frequencies=None, block_sizes="", save_residuals=False):
    length = n // 2
    config = vjp.ConvConfig(
        fft_size=n,
        seq_len=length,
        filter_len=length,
        kept_frequencies=kept_frequencies,
        implementation="pallas",
        block_sizes=BlockSizes.parse(block_sizes) if block_sizes else BlockSizes(),
        save_residuals=save_residuals,
    )
    u = jax.ShapeDtypeStruct((2, 16, length), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((16, length), jnp.float32)
    gate = u if gated else None

    def loss(u, k, pre, post):
        return vjp.monarch_conv(config, u, k, pre, post).astype(jnp.float32).sum()

    fwd_bwd = jax.value_and_grad(loss, argnums=(0, 1, 2, 3) if gated else (0, 1))
    lowered = jax.jit(fwd_bwd).trace(u, k, gate, gate).lower(lowering_platforms=(platform,))
    return lowered.as_text()


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
@pytest.mark.parametrize(
    ("n", "gated", "kept"), [(256, True, None), (2048, False, 1024), (8192, True, None)]
)
def test_lowers_for_triton(fake_gpu, n, gated, kept):
    text = _lower("cuda", n, gated, kept)
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2  # forward, backward


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
@pytest.mark.parametrize(
    ("n", "spec"),
    [
        (4096, "r128-tf32"),
        (16384, "r128h4b4w8-bf16"),
        (1024, "-tf32x3"),
        (1024, "h8m8-tf32"),  # 8 heads per dot: [256, 32] x [32, 32]
        (8192, "h4m4"),  # heads stacked at order 3 (4-D transposes around the middle level)
    ],
)
def test_kernel_options_lower_for_triton(fake_gpu, n, spec):
    """Order 2 at large N (128 x 128 dots), the tensor-core arithmetics and stacked heads lower
    for Triton."""
    text = _lower("cuda", n, True, block_sizes=spec)
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
@pytest.mark.parametrize(
    ("n", "gated", "spec"), [(1024, True, "h8m8-bf16"), (1024, False, ""), (4096, True, "h4")]
)
def test_saved_residuals_lower_for_triton(fake_gpu, n, gated, spec):
    """The forward writing X's planes and z, the backward reading them, lower for Triton."""
    text = _lower("cuda", n, gated, block_sizes=spec, save_residuals=True)
    assert text.count("stablehlo.custom_call @__gpu$xla.gpu.triton") == 2


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
def test_einsum_spelling_does_not_lower_for_triton(fake_gpu, monkeypatch):
    # Why the kernels use monarch's two_d spelling: an order-3 plan's middle contraction as an
    # einsum is a 3-D dot, and Triton dots are 2-D.
    original = monarch.forward
    monkeypatch.setattr(monarch, "forward", lambda x, mats, **_: original(x, mats))
    with pytest.raises(ValueError, match="must be 2D"):
        _lower("cuda", 4096, False)


@pytest.mark.parametrize(("n", "gated", "spec"), [(1024, True, ""), (4096, False, ""),
                                                  (1024, True, "h8m4")])  # fmt: skip
def test_lowers_for_tpu(n, gated, spec):
    text = _lower("tpu", n, gated, block_sizes=spec)
    assert text.count("stablehlo.custom_call @tpu_custom_call") == 2  # forward, backward


@pytest.mark.parametrize(("n", "gated"), [(1024, True), (4096, False)])
def test_saved_residuals_lower_for_tpu(n, gated):
    text = _lower("tpu", n, gated, save_residuals=True)
    assert text.count("stablehlo.custom_call @tpu_custom_call") == 2
