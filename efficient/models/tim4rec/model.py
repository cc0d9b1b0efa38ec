"""TiM4Rec: Mamba-2 (SSD) layers whose step sizes are scaled by a time branch, for next-item
recommendation, as the reference code computes them.

TiM4Rec: An Efficient Sequential Recommendation Model Based on Time-Aware Structured State Space
Duality Model (Fan et al., arXiv:2409.16182 §4.2 the time-aware SSD, §4.3 the model); the code of
AlwaysFHao/TiM4Rec @8d4a6cea (`tim4rec.py`, `ssd.py`).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Bool, Float, Float32, Int

from efficient.checks import validates_arguments
from efficient.models.tim4rec.config import TiM4RecConfig
from efficient.nn import CausalConv1d, LayerNorm, Mamba2Mixer
from efficient.nn.next_item import check_inputs, item_scores, last_position

# The reference's FeedForward never receives norm_eps: its LayerNorm keeps the default 1e-12.
_FFN_NORM_EPS = 1e-12


def _kaiming_conv(width: int) -> initializers.Initializer:
    """torch's kaiming_normal_(mode='fan_out') on a depthwise Conv1d weight [C, 1, W]: std
    sqrt(2 / (C W)); on the [W, C] kernel here fan_out is C, hence the scale 2 / W."""
    return initializers.variance_scaling(2.0 / width, "fan_out", "normal")


def _time_dtype(config: TiM4RecConfig) -> Any:
    """float32, or float64 when the model computes in float64 (golden tests)."""
    return jnp.float64 if jnp.dtype(config.dtype) == jnp.float64 else jnp.float32


def _upcast(x: Array) -> Array:
    return x if x.dtype == jnp.float64 else x.astype(jnp.float32)


def _activation(config: TiM4RecConfig):
    return jax.nn.silu if config.resolved_activation == "silu" else jax.nn.hard_swish


class SequenceNorm(nn.Module):
    """LayerNorm over the sequence axis (the last), with a per-position scale and bias of size L
    (the reference's `nn.LayerNorm(seq_len)` on time states).

    With `valid`, the statistics are taken over the real positions only and the padded
    positions come out as 0 (the `mask_padding` option); a row without real positions comes out
    all 0. Computes in float32 (float64 for float64 inputs).

    Attributes:
      epsilon: added to the variance.
      param_dtype: parameter storage dtype.
    """

    epsilon: float
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Float[Array, "*B L"], valid: Bool[Array, "*#B L"] | None = None
    ) -> Float[Array, "*B L"]:
        L = x.shape[-1]
        x = _upcast(x)

        def affine(name, init):
            boxed = nn.with_logical_partitioning(init, ("norm",))
            value = self.param(name, boxed, (L,), self.param_dtype).astype(x.dtype)
            return value.reshape((1,) * (x.ndim - 1) + (L,))

        scale, bias = affine("scale", initializers.ones), affine("bias", initializers.zeros)
        if valid is None:
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        else:
            w = jnp.broadcast_to(valid, x.shape).astype(x.dtype)
            count = jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1.0)
            mean = jnp.sum(w * x, axis=-1, keepdims=True) / count
            var = jnp.sum(w * jnp.square(x - mean), axis=-1, keepdims=True) / count
        y = (x - mean) * lax.rsqrt(var + self.epsilon) * scale + bias
        return y if valid is None else jnp.where(valid, y, 0.0)


class TimeBranch(nn.Module):
    """The time factor τ of the step sizes and the next layer's time state (reference `ssd.py`
    L93-127, L191-205, L259-262), per head h over positions t:

        s = Lin_{L->L}(SiLU(Lin_{L->L}(Dropout(T))))      (mixes positions: not causal)
        u = T ⊙ s                                           (u = T without `position_mlp`)
        τ = act(CConv_2(act(CConv_1(u))))                   (causal depthwise, one channel a head)
        g = σ(Lin_{L->1, or L->L with p2p_residual}(Dropout(T)))
        T' = SequenceNorm(g ⊙ T + (1 - g) ⊙ τ)

    The branch runs in float32 whatever the compute dtype (float64 when that is float64): time
    differences of min-max normalised timestamps are ~1e-3, and bf16 would round most away.

    Attributes:
      config: the model configuration.
    """

    config: TiM4RecConfig

    @nn.compact
    def __call__(
        self,
        state: Float[Array, "B H T"],
        valid: Bool[Array, "B T"] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B T H"], Float[Array, "B H T"]]:
        """τ and the next time state from the time state T.

        Args:
          state: the time state, over positions T = max_len.
          valid: real positions, for `mask_padding` (None: the reference's unmasked form).
          train: dropout on.

        Returns:
          (τ [B, T, H], the next time state [B, H, T]).
        """
        c = self.config
        L = c.max_len
        act = _activation(c)
        common = dict(dtype=_time_dtype(c), param_dtype=c.param_dtype)

        def dense(name: str, width: int) -> nn.Dense:
            return nn.Dense(
                width,
                kernel_init=nn.with_logical_partitioning(
                    initializers.normal(c.init_std), (None, "seq")
                ),
                bias_init=nn.with_logical_partitioning(initializers.zeros, ("seq",)),
                name=name,
                **common,
            )

        def drop(x: Array) -> Array:
            return nn.Dropout(c.time_dropout_rate)(x, deterministic=not train)

        state = state.astype(_time_dtype(c))
        u = state
        if c.position_mlp:
            s = dense("scale_out", L)(jax.nn.silu(dense("scale_in", L)(drop(state))))  # [B, H, T]
            u = state * s
        u = jnp.swapaxes(u, 1, 2)  # [B, T, H]
        conv = functools.partial(
            CausalConv1d,
            c.conv_width,
            channel_axis="heads",
            kernel_init=_kaiming_conv(c.conv_width),
            **common,
        )
        tau = act(conv(name="conv_2")(act(conv(name="conv_1")(u))))  # [B, T, H]
        gate = jax.nn.sigmoid(dense("gate", L if c.p2p_residual else 1)(drop(state)))
        mixed = gate * state + (1.0 - gate) * jnp.swapaxes(tau, 1, 2)  # [B, H, T]
        mask = None if valid is None else valid[:, None, :]  # [B, 1, T]
        return tau, SequenceNorm(c.norm_eps, c.param_dtype, name="norm")(mixed, mask)


class TiSSD(nn.Module):
    """The Mamba-2 mixer with Δ = softplus(dt · τ + dt_bias) (τ from `TimeBranch`), or the plain
    mixer when `time_aware` is off (SSD4Rec). The reference's `TiSSD` (`ssd.py`).

    Attributes:
      config: the model configuration.
    """

    config: TiM4RecConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        state: Float[Array, "B H T"] | None = None,
        valid: Bool[Array, "B T"] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B T D"], Float[Array, "B H T"] | None]:
        """(the mixer's output, the next time state or None)."""
        c = self.config
        tau = None
        if c.time_aware:
            if state is None:
                raise ValueError("state: the time state is required when time_aware=True.")
            tau, state = TimeBranch(c, name="time")(state, valid, train)
        y = Mamba2Mixer(
            state_dim=c.state_dim,
            conv_width=c.conv_width,
            expand=c.expand,
            head_dim=c.head_dim,
            num_groups=1,
            chunk_size=c.chunk_size,
            activation=c.resolved_activation,
            norm_eps=c.norm_eps,
            use_bias=True,
            conv_bias=True,
            kernel_init=initializers.normal(c.init_std),
            conv_kernel_init=_kaiming_conv(c.conv_width),
            conv_bias_init=initializers.zeros,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name="mixer",
        )(x, tau)
        return y, state if c.time_aware else None


class TiSSDLayer(nn.Module):
    """x = LN(Dropout(TiSSD(x)) + x) (no residual when num_layers == 1), then the FFN
    x = LN(Dropout(W2 Dropout(Hardswish(W1 x))) + x) with inner width 4D (reference
    `tim4rec.py` L228-277).

    Attributes:
      config: the model configuration.
    """

    config: TiM4RecConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        state: Float[Array, "B H T"] | None = None,
        valid: Bool[Array, "B T"] | None = None,
        train: bool = False,
    ) -> tuple[Float[Array, "B T D"], Float[Array, "B H T"] | None]:
        c = self.config
        D = x.shape[-1]
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)

        def drop(v: Array) -> Array:
            return nn.Dropout(c.dropout_rate)(v, deterministic=not train)

        def dense(name: str, width: int, axes: tuple[str, str]) -> nn.Dense:
            return nn.Dense(
                width,
                kernel_init=nn.with_logical_partitioning(initializers.normal(c.init_std), axes),
                bias_init=nn.with_logical_partitioning(initializers.zeros, axes[1:]),
                name=name,
                **dtypes,
            )

        y, state = TiSSD(c, name="tissd")(x, state, valid, train)
        y = drop(y)
        if c.num_layers > 1:
            y = y + x
        x = LayerNorm(epsilon=c.norm_eps, name="norm", **dtypes)(y)
        if c.use_ffn:
            h = jax.nn.hard_swish(dense("fc1", 4 * D, ("embed", "mlp"))(x))  # [B, T, 4D]
            h = dense("fc2", D, ("mlp", "embed"))(drop(h))  # [B, T, D]
            x = LayerNorm(epsilon=_FFN_NORM_EPS, name="ffn_norm", **dtypes)(drop(h) + x)
        return x, state


class TiM4Rec(nn.Module):
    """TiM4Rec (or SSD4Rec with `time_aware=False`): next-item scores for item sequences.

    E = LayerNorm(Dropout(Emb(items))); time differences δ_1 = 0, δ_t = ts_t - ts_{t-1};
    T⁰ = SequenceNorm(Dropout(δ)) repeated over the H heads; N x TiSSDLayer; the interest
    vector h = output at position length - 1; scores = h Eᵀ over every embedding row, padding
    row 0 included (RecBole's full-sort evaluation sets that column to -inf; its training
    cross-entropy keeps it).

    Inits as the reference: Linear and Embedding N(0, 0.02) (the padding row too: the
    reference's `_init_weights` overwrites what `padding_idx` zeroed), biases 0, LayerNorms
    1 / 0, convolutions Kaiming-normal (fan_out) with zero biases, Mamba-2's A_log, dt_bias, D.
    Its `padding_idx=0` also stops the lookup gradient of row 0; that path never reaches the
    scores here (the mixer is causal and the time branch reads no items), so it is not copied.

    Attributes:
      config: the model configuration.
    """

    config: TiM4RecConfig

    def setup(self):
        c = self.config
        self.item_embedding = nn.Embed(
            c.num_items + 1,
            c.features,
            embedding_init=nn.with_logical_partitioning(
                initializers.normal(c.init_std), ("vocab", "embed")
            ),
            dtype=c.dtype,
            param_dtype=c.param_dtype,
        )
        self.embed_norm = LayerNorm(epsilon=c.norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
        self.dropout = nn.Dropout(c.dropout_rate)
        self.time_norm = SequenceNorm(c.norm_eps, c.param_dtype) if c.time_aware else None
        self.layers = [TiSSDLayer(c) for _ in range(c.num_layers)]

    def initial_time_state(
        self,
        timestamps: Float[Array, "B T"],
        lengths: Int[Array, " B"],
        train: bool = False,
    ) -> Float[Array, "B H T"]:
        """T⁰: the normalised time differences, one copy per head (reference `tim4rec.py`
        `calculate_time_diff`). Unmasked, the first padded position holds -ts[length - 1] and
        enters the sequence statistics; with `mask_padding` padded positions are 0 and ignored."""
        c = self.config
        ts = timestamps.astype(_time_dtype(c))
        delta = jnp.concatenate([jnp.zeros_like(ts[:, :1]), jnp.diff(ts, axis=1)], axis=1)
        valid = self._valid(lengths, ts.shape[1])
        if valid is not None:
            delta = jnp.where(valid, delta, 0.0)
        delta = self.dropout(delta, deterministic=not train)  # [B, T]
        state = self.time_norm(delta, valid)  # [B, T]
        return jnp.broadcast_to(state[:, None, :], (ts.shape[0], c.num_heads, ts.shape[1]))

    def _valid(self, lengths: Array, T: int) -> Array | None:
        """Real positions [B, T] when padding is masked out of the time branch, else None."""
        if not self.config.mask_padding:
            return None
        return jnp.arange(T, dtype=lengths.dtype)[None, :] < lengths[:, None]

    @validates_arguments
    def encode(
        self,
        items: Int[Array, "B T"],
        timestamps: Float[Array, "B T"],
        lengths: Int[Array, " B"],
        train: bool = False,
    ) -> Float[Array, "B T D"]:
        """The last layer's output at every position.

        Args and Raises: as `__call__`.
        """
        c = self.config
        check_inputs(
            items,
            timestamps,
            lengths,
            max_len=c.max_len,
            exact=c.time_aware,
            num_items=c.num_items,
            time_aware=c.time_aware,
            train=train,
        )
        x = self.embed_norm(self.dropout(self.item_embedding(items), deterministic=not train))
        state, valid = None, None
        if c.time_aware:
            state = self.initial_time_state(timestamps, lengths, train)
            valid = self._valid(lengths, items.shape[1])
        for layer in self.layers:
            x, state = layer(x, state, valid, train)
        return x

    @validates_arguments
    def __call__(
        self,
        items: Int[Array, "B T"],
        timestamps: Float[Array, "B T"],
        lengths: Int[Array, " B"],
        train: bool = False,
    ) -> Float32[Array, "B V"]:
        """Scores of every item id as the next item.

        Args:
          items: item ids in 0..num_items, left-aligned, right-padded with 0.
          timestamps: interaction times (0 where padded), non-decreasing along each sequence;
            ignored when `time_aware` is off.
          lengths: real positions per row (0 for batch padding: that row reads position 0).
          train: dropout on (needs `rngs={"dropout": key}`).

        Returns:
          float32 [B, num_items + 1]; column 0 is the padding item.

        Raises:
          ValueError: a type, shape or dtype is wrong, or T != max_len while `time_aware` (the
            time MLP is L x L; without the time branch any 1 <= T <= max_len is accepted); and,
            in an eager call, an id outside 0..num_items, a length outside 0..T or disagreeing
            with the padding, or (time-aware) timestamps that go back in time.
        """
        h = last_position(self.encode(items, timestamps, lengths, train), lengths)  # [B, D]
        return item_scores(h, self.item_embedding.embedding)
