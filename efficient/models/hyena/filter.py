"""Hyena's implicit long filters: an MLP over positional features times an exponential decay.

Hyena Hierarchy: Towards Larger Convolutional Language Models (Poli et al. 2023, arXiv:2302.10866
§3.3, "Implicit long convolutions": h_t = Window(t) · (FFN ∘ PositionalEncoding)(t)); the
features, Sin activation and decay window follow the Safari code's PositionalEmbedding, Sin and
ExponentialModulation (HazyResearch/safari, src/models/sequence/hyena.py).
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.nn import initializers
from jaxtyping import Array, Float


def positional_features(max_len: int, emb_dim: int) -> np.ndarray:
    """The filter MLP's input at positions 0..max_len-1: [t, cos(f_b w), -sin(f_b w)].

    t = s / (max_len - 1) (0 to 1), w = 2 pi s / max_len at position s, and B = (emb_dim - 1) / 2
    frequencies f_b spaced linearly from 1e-4 to B - 1 — the real and imaginary parts of
    exp(-i f_b w), as Safari's PositionalEmbedding.

    Args:
      max_len: positions.
      emb_dim: features, odd and >= 3.

    Returns:
      float32 [max_len, emb_dim].
    """
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim={emb_dim}: expected an odd integer >= 3.")
    bands = (emb_dim - 1) // 2
    s = np.arange(max_len, dtype=np.float64)[:, None]  # [T, 1]
    t = np.linspace(0.0, 1.0, max_len)[:, None]  # [T, 1]
    f = np.linspace(1e-4, bands - 1, bands)[None, :]  # [1, bands]
    phase = f * (2 * math.pi * s / max_len)  # [T, bands]
    return np.concatenate([t, np.cos(phase), -np.sin(phase)], axis=1).astype(np.float32)


def exponential_decay(
    max_len: int,
    channels: int,
    *,
    fast_decay_pct: float,
    slow_decay_pct: float,
    decay_target: float,
) -> np.ndarray:
    """The decay window exp(-a_c t), t = s / (max_len - 1), at positions s and channels c.

    The rates a_c run linearly from -ln(decay_target) / slow_decay_pct (channel 0) to
    -ln(decay_target) / fast_decay_pct (the last channel), so channel c falls to `decay_target`
    at t = -ln(decay_target) / a_c (Safari's ExponentialModulation with shift 0).

    Returns:
      float32 [max_len, channels].
    """
    log_target = math.log(decay_target)
    rates = np.linspace(-log_target / slow_decay_pct, -log_target / fast_decay_pct, channels)
    t = np.linspace(0.0, 1.0, max_len)[:, None]  # [T, 1]
    return np.exp(-t * rates[None, :]).astype(np.float32)


class ImplicitFilter(nn.Module):
    """h[:, c] = decay[:, c] · MLP(positional_features)[:, c], for `channels` filters.

    MLP: Dense(emb_dim -> filter_order) -> Sin, `filter_layers` x (Dense -> Sin), then a bias-free
    Dense(filter_order -> channels). As in Safari, one Sin module (one learnable frequency
    vector [filter_order], initialised to `frequency`) serves every layer. Everything runs in
    float32: the filters feed `fft_conv`, which takes float32 filters, and the decay spans two
    decades.

    Attributes:
      channels: C, the number of filters.
      filter_order: MLP width.
      filter_layers: hidden layers after the first.
      emb_dim: positional features.
      frequency: initial Sin frequency.
      max_len: the positional features and window are defined on [0, max_len).
      fast_decay_pct, slow_decay_pct, decay_target: see `exponential_decay`.
      kernel_init: initializer of the (unboxed) Dense kernels.
      param_dtype: parameter storage dtype.
    """

    channels: int
    filter_order: int
    filter_layers: int
    emb_dim: int
    frequency: float
    max_len: int
    fast_decay_pct: float
    slow_decay_pct: float
    decay_target: float
    kernel_init: initializers.Initializer = initializers.normal(0.02)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, length: int) -> Float[Array, "L C"]:
        """The first `length` taps of every filter.

        Raises:
          ValueError: if `length` exceeds `max_len`.
        """
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length={length}: filters are defined for 1..max_len={self.max_len}.")
        z = jnp.asarray(positional_features(self.max_len, self.emb_dim)[:length])  # [L, E]
        window = exponential_decay(
            self.max_len,
            self.channels,
            fast_decay_pct=self.fast_decay_pct,
            slow_decay_pct=self.slow_decay_pct,
            decay_target=self.decay_target,
        )[:length]  # [L, C]
        # The MLP's hidden width is tiny and replicated (None); its output is the channel axis of
        # the operator's streams ('mlp'), so a tensor-sharded operator gets its filters locally.
        hidden = (None, None)
        freq = self.param(
            "frequency",
            nn.with_logical_partitioning(initializers.constant(self.frequency), (None,)),
            (self.filter_order,),
            self.param_dtype,
        ).astype(jnp.float32)

        def dense(features, name, axes, use_bias=True):
            return nn.Dense(
                features,
                use_bias=use_bias,
                kernel_init=nn.with_logical_partitioning(self.kernel_init, axes),
                bias_init=nn.with_logical_partitioning(initializers.zeros, axes[1:]),
                dtype=jnp.float32,
                param_dtype=self.param_dtype,
                name=name,
            )

        h = jnp.sin(freq[None, :] * dense(self.filter_order, "dense_0", hidden)(z))  # [L, M]
        for i in range(self.filter_layers):
            h = jnp.sin(freq[None, :] * dense(self.filter_order, f"dense_{i + 1}", hidden)(h))
        h = dense(self.channels, "out", (None, "mlp"), use_bias=False)(h)  # [L, C]
        return h * jnp.asarray(window)
