"""The LaCT LM layer: one q, k, v feeding sliding-window attention and large-chunk test-time
training, summed before the output projection.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884) §3, §5.2, Alg. 2; the wiring
follows the released LM layer (a1600012888/LaCT, lact_llm/lact_model/layer_lact_swiglu.py).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.nn import initializers
from jaxtyping import Array, Float, Int

from efficient.models.lact.config import NS_COEFFICIENTS, LaCTConfig
from efficient.nn import RMSNorm, attention_mask, decode_cache, dot_product_attention, rope
from efficient.nn.attention import Implementation
from efficient.nn.lact import FastWeights, lact, swiglu_fast

_L2_EPS = 1e-5  # the code's l2_norm: x / (‖x‖ + 1e-5)


def sliding_window_attention(
    q: Float[Array, "B T H K"],
    k: Float[Array, "B T H K"],
    v: Float[Array, "B T H K"],
    *,
    window: int,
    implementation: Implementation = "einsum",
) -> Float[Array, "B T H K"]:
    """Causal attention of slot t to slots t - window < s <= t, in blocks of `window` queries.

    Each block of w = `window` queries attends to its own block and the one before (2w keys), so
    logits cost O(T · 2w) instead of O(T²); the mask is `efficient.nn.attention_mask`'s causal
    window (flash-attention's window (w - 1, 0)) on slot indices. T <= w is one plain masked call.

    Args:
      q: queries (RoPE applied).
      k: keys (RoPE applied).
      v: values.
      window: w >= 1.
      implementation: see `efficient.nn.dot_product_attention`.

    Returns:
      The attention output, in q's dtype.
    """
    B, T, H, K = q.shape
    if window >= T:
        slots = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (1, T))
        mask = attention_mask(slots, slots, causal=True, sliding_window=window)  # [1, 1, T, T]
        return dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    w = window
    n = -(-T // w)
    pad = ((0, 0), (0, n * w - T), (0, 0), (0, 0))

    def blocks(a):
        return jnp.pad(a, pad).reshape(B, n, w, H, K)  # [B, n, w, H, K]

    def with_previous(a):
        previous = jnp.concatenate([jnp.zeros_like(a[:, :1]), a[:, :-1]], axis=1)
        return jnp.concatenate([previous, a], axis=2).reshape(B * n, 2 * w, H, K)

    q_slots = jnp.arange(n * w, dtype=jnp.int32).reshape(n, w)  # [n, w]
    k_slots = jnp.concatenate([q_slots - w, q_slots], axis=1)  # [n, 2w]
    qs, ks = q_slots[:, :, None], k_slots[:, None, :]
    mask = (ks <= qs) & (qs - ks < w) & (ks >= 0)  # [n, w, 2w]; slots < 0 are the zero padding
    mask = jnp.broadcast_to(mask[None], (B, n, w, 2 * w)).reshape(B * n, 1, w, 2 * w)
    out = dot_product_attention(
        blocks(q).reshape(B * n, w, H, K),
        with_previous(blocks(k)),
        with_previous(blocks(v)),
        mask=mask,
        implementation=implementation,
    )  # [B n, w, H, K]
    return out.reshape(B, n * w, H, K)[:, :T]


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _l2_normalize(x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    return (x32 / (jnp.linalg.norm(x32, axis=-1, keepdims=True) + _L2_EPS)).astype(x.dtype)


def _inits(config: LaCTConfig) -> tuple[initializers.Initializer, initializers.Initializer]:
    """(kernel init, init of the projections that end a residual branch)."""
    std = config.init_std
    out_std = std / math.sqrt(2 * config.num_layers) if config.scale_residual_init else std
    return initializers.normal(std), initializers.normal(out_std)


class LaCTLayer(nn.Module):
    """q, k, v = x W_{q,k,v}; out = W_o(SWA(q, k, v) + gate ⊙ RMSNorm(LaCT(q', k', v'))).

    Attention branch: RoPE on the H heads of width K, causal sliding-window attention (window w).
    TTT branch, on the same q, k, v: per-channel scale and offset on q and k (init 1 and 0),
    SiLU on q, k, v, L2 norm per TTT head, the attention's RoPE (on the same width-K split), then
    `efficient.nn.lact` per TTT head with learned initial fast weights and per-token
    η = softplus(Linear_{D→3 nh}(x) + softplus⁻¹(base_lr)), β = σ(Linear_{D→nh}(x)); the output is
    RMS-normalised per head (one shared scale over the head width) and multiplied by the per-head
    gate SiLU(Linear_{D→nh}(x)).

    Decoding (`decode=True`): the layer's inputs and positions of every slot seen so far sit in
    the 'cache' collection (`inputs` [B, S_max, D], `positions` [B, S_max], `cache_index`); each
    call writes the new slots and recomputes the layer over the whole cache, keeping the new
    slots' outputs. That is exact: attention is causal by slot and a chunk's fast weights only
    depend on earlier chunks, so unwritten (zero) slots never reach earlier ones. It costs a
    forward over S_max per call (the LM code's own generation recomputes the whole sequence too,
    `use_cache=False`); no recurrent fast-weight state is carried.

    Attributes:
      config: the model configuration.
    """

    config: LaCTConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        positions: Int[Array, "B T"] | None = None,
        decode: bool = False,
    ) -> Float[Array, "B T D"]:
        """Mix tokens.

        Args:
          x: the normalised block input.
          positions: RoPE positions; None means the slots 0..T-1 (or continuing the cache).
            Masks and chunks always follow slot order.
          decode: use and extend the cache.

        Returns:
          [B, T, D].
        """
        B, T, _ = x.shape
        start = None
        if decode:
            x, positions, start = self._update_cache(x, positions)
        elif positions is None:
            positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        y = self._mix(x, positions)
        if decode:
            y = lax.dynamic_slice_in_dim(y, start, T, axis=1)  # [B, T, D]
            y = decode_cache.poison_overflow(y, start, T, x.shape[1])  # NaN past the cache
        return y

    def _mix(self, x: Array, positions: Array) -> Array:
        c = self.config
        B, T, D = x.shape
        H, K, nh, dk = c.num_heads, c.head_dim, c.num_lact_heads, c.lact_head_dim
        dtype, pdtype = c.dtype, c.param_dtype
        kernel_init, out_init = _inits(c)

        def dense(name, features, axes, use_bias):
            return nn.DenseGeneral(
                features,
                use_bias=use_bias,
                kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                bias_init=nn.with_logical_partitioning(initializers.zeros, axes[1:]),
                dtype=dtype,
                param_dtype=pdtype,
                name=name,
            )(x)

        heads = ("embed", "heads", "head_dim")
        q = dense("query", (H, K), heads, False)  # [B, T, H, K]
        k = dense("key", (H, K), heads, False)
        v = dense("value", (H, K), heads, False)

        attended = sliding_window_attention(
            rope(q, positions, theta=c.rope_theta),
            rope(k, positions, theta=c.rope_theta),
            v,
            window=c.sliding_window,
            implementation=c.attention_implementation,
        )  # [B, T, H, K]

        # TTT branch. The LM code applies the learned scale/offset to the TTT q, k (the paper's
        # Alg. 2 and its minimal implementation to the attention's); this follows the LM code.
        per_channel = (None, "heads", "head_dim")
        scale = self.param(
            "qk_scale",
            nn.with_logical_partitioning(initializers.ones, per_channel),
            (2, H, K),
            pdtype,
        ).astype(dtype)
        offset = self.param(
            "qk_offset",
            nn.with_logical_partitioning(initializers.zeros, per_channel),
            (2, H, K),
            pdtype,
        ).astype(dtype)
        fq = jax.nn.silu(q * scale[0][None, None] + offset[0][None, None])  # [B, T, H, K]
        fk = jax.nn.silu(k * scale[1][None, None] + offset[1][None, None])
        fv = jax.nn.silu(v).reshape(B, T, nh, dk)  # [B, T, nh, dk]

        def normalise(a):
            a = _l2_normalize(a.reshape(B, T, nh, dk)).reshape(B, T, H, K)
            if c.ttt_rope:  # on the attention's width-K split, as the code
                a = rope(a, positions, theta=c.rope_theta)
            return a.reshape(B, T, nh, dk)  # [B, T, nh, dk]

        fq, fk = normalise(fq), normalise(fk)
        lr = jax.nn.softplus(
            dense("lr", (nh, 3), ("embed", "heads", None), True).astype(jnp.float32)
            + _inv_softplus(c.base_lr)
        )  # [B, T, nh, 3]: (η0, η1, η2) of (W0, W1, W2), the code's column order
        beta = None
        if c.momentum:
            beta = jax.nn.sigmoid(
                dense("momentum", nh, ("embed", "heads"), True).astype(jnp.float32)
            )  # [B, T, nh]
        o = self._fast_weights(fq, fk, fv, lr, beta)  # [B, T, nh, dk]
        o = RMSNorm(c.ttt_norm_eps, name="ttt_norm", dtype=dtype, param_dtype=pdtype)(o)
        gate = jax.nn.silu(dense("gate", nh, ("embed", "heads"), True))  # [B, T, nh]
        o = (o * gate[..., None]).reshape(B, T, H, K)  # [B, T, H, K]

        return nn.DenseGeneral(
            D,
            axis=(-2, -1),
            use_bias=False,
            kernel_init=nn.with_logical_partitioning(out_init, ("heads", "head_dim", "embed")),
            dtype=dtype,
            param_dtype=pdtype,
            name="out",
        )(attended + o)  # [B, T, D]

    def _fast_weights(self, q, k, v, lr, beta) -> Array:
        """Initial fast weights (learned) and `lact` per batch row and TTT head."""
        c = self.config
        nh, dk, dh, r = (
            c.num_lact_heads,
            c.lact_head_dim,
            c.resolved_fast_hidden_dim,
            c.fast_weight_rank,
        )
        pdtype = c.param_dtype
        per_head = ("heads", None, None)

        def param(name, std, shape):
            init = nn.with_logical_partitioning(initializers.normal(std), per_head)
            return self.param(name, init, shape, pdtype).astype(jnp.float32)

        def gate_or_up(name):  # [nh, dh, dk]
            if r is None:
                return param(name, 1.0 / math.sqrt(dk), (nh, dh, dk))
            gain = c.fast_weight_init_gain
            left = param(f"{name}_left", gain / math.sqrt(r), (nh, dh, r))
            right = param(f"{name}_right", gain / math.sqrt(dk), (nh, r, dk))
            eye = 0.5 * jnp.eye(dh, dk, dtype=jnp.float32)[None]  # [1, dh, dk]
            return jnp.einsum("nhr,nrk->nhk", left, right) + eye

        initial = FastWeights(
            w0=gate_or_up("w0"),
            w1=param("w1", 1.0 / math.sqrt(dh), (nh, dk, dh)),
            w2=gate_or_up("w2"),
        )
        q, k, v, lr = (a.transpose(0, 2, 1, 3) for a in (q, k, v, lr))  # [B, nh, T, ·]
        beta = None if beta is None else beta.transpose(0, 2, 1)  # [B, nh, T]
        if c.update_fast_weights:

            def one(q_, k_, v_, lr_, beta_, w):
                return lact(
                    q_,
                    k_,
                    v_,
                    lr_,
                    w,
                    chunk_size=c.chunk_size,
                    momentum=beta_,
                    muon=c.muon,
                    ns_coefficients=NS_COEFFICIENTS[c.ns_coefficients],
                    weight_norm=c.weight_norm,
                    order="apply_then_update",
                )

            heads = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0))
            o = jax.vmap(heads, in_axes=(0, 0, 0, 0, 0, None))(q, k, v, lr, beta, initial)
        else:

            def frozen(q_, w):
                return swiglu_fast(w, q_.astype(jnp.float32)).astype(q_.dtype)

            o = jax.vmap(jax.vmap(frozen), in_axes=(0, None))(q, initial)
        return o.transpose(0, 2, 1, 3)  # [B, T, nh, dv]

    def _update_cache(self, x: Array, positions: Array | None) -> tuple[Array, Array, Array]:
        """Write T new inputs (and positions) at the cache index; return the whole cache.

        At init the input is [B, S_max, D]: it sizes the cache, and nothing is written.
        """
        B, T, _ = x.shape
        initialized = self.has_variable("cache", "inputs")
        inputs = self.variable("cache", "inputs", jnp.zeros, x.shape, x.dtype)
        cached_positions = self.variable("cache", "positions", jnp.zeros, (B, T), jnp.int32)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        start = index.value
        if positions is None:
            positions = start + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        if initialized:
            layer = f"LaCT {self.name!r}"
            inputs.value = decode_cache.write(inputs.value, x, start, layer=layer)
            cached_positions.value = decode_cache.write(
                cached_positions.value, positions, start, layer=layer
            )
            index.value = start + T
        return inputs.value, cached_positions.value, start
