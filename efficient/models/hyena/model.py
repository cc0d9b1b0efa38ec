"""The Hyena language model: the transformer's pre-norm block with attention replaced by the
Hyena operator (gated implicit long convolutions computed by `fft_conv`).

Hyena Hierarchy: Towards Larger Convolutional Language Models (Poli et al. 2023, arXiv:2302.10866
§3, Algorithm 3); FlashFFTConv (Fu et al. 2023, arXiv:2311.05908 §5) for the fused gated
convolution.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Float, Int

from efficient.models.hyena.config import HyenaConfig
from efficient.models.hyena.filter import ImplicitFilter
from efficient.models.transformer.model import lm_head, token_embedding
from efficient.nn import CausalConv1d, GatedMlp, RMSNorm, decode_cache
from efficient.nn.causal_conv import torch_default_init
from pallas_kernels.fft_conv import fft_conv


def _inits(config: HyenaConfig) -> tuple[initializers.Initializer, initializers.Initializer]:
    """(kernel init, init of the projections that end a residual branch)."""
    std = config.init_std
    out_std = std / math.sqrt(2 * config.num_layers) if config.scale_residual_init else std
    return initializers.normal(std), initializers.normal(out_std)


class HyenaOperator(nn.Module):
    """y = out_proj(z_{N+1}), z_1 = v, z_{n+1} = x_n · (h_n * z_n + b_n z_n)  (order N).

    The input projection D -> (N + 1) D and a causal depthwise short convolution give the streams
    v, x_1..x_N (paper §3.2); h_n are implicit causal filters as long as the sequence
    (`ImplicitFilter`), b_n the per-channel skip term of the Safari code's `fftconv`. Each step is
    one `fft_conv(z, h_n + b_n δ_0, postgate=x_n)`: the skip folds into tap 0 of the filter and the
    gate into the kernel's epilogue, so an order-2 operator is two fused kernel calls.

    Channels are laid out D-major (stream n of channel d is column d (N + 1) + n of the
    projection), so that splitting the projection's 'mlp' axis over devices keeps every stream of
    a channel on one device.

    Decoding (`decode=True`): the projections of every position seen so far sit in the 'cache'
    collection (`projections` [B, S_max, (N + 1) D], `cache_index`); each call writes the new
    positions, recomputes the short and long convolutions over the whole cache (FFT size
    >= 2 S_max) and keeps the new positions' outputs. That is exact (the convolutions are causal,
    unwritten slots are zeros and never reach earlier positions) and costs O(S_max log S_max · D)
    per call instead of the O(S_max · D) of a dot product per step; no recurrent form is
    distilled (the paper's §4 leaves that to future work).

    Attributes:
      config: the model configuration.
    """

    config: HyenaConfig

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"], decode: bool = False) -> Float[Array, "B T D"]:
        c = self.config
        B, T, D = x.shape
        N = c.order
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        kernel_init, out_init = _inits(c)
        p = nn.Dense(
            (N + 1) * D,
            use_bias=c.use_bias,
            kernel_init=nn.with_logical_partitioning(kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("mlp",)),
            name="in_proj",
            **dtypes,
        )(x)  # [B, T, (N + 1) D]
        start = None
        if decode:
            p, start = self._update_cache(p)  # p: [B, S, (N + 1) D]
        L = p.shape[1]
        if c.max_len < L:
            raise ValueError(
                f"sequence length {L} exceeds max_len={c.max_len} (the filters' domain)."
            )
        # torch's Conv1d default, which Safari keeps (its _init_weights skips convolutions).
        p = CausalConv1d(
            c.short_filter_size,
            channel_axis="mlp",
            name="short_filter",
            **torch_default_init(c.short_filter_size),
            **dtypes,
        )(p)  # [B, L, (N + 1) D]
        streams = p.reshape(B, L, D, N + 1).transpose(3, 0, 2, 1)  # [N + 1, B, D, L]
        h = self._long_filters(L, D, kernel_init)  # [N, D, L]
        z = streams[0]  # v: [B, D, L]
        for n in range(N):
            z = fft_conv(
                z,
                h[n],
                postgate=streams[n + 1],
                implementation=c.fft_implementation,
                save_residuals=c.fft_save_residuals,
            )  # [B, D, L]
        y = z.transpose(0, 2, 1)  # [B, L, D]
        if decode:
            y = lax.dynamic_slice_in_dim(y, start, T, axis=1)  # [B, T, D]
            y = decode_cache.poison_overflow(y, start, T, L)  # NaN if this call ran past the cache
        return nn.Dense(
            D,
            use_bias=c.use_bias,
            kernel_init=nn.with_logical_partitioning(out_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            name="out_proj",
            **dtypes,
        )(y)  # [B, T, D]

    @nn.nowrap
    def _long_filters(
        self, length: int, channels: int, kernel_init: initializers.Initializer
    ) -> Float[Array, "N D L"]:
        """h_n + b_n δ_0 for n < N, [N, D, L]: the implicit filters with the skip term folded in
        as one more tap, (h * z)[t] + b z[t] = ((h + b δ_0) * z)[t]. (A helper of the compact
        `__call__`: its submodule and parameter are the operator's, "filter" and "skip".)"""
        c = self.config
        N, D = c.order, channels
        h = ImplicitFilter(
            channels=N * D,
            filter_order=c.filter_order,
            filter_layers=c.filter_layers,
            emb_dim=c.emb_dim,
            frequency=c.filter_frequency,
            max_len=c.max_len,
            fast_decay_pct=c.fast_decay_pct,
            slow_decay_pct=c.slow_decay_pct,
            decay_target=c.decay_target,
            kernel_init=kernel_init,
            param_dtype=c.param_dtype,
            name="filter",
        )(length)  # [L, N D], D-major like the streams
        h = h.reshape(length, D, N).transpose(2, 1, 0)  # [N, D, L]
        skip = self.param(
            "skip",
            nn.with_logical_partitioning(initializers.normal(1.0), ("mlp",)),
            (N * D,),
            c.param_dtype,
        )
        skip = skip.astype(jnp.float32).reshape(D, N).T  # [N, D]
        return h.at[:, :, 0].add(skip)

    def _update_cache(self, p: Array) -> tuple[Array, Array]:
        """Write T new projections at the cache index; return the whole cache and the index.

        At init the input is [B, S_max, (N + 1) D]: it sizes the cache, and nothing is written.
        """
        initialized = self.has_variable("cache", "projections")
        cached = self.variable("cache", "projections", jnp.zeros, p.shape, p.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        start = index.value
        if initialized:
            cached.value = decode_cache.write(cached.value, p, start, layer=f"Hyena {self.name!r}")
            index.value = start + p.shape[1]
        return cached.value, start


class HyenaBlock(nn.Module):
    """x + Hyena(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

    Attributes:
      config: the model configuration.
    """

    config: HyenaConfig

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"], decode: bool = False) -> Float[Array, "B T D"]:
        # Positional `decode` so that `nn.remat(..., static_argnums=(2,))` can mark it.
        c = self.config
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        kernel_init, out_init = _inits(c)
        y = RMSNorm(c.norm_eps, name="mixer_norm", **dtypes)(x)
        x = x + HyenaOperator(c, name="hyena")(y, decode)
        y = RMSNorm(c.norm_eps, name="mlp_norm", **dtypes)(x)
        y = GatedMlp(
            c.mlp_dim, kernel_init=kernel_init, out_kernel_init=out_init, name="mlp", **dtypes
        )(y)
        return x + y


class Hyena(nn.Module):
    """Hyena language model: tokens [B, T] -> next-token logits [B, T, V].

    `decode=True` feeds a prompt and then a token per call through the operators' caches, with
    the same calling convention as `efficient.models.transformer.Transformer`, so
    `efficient.models.transformer.generate` and `init_cache` work unchanged (see
    `HyenaOperator` for the cost).

    Attributes:
      config: the model configuration.
    """

    config: HyenaConfig

    @nn.compact
    def __call__(
        self,
        tokens: Int[Array, "B T"],
        *,
        positions: Int[Array, "B T"] | None = None,
        train: bool = False,
        decode: bool = False,
    ) -> Float[Array, "B T V"]:
        """Logits of the next token at every position.

        Args:
          tokens: token ids in [0, vocab_size).
          positions: must be None: the filters index positions by their slot 0..T-1 (or the
            cache slot when decoding); accepted for the language-model protocol.
          train: training mode (no dropout; accepted for the trainer's protocol).
          decode: use and extend the operators' caches.

        Returns:
          Logits in the compute dtype.

        Raises:
          ValueError: for explicit `positions`, or a sequence longer than `max_len`.
        """
        del train  # no dropout or other train-only behaviour
        if positions is not None:
            raise ValueError("positions: Hyena's convolutions index positions by slot; pass None.")
        c = self.config
        embed = token_embedding(c)
        x = embed(tokens)  # [B, T, D]
        # static_argnums counts the module as argument 0: `decode` is argument 2.
        block = nn.remat(HyenaBlock, static_argnums=(2,)) if c.remat else HyenaBlock
        for i in range(c.num_layers):
            x = block(c, name=f"layer_{i}")(x, decode)
        return lm_head(c, embed, x)
