"""The Slow-Fast video MLLM: hybrid decoder layers whose text queries cross-attend to every
frame's tokens, next to a compact set of fast visual tokens in the LLM input.

Slow-Fast Architecture for Video Multi-Modal Large Language Models (Shi et al.,
arXiv:2504.01328 §3); the layer as the released code computes it
(`text-only-vanilla-flashattn` with `whole-dynamic-tanh-warmup` gating, in
SHI-Labs/Slow-Fast-Video-Multimodal-LLM @69676a1):
x̂ = RMSNorm_in(x), Ŝ = RMSNorm_in(S) with the same weights; A = causal self-attention of x̂
before the output projection (post-RoPE queries Q); for text tokens only,
C = softmax(Q K_sᵀ / sqrt(K) + padmask) V_s with [K_s; V_s] = Ŝ W_kv + b_kv (no RoPE on K_s,
W_kv initialised from the layer's W_k, W_v), A ← A + tanh(w_gᵀ A + b_g) tanh(α) C, α = 0 at init;
h = x + W_o A (the output projection is shared), out = h + MLP(RMSNorm_post(h)).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.nn import initializers
from jaxtyping import Array, Bool, Float, Int

from efficient.models.slowfast_mllm.config import SlowFastConfig
from efficient.models.slowfast_mllm.pipeline import fast_tokens, slow_tokens, spatial_pool
from efficient.models.transformer import DecoderBlock, TransformerConfig
from efficient.models.transformer.model import lm_head, residual_inits, token_embedding
from efficient.models.vit import ViT
from efficient.nn import GatedMlp, RMSNorm, attention_mask, dot_product_attention, rope
from efficient.nn.attention import head_projection, output_projection
from efficient.nn.mlp import gelu_exact

# Token types of the released code: 1 system/user text, 2 response text, 3 visual, 4 padding.
TEXT_PROMPT, TEXT_RESPONSE, VISUAL, PADDING = 1, 2, 3, 4
# The parameters a hybrid layer adds to a decoder layer (under its 'attention').
_CROSS_PARAMS = ("cross_key", "cross_value", "gate", "alpha")


def _copy_of(module: nn.Module, name: str):
    """An initializer that returns the current value of `module`'s parameter `name` (which must
    already exist): the cross-attention KV starts as the layer's own K / V projection."""

    def init(*_):
        return nn.unbox(module.variables["params"][name])

    return init


class HybridAttention(nn.Module):
    """Causal GQA self-attention whose text queries also read the slow tokens (see the module
    docstring). Its query / key / value / out parameters are those of
    `efficient.nn.MultiHeadAttention` in a `DecoderBlock`, so a plain layer's weights load as is.

    Attributes:
      config: the decoder's configuration.
      alpha_init: initial value of the gate scalar alpha (the paper: 0, so that the layer starts
        as the plain self-attention layer).
    """

    config: TransformerConfig
    alpha_init: float = 0.0

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        slow: Float[Array, "B S D"],
        *,
        positions: Int[Array, "B T"],
        slow_mask: Bool[Array, "B S"],
        query_mask: Bool[Array, "B T"],
        cross_from: int = 0,
    ) -> Float[Array, "B T D"]:
        """Attention output after the shared output projection.

        Args:
          x: normalised hidden states.
          slow: normalised slow tokens (the same RMSNorm as `x`).
          positions: RoPE positions of `x`.
          slow_mask: False marks padding slow tokens; a sample with none True gets no
            cross-attention at all (the released `all_text_mask`).
          query_mask: True for the tokens that query the slow tokens (text).
          cross_from: positions before it never query (static): the cross-attention, the gate
            and the KV-side work run on `x[:, cross_from:]` only. The decoder passes the length
            of its visual prefix, so that, as in the released kernel, only the text queries are
            computed (at 128 frames on Qwen2-7B, querying from every position would cost ~4% of
            the prefill instead of ~0.4%).
        """
        c = self.config
        B, T, D = x.shape
        H, G, K = c.num_heads, c.kv_heads, c.resolved_head_dim
        kernel_init, out_init = residual_inits(c)
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)

        def projection(name: str, heads: int, axis: str, **inits) -> nn.DenseGeneral:
            return head_projection(
                name, heads, K, axis, use_bias=c.qkv_bias, kernel_init=kernel_init, **inits,
                **dtypes,
            )  # fmt: skip

        query, key, value = (
            projection("query", H, "heads"),
            projection("key", G, "kv_heads"),
            projection("value", G, "kv_heads"),
        )
        q = rope(query(x), positions, theta=c.rope_theta)  # [B, T, H, K]
        k = rope(key(x), positions, theta=c.rope_theta)  # [B, T, G, K]
        v = value(x)
        mask = attention_mask(positions, positions, causal=True, sliding_window=c.sliding_window)
        a = dot_product_attention(
            q, k, v, mask=mask, logit_soft_cap=c.logit_soft_cap,
            implementation=c.attention_implementation,
        )  # [B, T, H, K]  # fmt: skip

        # Cross-attention KV: always with biases (the released Linear(D, 2 G K, bias=True)),
        # initialised from W_k / W_v (and their biases, zeros when the LLM has none).
        def cross(name: str, source: nn.DenseGeneral) -> nn.DenseGeneral:
            bias = {"bias_init": _copy_of(source, "bias")} if c.qkv_bias else {}
            return head_projection(
                name, G, K, "kv_heads", use_bias=True, kernel_init=_copy_of(source, "kernel"),
                **bias, **dtypes,
            )  # fmt: skip

        k_slow = cross("cross_key", key)(slow)  # [B, S, G, K], no RoPE
        v_slow = cross("cross_value", value)(slow)
        if not 0 <= cross_from < T:
            raise ValueError(f"cross_from={cross_from}: expected a position in [0, {T}).")
        n = T - cross_from  # the positions that may query
        c_out = dot_product_attention(
            q[:, cross_from:], k_slow, v_slow, mask=slow_mask[:, None, None, :],
            implementation=c.attention_implementation,
        )  # [B, n, H, K]  # fmt: skip
        gate = nn.Dense(
            1,
            kernel_init=nn.with_logical_partitioning(initializers.normal(c.init_std), (None, None)),
            bias_init=nn.with_logical_partitioning(initializers.zeros, (None,)),
            name="gate",
            **dtypes,
        )(a[:, cross_from:].reshape(B, n, H * K))  # [B, n, 1]
        alpha = self.param(
            "alpha",
            nn.with_logical_partitioning(initializers.constant(self.alpha_init), ()),
            (),
            c.param_dtype,
        )
        g = jnp.tanh(gate.astype(jnp.float32)) * jnp.tanh(alpha.astype(jnp.float32))  # [B, n, 1]
        reads = query_mask[:, cross_from:] & jnp.any(slow_mask, axis=-1, keepdims=True)  # [B, n]
        delta = g[..., None] * c_out.astype(jnp.float32)  # [B, n, H, K]
        delta = jnp.where(reads[:, :, None, None], delta, 0.0)
        a = a.at[:, cross_from:].add(delta.astype(a.dtype))
        return output_projection(D, use_bias=False, kernel_init=out_init, name="out", **dtypes)(
            a
        )  # [B, T, D]


class HybridDecoderBlock(nn.Module):
    """`DecoderBlock` with `HybridAttention`: the same parameters plus the cross-attention ones.

    Attributes:
      config: the decoder's configuration.
      alpha_init: `HybridAttention.alpha_init`.
    """

    config: TransformerConfig
    alpha_init: float = 0.0

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "B T D"],
        positions: Int[Array, "B T"],
        slow: Float[Array, "B S D"],
        slow_mask: Bool[Array, "B S"],
        query_mask: Bool[Array, "B T"],
        cross_from: int = 0,
    ) -> Float[Array, "B T D"]:
        c = self.config
        dtypes = dict(dtype=c.dtype, param_dtype=c.param_dtype)
        kernel_init, out_init = residual_inits(c)
        norm = RMSNorm(c.norm_eps, name="attention_norm", **dtypes)  # shared by x and the slow
        y = HybridAttention(c, self.alpha_init, name="attention")(
            norm(x), norm(slow), positions=positions, slow_mask=slow_mask,
            query_mask=query_mask, cross_from=cross_from,
        )  # fmt: skip
        x = x + y
        y = RMSNorm(c.norm_eps, name="mlp_norm", **dtypes)(x)
        y = GatedMlp(
            c.mlp_dim, kernel_init=kernel_init, out_kernel_init=out_init, name="mlp", **dtypes
        )(y)
        return x + y


class SlowFastDecoder(nn.Module):
    """The LLM: `efficient.models.transformer.Transformer`'s parameters and computation, with
    hybrid layers at `config.hybrid_layers`, optional embeddings before the text (the fast
    visual tokens) and the slow tokens as cross-attention context.

    Attributes:
      config: the model configuration (its `llm` and hybrid-layer fields).
    """

    config: SlowFastConfig

    @nn.compact
    def __call__(
        self,
        tokens: Int[Array, "B L"],
        *,
        prefix: Float[Array, "B P D"] | None = None,
        token_types: Int[Array, "B _PL"] | None = None,
        slow: Float[Array, "B S D"] | None = None,
        slow_mask: Bool[Array, "B _S"] | None = None,
    ) -> Float[Array, "B L V"]:
        """Next-token logits of the text positions.

        Args:
          tokens: text token ids.
          prefix: embeddings placed before the text (visual tokens); None: text only.
          token_types: of every position, prefix included (1/2 text, 3 visual, 4 padding); None:
            the prefix is visual and the text is text. Only text positions of the text part
            query the slow tokens: the prefix never does, and its queries are not computed.
          slow: the cross-attention context; None: none (hybrid layers add nothing).
          slow_mask: False marks padding slow tokens; None: all real.
        """
        sf = self.config
        c = sf.llm
        embed = token_embedding(c)
        x = embed(tokens)  # [B, L, D]
        B, L, D = x.shape
        P = 0 if prefix is None else prefix.shape[1]
        if prefix is not None:
            if prefix.shape[0] != B or prefix.shape[2] != D:
                raise ValueError(f"prefix must be [B={B}, P, D={D}], got {prefix.shape}.")
            x = jnp.concatenate([prefix.astype(x.dtype), x], axis=1)  # [B, P + L, D]
        if token_types is None:
            token_types = jnp.concatenate(
                [jnp.full((B, P), VISUAL, jnp.int32), jnp.full((B, L), TEXT_PROMPT, jnp.int32)],
                axis=1,
            )
        elif token_types.shape != (B, P + L):
            raise ValueError(
                f"token_types must cover the prefix and the text, [B, P + L] = {(B, P + L)}, "
                f"got {token_types.shape}."
            )
        if slow is None:  # a size-1 fully masked context: the hybrid layers add exactly 0
            slow, slow_mask = jnp.zeros((B, 1, D), x.dtype), jnp.zeros((B, 1), bool)
        elif slow.shape[0] != B or slow.shape[2] != D:
            raise ValueError(f"slow must be [B={B}, S, D={D}], got {slow.shape}.")
        if slow_mask is None:
            slow_mask = jnp.ones(slow.shape[:2], bool)
        elif slow_mask.shape != slow.shape[:2]:
            raise ValueError(
                f"slow_mask must match the slow tokens [B, S] = {slow.shape[:2]}, got "
                f"{slow_mask.shape}."
            )
        slow = slow.astype(x.dtype)
        query_mask = token_types <= TEXT_RESPONSE  # [B, P + L]
        positions = jnp.broadcast_to(jnp.arange(P + L, dtype=jnp.int32), (B, P + L))
        hybrid = set(sf.hybrid_layers)
        for i in range(c.num_layers):
            if i in hybrid:
                x = HybridDecoderBlock(c, sf.alpha_init, name=f"layer_{i}")(
                    x, positions, slow, slow_mask, query_mask, P
                )
            else:
                x = DecoderBlock(c, name=f"layer_{i}")(x, positions)
        x = x[:, P:]  # the head reads only the text
        return lm_head(c, embed, x)


class FrameEncoder(nn.Module):
    """Frames -> token maps in the LLM's width: vision encoder (or pre-encoded features), the
    `mlp2x_gelu` projector, then the per-frame `frame_pooling` average pool.

    Attributes:
      config: the model configuration.
    """

    config: SlowFastConfig

    @nn.compact
    def __call__(
        self, frames: Float[Array, "B F ..."], *, train: bool
    ) -> Float[Array, "B F g g D"]:
        sf = self.config
        dtypes = dict(dtype=sf.dtype, param_dtype=sf.param_dtype)
        B, F = frames.shape[:2]
        n = sf.feature_grid
        if sf.vision is None:
            expected = (n, n, sf.vision_features)
            if frames.shape[2:] != expected:
                raise ValueError(
                    f"frames must be pre-encoded feature maps [B, F, {n}, {n}, "
                    f"{sf.vision_features}] (config.vision is None), got {frames.shape}."
                )
            feats = frames.reshape(B, F, n * n, sf.vision_features)
        else:
            v = sf.vision
            expected = (v.image_size, v.image_size, v.in_channels)
            if frames.shape[2:] != expected:
                raise ValueError(
                    f"frames must be [B, F, {v.image_size}, {v.image_size}, {v.in_channels}], "
                    f"got {frames.shape}."
                )
            feats = ViT(v, name="vision")(
                frames.reshape(B * F, *expected), train=train, features_only=True
            ).reshape(B, F, n * n, v.features)
            if sf.freeze_vision:
                feats = jax.lax.stop_gradient(feats)
        D = sf.llm.features
        dense = dict(
            kernel_init=nn.with_logical_partitioning(initializers.lecun_normal(), ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("mlp",)),
            **dtypes,
        )
        x = nn.Dense(D, name="projector_fc1", **dense)(feats)
        x = nn.Dense(D, name="projector_fc2", **dense)(gelu_exact(x))  # [B, F, n n, D]
        return spatial_pool(x.reshape(B, F, n, n, D), sf.tokens.frame_pooling)


class SlowFastMLLM(nn.Module):
    """Video + text -> next-token logits of the text: [fast tokens | text] in the LLM input, all
    frames' tokens as the hybrid layers' cross-attention context.

    Parameters: `frames` (the encoder and projector) and `llm` (`SlowFastDecoder`, whose
    parameters are a `Transformer`'s plus the hybrid layers' `cross_key`, `cross_value`,
    `gate`, `alpha`; see `load_llm_params`). With `config.hybrid=False` it is the fast-only
    baseline (same parameters minus the cross-attention ones).

    Attributes:
      config: the model configuration.
    """

    config: SlowFastConfig

    @nn.compact
    def __call__(
        self,
        frames: Float[Array, "B F ..."],
        tokens: Int[Array, "B L"],
        token_types: Int[Array, "B _L"] | None = None,
        *,
        frame_mask: Bool[Array, "B _F"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B L V"]:
        """Logits of the text positions.

        Args:
          frames: images [B, F, H, W, C] (or pre-encoded maps when `config.vision` is None).
          tokens: text ids (question, answer, padding), after the visual tokens.
          token_types: of the text (1 prompt, 2 response, 4 padding); None: all prompt.
          frame_mask: False marks padding frames: their slow tokens are masked (the fast tokens
            are computed from all F frames, as the released code pools zero-padded frames).
          train: training mode (the vision encoder's drop path).
        """
        sf = self.config
        B, L = tokens.shape
        if frames.shape[:2] != (B, sf.tokens.num_frames):
            raise ValueError(
                f"frames must be [B={B}, F={sf.tokens.num_frames}, ...] (tokens has batch {B}; "
                f"the token pipeline is configured for {sf.tokens.num_frames} frames), got "
                f"{frames.shape}."
            )
        if frame_mask is not None and frame_mask.shape != frames.shape[:2]:
            raise ValueError(
                f"frame_mask must be [B, F] = {frames.shape[:2]}, got {frame_mask.shape}."
            )
        maps = FrameEncoder(sf, name="frames")(frames, train=train)  # [B, F, g, g, D]
        fast = fast_tokens(maps, sf.tokens)  # [B, N_fast, D]
        slow, slow_mask = slow_tokens(maps, frame_mask) if sf.hybrid else (None, None)
        if token_types is None:
            token_types = jnp.full((B, L), TEXT_PROMPT, jnp.int32)
        elif token_types.shape != (B, L):
            raise ValueError(f"token_types must be [B, L] = {(B, L)}, got {token_types.shape}.")
        types = jnp.concatenate([jnp.full(fast.shape[:2], VISUAL, jnp.int32), token_types], 1)
        return SlowFastDecoder(sf, name="llm")(
            tokens, prefix=fast, token_types=types, slow=slow, slow_mask=slow_mask
        )


def load_llm_params(hybrid_params: Any, llm_params: Any, config: SlowFastConfig) -> Any:
    """Hybrid-decoder parameters from a trained `Transformer`'s: every shared parameter copied,
    each hybrid layer's cross KV set to that layer's key / value projection (the released
    `initialize_cross_attn_kv_from_lm`), the gate and alpha (= 0) kept from `hybrid_params`.

    Args:
      hybrid_params: `SlowFastDecoder` parameters (from `init`; unboxed or boxed alike).
      llm_params: the `Transformer` parameters of the same `config.llm`.
      config: the model configuration.

    Returns:
      The decoder parameters; at alpha = 0 the decoder then equals the LLM exactly.

    Raises:
      ValueError: the trees do not match outside the cross-attention parameters.
    """
    flat = traverse_util.flatten_dict(nn.unbox(hybrid_params))
    llm = traverse_util.flatten_dict(nn.unbox(llm_params))
    if missing := set(llm) - set(flat):
        raise ValueError(f"llm_params has entries the decoder lacks: {sorted(missing)[:4]}.")
    if extra := {k for k in set(flat) - set(llm) if not set(k) & set(_CROSS_PARAMS)}:
        raise ValueError(f"llm_params lacks the decoder's entries: {sorted(extra)[:4]}.")
    flat.update(llm)
    for i in config.hybrid_layers:
        layer = (f"layer_{i}", "attention")
        for cross, own in (("cross_key", "key"), ("cross_value", "value")):
            flat[(*layer, cross, "kernel")] = llm[(*layer, own, "kernel")]
            bias = (*layer, own, "bias")  # absent when the LLM has no qkv biases: keep zeros
            if bias in llm:
                flat[(*layer, cross, "bias")] = llm[bias]
    return traverse_util.unflatten_dict(flat)
