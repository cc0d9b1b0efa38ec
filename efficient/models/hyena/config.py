"""Hyena language-model configuration and presets.

Hyena Hierarchy: Towards Larger Convolutional Language Models (Poli et al. 2023, arXiv:2302.10866
§3); the filter hyperparameters follow the Safari code's Pile configs (HazyResearch/safari,
configs/experiment/pile/hyena.yaml).
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from efficient.checks import (
    check_field_types,
    check_float_dtypes,
    check_positive,
    check_positive_ints,
    validates_arguments,
)
from pallas_kernels.fft_conv import api as fft_conv_api

# The causal FFT of a length-T sequence with a length-T filter needs N >= 2T - 1.
MAX_LEN_LIMIT = fft_conv_api.MAX_FFT_SIZE // 2

# fft_conv's signal dtypes (pallas_kernels/fft_conv/api.py): the compute dtype is the u it gets.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class HyenaConfig:
    """A pre-norm decoder whose token mixer is the Hyena operator: token embedding,
    `num_layers` x (RMSNorm -> Hyena operator -> residual, RMSNorm -> SwiGLU -> residual), final
    RMSNorm, output head — the transformer's block with attention replaced.

    Attributes:
      vocab_size: V (256 for bytes).
      features: model width D.
      num_layers: decoder blocks.
      order: N, the number of gated long convolutions per operator (the paper's Hyena order; the
        input projection makes N + 1 streams v, x_1..x_N).
      filter_order: width of the implicit-filter MLP (Safari's `filter_order`).
      filter_layers: hidden Dense + Sin layers after the first one (Safari's `num_inner_mlps`).
      emb_dim: positional features of the filter MLP: t, then (emb_dim - 1) / 2 cosines and as
        many sines; odd, >= 3.
      filter_frequency: initial frequency w of the Sin activation sin(w x) (Safari's `w`: 14 in
        its Pile configs, learnable).
      short_filter_size: taps of the causal depthwise convolution over the projections.
      fast_decay_pct, slow_decay_pct, decay_target: the exponential decay window: channel c is
        multiplied by exp(-a_c t) with t in [0, 1] over `max_len` and a_c spaced linearly from
        -ln(target) / slow_decay_pct to -ln(target) / fast_decay_pct (Safari's
        ExponentialModulation), so the fastest channel reaches `decay_target` at
        t = fast_decay_pct.
      mlp_dim: SwiGLU hidden width F.
      use_bias: biases on the operator's input and output projections (as the Safari code).
      norm_eps: RMSNorm epsilon.
      tie_embeddings: the output head is the transposed token embedding.
      init_std: standard deviation of the normal init of every kernel (the filter MLP's too, as
        the Safari LM's `_init_weights`) and the embedding; output projections of residual
        branches get init_std / sqrt(2 * num_layers) when `scale_residual_init`.
      scale_residual_init: see `init_std`.
      remat: rematerialise each block in the backward pass.
      max_len: the longest sequence; the positional features and the decay window are defined
        on [0, max_len), so a filter of length T is the first T taps of the same function.
      fft_implementation: passed to `pallas_kernels.fft_conv.fft_conv` ("auto": Pallas on
        TPU, jnp.fft on GPU and CPU, where it was measured faster).
      fft_save_residuals: passed to `fft_conv(save_residuals=...)`: on the kernel paths the
        backward reads the forward's input spectrum and pre-gate output instead of recomputing
        them (two transforms instead of four, for about 8 bytes per frequency per row).
      dtype: compute dtype (filters are always computed in float32: fft_conv takes f32 filters).
      param_dtype: parameter storage dtype.
    """

    vocab_size: int = 256
    features: int = 256
    num_layers: int = 4
    order: int = 2
    filter_order: int = 64
    filter_layers: int = 2
    emb_dim: int = 33
    filter_frequency: float = 14.0
    short_filter_size: int = 3
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    decay_target: float = 1e-2
    mlp_dim: int = 768
    use_bias: bool = True
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    init_std: float = 0.02
    scale_residual_init: bool = False
    remat: bool = False
    max_len: int = 2048
    fft_implementation: fft_conv_api.Implementation = "auto"
    fft_save_residuals: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("param_dtype",))
        check_positive_ints(self, (
            "vocab_size", "features", "num_layers", "order", "filter_order", "short_filter_size",
            "mlp_dim", "max_len",
        ))  # fmt: skip
        if self.filter_layers < 0:
            raise ValueError(f"filter_layers={self.filter_layers!r}: expected an integer >= 0.")
        check_positive_ints(self, ("emb_dim",))
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(
                f"emb_dim={self.emb_dim}: expected an odd integer >= 3 (t, then cosine and sine "
                "pairs)."
            )
        check_positive(
            self, ("fast_decay_pct", "slow_decay_pct", "norm_eps", "filter_frequency", "init_std")
        )
        if not 0 < self.decay_target < 1:
            raise ValueError(f"decay_target={self.decay_target}: expected in (0, 1).")
        if self.max_len > MAX_LEN_LIMIT:
            raise ValueError(
                f"max_len={self.max_len}: at most {MAX_LEN_LIMIT} (the causal FFT size 2 * max_len "
                "must stay within fft_conv's 2**20)."
            )
        try:
            dtype = jnp.dtype(self.dtype).name
        except TypeError:
            dtype = None
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"dtype={self.dtype!r}: expected one of {', '.join(COMPUTE_DTYPES)} (fft_conv's "
                "signal dtypes)."
            )

    def num_params(self) -> int:
        """Parameter count from the formula (tests compare it with the initialised model)."""
        D, N, F, V, W = (
            self.features,
            self.order,
            self.mlp_dim,
            self.vocab_size,
            (self.short_filter_size),
        )
        E, M = self.emb_dim, self.filter_order
        bias = 1 if self.use_bias else 0
        projections = D * (N + 1) * D + D * D + bias * ((N + 1) * D + D)
        short_filter = (W + 1) * (N + 1) * D  # depthwise taps + bias
        # Filter MLP: Dense(E -> M), filter_layers x Dense(M -> M), Dense(M -> N D, no bias);
        # one shared Sin frequency vector [M]; the skip term D_i per channel [N D].
        implicit = (E + 1) * M + self.filter_layers * (M + 1) * M + M * N * D + M + N * D
        block = projections + short_filter + implicit + 3 * D * F + 2 * D
        head = 0 if self.tie_embeddings else D * V
        return V * D + self.num_layers * block + D + head

    def num_non_embedding_params(self) -> int:
        """Parameters outside the embedding and the output head (the 6ND convention)."""
        embeddings = self.vocab_size * self.features * (1 if self.tie_embeddings else 2)
        return self.num_params() - embeddings

    @classmethod
    def kjv(cls, **overrides) -> "HyenaConfig":
        """The `transformer/kjv` model with attention replaced: D 256, 4 layers, SwiGLU 768, tied
        bytes; order 2, filter MLP 64 wide over 33 positional features (Safari's Pile values)."""
        return cls(**{**dict(
            vocab_size=256, features=256, num_layers=4, order=2, filter_order=64, emb_dim=33,
            mlp_dim=768, tie_embeddings=True, max_len=1024,
        ), **overrides})  # fmt: skip

    @classmethod
    def smoke(cls, **overrides) -> "HyenaConfig":
        """Tiny: 2 layers of width 64, filter MLP 16 wide over 5 features, bytes; for tests."""
        return cls(**{**dict(
            vocab_size=256, features=64, num_layers=2, order=2, filter_order=16, emb_dim=5,
            mlp_dim=128, max_len=256,
        ), **overrides})  # fmt: skip
