"""`fft_conv`: the public FFT convolution (validation and dispatch).

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), §3.
"""

import numbers
import typing
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pallas_kernels import arguments, platform
from pallas_kernels.fft_conv import kernel, monarch, reference, vjp

__all__ = [
    "IMPLEMENTATIONS",
    "MAX_FFT_SIZE",
    "MAX_PALLAS_FFT_SIZE",
    "MAX_PALLAS_FFT_SIZE_GPU",
    "MIN_FFT_SIZE",
    "Implementation",
    "fft_conv",
    "resolve_implementation",
]

Implementation = Literal["auto", "pallas", "interpret", "xla"]
IMPLEMENTATIONS: tuple[str, ...] = typing.get_args(Implementation)

MIN_FFT_SIZE = 256
MAX_FFT_SIZE = 2**20  # order 4 with radix <= 32; the decomposition itself extends further
MAX_PALLAS_FFT_SIZE = 2**15  # order <= 3: one row of N f32 planes per head must fit on chip
# On GPU the kernels lower through Triton for orders 2 and 3 (test_lowering.py).
MAX_PALLAS_FFT_SIZE_GPU = 2**15
_U_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
# FFT sizes at which `implementation="xla"` runs jnp.fft instead of the Monarch matmuls, because it
# was faster on that backend (bench.py; figures in README.md). CPU: jnp.fft (ducc) won at every N
# from 256 to 16K by 4-7x on 2 EPYC cores. GPU: jnp.fft (cuFFT) won at every N measured on an H100
# (256-4K, B=64 H=768 bf16: 3x-6x over the Monarch XLA path). TPU keeps the Monarch path.
_JNP_FFT_SIZES: dict[str, frozenset[int]] = {
    "cpu": frozenset(2**e for e in range(8, 21)),
    "gpu": frozenset(2**e for e in range(8, 21)),
}
# Backends where "auto" picks the Pallas kernels. Not GPU: on an H100 the Triton-lowered kernels
# were slower than cuFFT at every N measured (equal forward at 256, 2.8x slower at 1K, 45x at
# 4K; README.md), so "auto" takes the faster XLA path there and "pallas" stays opt-in.
_AUTO_PALLAS_BACKENDS = frozenset({"tpu"})


def _check_int(name: str, value, low: int, high: int, what: str) -> int:
    """`value` as a Python int (numpy integers too; not bool), if it is in [low, high]."""
    if isinstance(value, jax.core.Tracer):
        raise ValueError(
            f"{name}: must be a static Python or numpy int, got a traced value (mark it static "
            "in jax.jit, e.g. static_argnames)"
        )
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= value <= high
    ):
        raise ValueError(f"{name}={value!r}: must be {what}")
    return int(value)


def _max_pallas_size() -> int:
    return MAX_PALLAS_FFT_SIZE_GPU if platform.current() == "gpu" else MAX_PALLAS_FFT_SIZE


def resolve_implementation(implementation: str, fft_size: int) -> str:
    """Map "auto" to "pallas" on TPU (if N allows) or "xla"; "xla" to "xla" or "jnp_fft";
    "pallas" and "interpret" to themselves.

    Raises:
        ValueError: `implementation` is not one of `IMPLEMENTATIONS`.
    """
    arguments.check_one_of("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "auto":
        on_accelerator = platform.current() in _AUTO_PALLAS_BACKENDS
        use_pallas = on_accelerator and fft_size <= _max_pallas_size()
        implementation = "pallas" if use_pallas else "xla"
    if implementation == "xla" and fft_size in _JNP_FFT_SIZES.get(platform.current(), ()):
        return "jnp_fft"
    return implementation


def _check_arrays(u, k, pregate, postgate) -> None:
    for name, array in (("u", u), ("k", k), ("pregate", pregate), ("postgate", postgate)):
        if array is not None:
            arguments.check_array(name, array)
    if u.ndim != 3 or k.ndim != 2 or k.shape[0] != u.shape[1]:
        raise ValueError(f"u {u.shape} and k {k.shape}: expected u [B, H, L] and k [H, Lk]")
    if u.dtype not in _U_DTYPES:
        raise ValueError(f"u.dtype={u.dtype}: supported are float32, bfloat16, float16")
    if k.dtype != jnp.float32:
        raise ValueError(f"k.dtype={k.dtype}: k must be float32")
    if k.shape[-1] == 0:
        raise ValueError(f"k {k.shape}: the filter needs at least one tap (Lk >= 1)")
    for name, gate in (("pregate", pregate), ("postgate", postgate)):
        if gate is not None and (gate.shape != u.shape or gate.dtype != u.dtype):
            raise ValueError(
                f"{name} {gate.shape} {gate.dtype}: must have u's shape {u.shape} and dtype "
                f"{u.dtype}"
            )


def _resolve_fft_size(fft_size, length: int, filter_len: int) -> int:
    """The given N, checked, or the causal default: the smallest power of two >= L + Lk - 1."""
    if fft_size is None:
        fft_size = 1 << (max(length + filter_len - 1, MIN_FFT_SIZE) - 1).bit_length()
        if fft_size > MAX_FFT_SIZE:
            raise ValueError(
                f"L + Lk - 1 = {length + filter_len - 1}: the causal FFT size {fft_size} exceeds "
                f"the supported maximum {MAX_FFT_SIZE}"
            )
    what = (
        f"a power of two in [{MIN_FFT_SIZE}, {MAX_FFT_SIZE}], >= L={length} and >= Lk={filter_len}"
    )
    fft_size = _check_int(
        "fft_size", fft_size, max(MIN_FFT_SIZE, length, filter_len), MAX_FFT_SIZE, what
    )
    if not arguments.is_pow2(fft_size):
        raise ValueError(f"fft_size={fft_size}: must be {what}")
    return fft_size


def _check_kept_frequencies(kept_frequencies, fft_size: int) -> int:
    """P as an int: a multiple of 2 N / N_last in [2 N / N_last, N] (whole last-level blocks)."""
    step = 2 * fft_size // monarch.monarch_factors(fft_size)[-1]
    kept_frequencies = _check_int(
        "kept_frequencies", kept_frequencies, step, fft_size, f"in [{step}, N={fft_size}]"
    )
    if kept_frequencies % step:
        raise ValueError(
            f"kept_frequencies={kept_frequencies}: must be a multiple of {step} "
            f"(2 N / last Monarch radix) at fft_size={fft_size}"
        )
    return kept_frequencies


def _check_implementation(implementation, fft_size: int) -> None:
    arguments.check_one_of("implementation", implementation, IMPLEMENTATIONS)
    platform.check_compiled(implementation)
    max_size = _max_pallas_size() if implementation == "pallas" else MAX_PALLAS_FFT_SIZE
    if implementation in ("pallas", "interpret") and fft_size > max_size:
        raise ValueError(
            f"fft_size={fft_size}: implementation={implementation!r} supports N <= {max_size} "
            f"on {platform.current()}; use implementation='xla'"
        )


@arguments.validates_arguments
def fft_conv(
    u: Float[Array, "B H L"],
    k: Float[Array, "H Lk"],
    *,
    fft_size: int | np.integer | None = None,
    pregate: Float[Array, "B H L"] | None = None,
    postgate: Float[Array, "B H L"] | None = None,
    partial_taps: int | np.integer | None = None,
    kept_frequencies: int | np.integer | None = None,
    implementation: Implementation = "auto",
    block_sizes: kernel.BlockSizes | str | None = None,
    backward_block_sizes: kernel.BlockSizes | str | None = None,
    save_residuals: bool = False,
) -> Float[Array, "B H L"]:
    """Gated long convolution `postgate * irfft(rfft(u * pregate, N) * rfft(k, N))[..., :L]`.

    The DFTs run as Monarch matmuls on real/imaginary planes (see README.md). The default N makes
    the convolution causal, `y[t] = sum_j k[j] (pregate * u)[t - j]`; `fft_size=L` makes it
    circular. u is zero-padded to N implicitly (zero blocks are skipped, not multiplied).

    Args:
        u: Input, float32, bfloat16 or float16 (computed in float32).
        k: One filter per head, float32, Lk <= N.
        fft_size: N, a power of two in [256, 2**20] with N >= L and N >= Lk; default: the
            smallest power of two >= max(L + Lk - 1, 256) (causal).
        pregate: Multiplies u before the convolution; u's shape and dtype.
        postgate: Multiplies the output; u's shape and dtype.
        partial_taps: Partial convolution: only taps k[:, :partial_taps] are used (in [1, Lk]);
            the default N is then computed from partial_taps instead of Lk.
        kept_frequencies: Frequency-sparse convolution P, FlashFFTConv's definition: the filter's
            rfft bins from P/2 on are zeroed (full spectrum: f < P/2 and f > N - P/2 kept,
            `kept_frequency_mask`). P is a multiple of 2 N / N_last in [2 N / N_last, N], N_last
            the last Monarch radix (`monarch.monarch_factors(N)[-1]`), because whole blocks of the
            last level are skipped.
        implementation: "xla" (jnp Monarch, or jnp.fft at sizes where that is faster on the
            backend: every size on CPU), "pallas" (the compiled kernels, N <= 32768),
            "interpret" (the kernels in interpret mode, N <= 32768), or "auto": pallas on TPU
            where N allows, else xla (on GPU the kernels are slower than cuFFT so far).
        block_sizes: Kernel tiling (pallas/interpret only; validated for every implementation):
            a `kernel.BlockSizes`, its spec string (`BlockSizes.parse`, e.g. "h4b8w8"), or None
            for `kernel.default_block_sizes(N)`.
        backward_block_sizes: The backward kernel's tiling, in the same forms; None: the
            forward's (`block_sizes`). Its `max_radix` must give the same plan at N (the backward
            reads the forward's filter spectrum); the rest may differ, e.g. "h8m8w8-bf16" forward
            and "h4m4w8-bf16" backward, the H200's fastest of each pass at N = 1K (README, GPU).
        save_residuals: Under differentiation, keep the input's spectrum X (f32, 8 bytes per
            kept frequency of each [b, h] row) and, when gated, the pre-gate output z (u's
            dtype; float32 for float16 u, whose z can pass 65504) from the forward, so the
            backward runs two transforms instead of four (gated) or three: fewer FLOPs for more
            memory. The Monarch paths only ("xla" at sizes where it
            is not jnp.fft, "pallas", "interpret"); jnp.fft's autodiff keeps its own residuals.

    Returns:
        y [B, H, L] in u's dtype.

    Raises:
        ValueError: An unsupported shape, dtype, size or option, naming what is supported.
    """
    _check_arrays(u, k, pregate, postgate)
    u, k, pregate, postgate = map(arguments.as_jax_array, (u, k, pregate, postgate))
    length, filter_len = u.shape[-1], k.shape[-1]
    if partial_taps is not None:
        partial_taps = _check_int(
            "partial_taps", partial_taps, 1, filter_len, f"an int in [1, Lk={filter_len}]"
        )
        k = k[:, :partial_taps]
        filter_len = partial_taps
    fft_size = _resolve_fft_size(fft_size, length, filter_len)
    if kept_frequencies is not None:
        kept_frequencies = _check_kept_frequencies(kept_frequencies, fft_size)
    if not isinstance(save_residuals, bool | np.bool_):
        raise ValueError(f"save_residuals={save_residuals!r}: must be True or False")
    _check_implementation(implementation, fft_size)
    block_sizes = arguments.resolve_block_sizes(
        block_sizes, kernel.BlockSizes, lambda: kernel.default_block_sizes(fft_size)
    )
    if backward_block_sizes is not None:
        backward_block_sizes = arguments.resolve_block_sizes(
            backward_block_sizes, kernel.BlockSizes, lambda: block_sizes, "backward_block_sizes"
        )
        vjp.check_backward_tiling(fft_size, block_sizes, backward_block_sizes)
    implementation = resolve_implementation(implementation, fft_size)
    if 0 in u.shape:  # nothing to launch a kernel over: every implementation agrees on []
        implementation = "jnp_fft"
    if implementation == "jnp_fft":
        return reference.fft_conv_reference(
            u,
            k,
            fft_size=fft_size,
            pregate=pregate,
            postgate=postgate,
            kept_frequencies=kept_frequencies,
        )
    config = vjp.ConvConfig(
        fft_size=fft_size,
        seq_len=length,
        filter_len=filter_len,
        kept_frequencies=kept_frequencies,
        implementation=implementation,  # type: ignore[arg-type]
        block_sizes=block_sizes,
        backward_block_sizes=backward_block_sizes,
        save_residuals=bool(save_residuals),
    )
    return vjp.monarch_conv(config, u, k, pregate, postgate)
