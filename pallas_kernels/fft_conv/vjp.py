"""Custom VJP of the Monarch FFT convolution: the backward is a correlation (conjugate spectrum).

FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores
(arXiv 2311.05908), §3.2.

With x = pregate * u, X = DFT(x), S the filter spectrum (1/N and the frequency mask folded in), and
y = postgate * z, z = Re(IDFT(X S))[:L]:
    dpostgate = dy * z,   dz = dy * postgate,   D = DFT(dz)   (dz zero beyond L, implicitly)
    dx = Re(IDFT(D conj(S)))[:L]   -> du = dx * pregate,  dpregate = dx * u
    dS = sum_B D conj(X)   (as real/imaginary planes)  -> dk = transpose of (k -> S) applied to dS
By default the residuals are the inputs and S only: X and z are recomputed in the backward
(memory over FLOPs: four transforms when gated, three when not). `save_residuals` keeps X (f32
planes) and z (u's dtype; float32 for float16 u, whose z can pass 65504) from the forward
instead: two transforms (DFT(dz), the inverse for dx).
On the kernel paths both kernels carry the XLA path's derivatives (`pallas_kernels.autodiff`),
so the backward itself can be differentiated (second-order derivatives).
"""

import dataclasses
import functools
import typing
from typing import Literal

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from pallas_kernels import arguments, autodiff, partitioning
from pallas_kernels.fft_conv import kernel, monarch

__all__ = ["ConvConfig", "check_backward_tiling", "filter_spectrum", "monarch_conv"]

_Implementation = Literal["xla", "pallas", "interpret"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvConfig:
    """Static arguments of one convolution (hashable: the custom VJP's non-differentiable input).

    Attributes:
        fft_size: N, a power of two.
        seq_len: L <= N.
        filter_len: Lk <= N (after partial truncation).
        kept_frequencies: Frequency sparsity P, or None for all N frequencies.
        implementation: "xla" (jnp Monarch), "pallas" or "interpret" (the Pallas kernels,
            compiled or interpreted).
        block_sizes: Kernel tiling (its `max_radix` sets the kernels' plan).
        backward_block_sizes: The backward kernel's tiling, if not `block_sizes` (the fastest
            forward and backward tilings differ: README, GPU); its plan must be the same.
        save_residuals: The forward keeps X and z for the backward (`kernel.Residuals`)
            instead of the backward recomputing them.
    """

    fft_size: int
    seq_len: int
    filter_len: int
    kept_frequencies: int | None = None
    implementation: _Implementation = "xla"
    block_sizes: kernel.BlockSizes = kernel.BlockSizes()
    backward_block_sizes: kernel.BlockSizes | None = None
    save_residuals: bool = False

    def __post_init__(self):
        # Anything but "xla" would run the Pallas kernels: a typo must not.
        allowed = typing.get_args(_Implementation)
        arguments.check_choice("ConvConfig", "implementation", self.implementation, allowed)
        check_backward_tiling(self.fft_size, self.block_sizes, self.backward_block_sizes)

    @property
    def factors(self) -> tuple[int, ...]:
        """The decomposition: the kernels may ask for larger radices (`BlockSizes.max_radix`)."""
        max_radix = 32 if self.implementation == "xla" else self.block_sizes.max_radix
        return monarch.monarch_factors(self.fft_size, max_radix)

    def _plan(self, rows_in: int, rows_out: int) -> monarch.MonarchPlan:
        factors = self.factors
        kept_last = None
        if self.kept_frequencies is not None and self.kept_frequencies < self.fft_size:
            kept_last = self.kept_frequencies * factors[-1] // (2 * self.fft_size)
        return monarch.MonarchPlan(
            fft_size=self.fft_size,
            factors=factors,
            rows_in=rows_in,
            rows_out=rows_out,
            kept_last=kept_last,
        )

    @property
    def plan(self) -> monarch.MonarchPlan:
        """Plan for u (and dy) -> y (and du)."""
        rows = -(-self.seq_len // (self.fft_size // self.factors[0]))
        return self._plan(rows, rows)

    @property
    def filter_plan(self) -> monarch.MonarchPlan:
        """Plan for k -> its spectrum (forward only)."""
        row = self.fft_size // self.factors[0]
        return self._plan(-(-self.filter_len // row), 1)


def check_backward_tiling(
    fft_size: int, block_sizes: kernel.BlockSizes, backward_block_sizes: kernel.BlockSizes | None
) -> None:
    """Raise unless the backward tiling (if any) plans N as the forward's does: the backward
    reads the forward's filter spectrum, laid out in the forward's plan."""
    if backward_block_sizes is None:
        return
    forward = monarch.monarch_factors(fft_size, block_sizes.max_radix)
    backward = monarch.monarch_factors(fft_size, backward_block_sizes.max_radix)
    if forward != backward:
        raise ValueError(
            f"backward_block_sizes.max_radix={backward_block_sizes.max_radix} plans "
            f"N={fft_size} as {' x '.join(map(str, backward))}, block_sizes.max_radix="
            f"{block_sizes.max_radix} as {' x '.join(map(str, forward))}: both passes need the "
            "same plan (the backward reads the forward's filter spectrum)"
        )


def filter_spectrum(config: ConvConfig, k: jax.Array) -> monarch.Planes:
    """DFT(k) / N in the permuted layout, kept frequencies only: planes [H, *spectrum_shape]."""
    plan = config.filter_plan
    sr, si = monarch.forward(monarch.to_digits(k, plan), monarch.monarch_matrices(plan))
    scale = 1.0 / config.fft_size
    if config.kept_frequencies is not None:
        # The kept blocks hold f < P/2 and f >= N - P/2; FlashFFTConv's definition (rfft bins
        # below P/2: `reference.kept_frequency_mask`) drops f = N - P/2 too. Its digits are
        # (0, ..., 0, N_last - c), at position c of the last axis, kept blocks or all.
        c = config.kept_frequencies * plan.factors[-1] // (2 * config.fft_size)
        index = (..., *[0] * (len(plan.factors) - 1), c)
        sr, si = sr.at[index].set(0.0), si.at[index].set(0.0)
    return sr * scale, si * scale


def _kernel_options(config: ConvConfig, *, backward: bool = False) -> dict:
    """The static keyword arguments of `kernel.spectral_conv` (or, with `backward`,
    `kernel.spectral_conv_bwd`)."""
    block_sizes = config.block_sizes
    if backward and config.backward_block_sizes is not None:
        block_sizes = config.backward_block_sizes
    return dict(
        plan=config.plan,
        length=config.seq_len,
        block_sizes=block_sizes,
        interpret=config.implementation == "interpret",
    )


def _spectral_conv(config, u, spectrum, pregate, postgate, out_dtype, save=False):
    """postgate * Re(IDFT(DFT(pregate * u) * spectrum))[:L] by the configured implementation;
    with `save`, (that, its `kernel.Residuals`)."""
    xla = functools.partial(_xla_spectral_conv, config, out_dtype, save)
    if config.implementation == "xla":
        return xla(u, spectrum, pregate, postgate)
    kernel_call = functools.partial(
        kernel.spectral_conv, **_kernel_options(config), out_dtype=out_dtype, save=save
    )
    # Differentiated (only in second-order derivatives: the first is `_backward`) as the XLA path.
    return autodiff.with_derivatives_of(kernel_call, xla)(u, spectrum, pregate, postgate)


def _xla_spectral_conv(config, out_dtype, save, u, spectrum, pregate, postgate):
    plan = config.plan
    mats = monarch.monarch_matrices(plan)
    x = u.astype(jnp.float32)
    if pregate is not None:
        x = x * pregate.astype(jnp.float32)
    x_f = monarch.forward(monarch.to_digits(x, plan), mats)
    z = monarch.inverse_real(monarch.cmul(x_f, spectrum), mats)
    z = monarch.from_digits(z, plan, config.seq_len)
    y = z if postgate is None else z * postgate.astype(jnp.float32)
    y = y.astype(out_dtype)
    if not save:
        return y
    z = None if postgate is None else z.astype(kernel.residual_z_dtype(u.dtype))
    return y, kernel.Residuals(z=z, spectrum=x_f)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def monarch_conv(config, u, k, pregate, postgate):
    """The convolution of `api.fft_conv` for validated arguments (k already truncated)."""
    # Not differentiated: nothing to save.
    return _spectral_conv(config, u, filter_spectrum(config, k), pregate, postgate, u.dtype)


def _forward(config, u, k, pregate, postgate):
    spectrum = filter_spectrum(config, k)
    saved = None
    if config.save_residuals:
        y, saved = _spectral_conv(config, u, spectrum, pregate, postgate, u.dtype, save=True)
    else:
        y = _spectral_conv(config, u, spectrum, pregate, postgate, u.dtype)
    # With X saved, u is needed only for dpregate: not kept without a pregate (saved memory).
    keep_u = saved is None or pregate is not None
    return y, (u if keep_u else None, spectrum, pregate, postgate, saved)


def _backward(config, residuals, dy):
    u, spectrum, pregate, postgate, saved = residuals
    dy = jnp.asarray(dy)  # jax.test_util.check_grads passes numpy cotangents
    k_shape = jax.ShapeDtypeStruct(
        (spectrum[0].shape[0], config.filter_len), jnp.float32, **_filter_type(spectrum)
    )
    spectrum_vjp = jax.linear_transpose(functools.partial(filter_spectrum, config), k_shape)
    xla = functools.partial(_xla_cotangents, config)
    if config.implementation == "xla":
        du, d_pre, d_post, d_spectrum = xla(u, dy, spectrum, pregate, postgate, saved)
    else:
        kernel_call = functools.partial(
            kernel.spectral_conv_bwd, **_kernel_options(config, backward=True)
        )
        # Second-order derivatives differentiate the XLA formulas below (autodiff.py).
        du, d_pre, d_post, d_spectrum = autodiff.with_derivatives_of(kernel_call, xla)(
            u, dy, spectrum, pregate, postgate, saved
        )
    d_spectrum = partitioning.typed_like(d_spectrum, spectrum)  # shard_map / Explicit mesh
    return du, spectrum_vjp(d_spectrum)[0], d_pre, d_post


def _filter_type(spectrum) -> dict:
    """The type of the filter whose spectrum this is, as `jax.ShapeDtypeStruct` arguments, for
    the transpose to hand back a cotangent typed as the filter: under a mesh, heads split as the
    spectrum's (an Explicit mesh) and varying over the manual axes it varies over (inside a
    `jax.shard_map`); nothing outside one."""
    kind = jax.typeof(spectrum[0])
    if kind.sharding.mesh.empty:
        return {}
    heads = kind.sharding.spec[:1]
    sharding = jax.sharding.NamedSharding(kind.sharding.mesh, P(*heads, None))
    return {"sharding": sharding, **partitioning.manual_type(spectrum[0])}


def _xla_cotangents(config, u, dy, spectrum, pregate, postgate, saved=None):
    """(du, dpregate, dpostgate, dspectrum) in jnp: `kernel.spectral_conv_bwd`'s specification.
    `saved`: the forward's `kernel.Residuals`, used instead of recomputing X and z (u is then
    None when there is no pregate; du takes dy's dtype, which is y's and so u's)."""
    plan = config.plan
    mats = monarch.monarch_matrices(plan)
    g = dy.astype(jnp.float32)
    if saved is None:
        x = u.astype(jnp.float32)
        if pregate is not None:
            x = x * pregate.astype(jnp.float32)
        x_f = monarch.forward(monarch.to_digits(x, plan), mats)  # [B, H, *spectrum_shape]
    else:
        x_f = saved.spectrum
    d_post = None
    if postgate is not None:
        if saved is None:
            z = monarch.inverse_real(monarch.cmul(x_f, spectrum), mats)
            z = monarch.from_digits(z, plan, config.seq_len)  # [B, H, L]
        else:
            z = saved.z.astype(jnp.float32)
        d_post = (g * z).astype(postgate.dtype)
        g = g * postgate.astype(jnp.float32)
    g_f = monarch.forward(monarch.to_digits(g, plan), mats)
    dx = monarch.inverse_real(monarch.cmul(g_f, spectrum, conj_b=True), mats)
    dx = monarch.from_digits(dx, plan, config.seq_len)  # [B, H, L]
    d_pre = None
    if pregate is not None:
        d_pre = (dx * u.astype(jnp.float32)).astype(pregate.dtype)
        dx = dx * pregate.astype(jnp.float32)
    ds_r, ds_i = monarch.cmul(g_f, x_f, conj_b=True)
    d_spectrum = (ds_r.sum(axis=0), ds_i.sum(axis=0))  # [H, *spectrum_shape]
    return dx.astype(dy.dtype if u is None else u.dtype), d_pre, d_post, d_spectrum


monarch_conv.defvjp(_forward, _backward)
