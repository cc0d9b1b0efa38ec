"""Decoder-only transformer configuration and presets (Llama / Qwen2 family).

Llama 2 (arXiv:2307.09288 §2.2); Qwen2 Technical Report (arXiv:2407.10671 §2.2, Table 1);
NoLoCo (arXiv:2506.10911 §4: the 100M Llama-style model).
"""

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

from efficient.checks import (
    check_field_types,
    check_float_dtypes,
    check_positive,
    check_positive_ints,
    validates_arguments,
)


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    """A pre-norm decoder: token embedding, `num_layers` x (RMSNorm -> causal GQA attention with
    RoPE -> residual, RMSNorm -> SwiGLU -> residual), final RMSNorm, output head.

    Attributes:
      vocab_size: V (256 for bytes).
      features: model width D.
      num_layers: decoder blocks.
      num_heads: H, query heads.
      num_kv_heads: G, key/value heads (GQA); None means H.
      head_dim: K; None means features // num_heads.
      mlp_dim: SwiGLU hidden width F.
      rope_theta: RoPE base.
      norm_eps: RMSNorm epsilon.
      qkv_bias: biases on the q/k/v projections (Qwen2 has them; the output projection never).
      tie_embeddings: the output head is the transposed token embedding.
      sliding_window: w: every layer attends to the w most recent positions; None: full causal.
      logit_soft_cap: attention-logit soft cap c (c * tanh(l / c)); None: off.
      attention_implementation: "einsum" or "jax" (see `efficient.nn.dot_product_attention`).
      init_std: standard deviation of the normal init of every kernel and the embedding (HF's
        `initializer_range`); output projections of residual branches get
        init_std / sqrt(2 * num_layers) (GPT-2 §2.3) when `scale_residual_init`.
      scale_residual_init: see `init_std`.
      remat: rematerialise each block in the backward pass (saves activation memory).
      max_len: the default cache length for generation.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    vocab_size: int = 256
    features: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_dim: int = 768
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = False
    sliding_window: int | None = None
    logit_soft_cap: float | None = None
    attention_implementation: Literal["einsum", "jax"] = "einsum"
    init_std: float = 0.02
    scale_residual_init: bool = False
    remat: bool = False
    max_len: int = 2048
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        check_positive(self, ("rope_theta", "norm_eps", "init_std"))
        check_positive_ints(
            self, ("vocab_size", "features", "num_layers", "num_heads", "mlp_dim", "max_len")
        )
        if self.head_dim is None and self.features % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide features={self.features} "
                "(or set head_dim)."
            )
        if self.kv_heads < 1 or self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_kv_heads={self.num_kv_heads}: must be a positive divisor of "
                f"num_heads={self.num_heads}."
            )
        if self.resolved_head_dim % 2:
            raise ValueError(f"head_dim={self.resolved_head_dim}: RoPE needs an even head_dim.")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window}: expected >= 1 or None.")
        if self.logit_soft_cap is not None and self.logit_soft_cap <= 0:
            raise ValueError(f"logit_soft_cap={self.logit_soft_cap}: expected > 0 or None.")

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def resolved_head_dim(self) -> int:
        return self.features // self.num_heads if self.head_dim is None else self.head_dim

    def num_params(self) -> int:
        """Parameter count from the formula (tests compare it with the initialised model)."""
        D, H, G, K, F, V = (
            self.features,
            self.num_heads,
            self.kv_heads,
            self.resolved_head_dim,
            self.mlp_dim,
            self.vocab_size,
        )
        attention = D * H * K + 2 * D * G * K + H * K * D
        if self.qkv_bias:
            attention += H * K + 2 * G * K
        block = attention + 3 * D * F + 2 * D  # SwiGLU + two RMSNorm scales
        head = 0 if self.tie_embeddings else D * V
        return V * D + self.num_layers * block + D + head

    def num_non_embedding_params(self) -> int:
        """Parameters outside the embedding and the output head (the 6ND convention)."""
        embeddings = self.vocab_size * self.features * (1 if self.tie_embeddings else 2)
        return self.num_params() - embeddings

    @classmethod
    def qwen2_7b(cls, **overrides) -> "TransformerConfig":
        """Qwen2-7B: 28 layers, D 3584, 28 query / 4 KV heads of 128, F 18944, V 152064, RoPE
        1e6, RMSNorm 1e-6, qkv biases, untied head: 7,615,616,512 parameters (the Hugging Face
        config of Qwen2-7B)."""
        return cls(**{**dict(
            vocab_size=152_064, features=3584, num_layers=28, num_heads=28, num_kv_heads=4,
            head_dim=128, mlp_dim=18_944, rope_theta=1_000_000.0, norm_eps=1e-6, qkv_bias=True,
            tie_embeddings=False, max_len=32_768, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
        ), **overrides})  # fmt: skip

    @classmethod
    def llama_style_100m(cls, **overrides) -> "TransformerConfig":
        """NoLoCo's 100M Llama: D 768, 12 layers, 12 heads, F 3072 (jkolehm/noloco configs;
        reference/distributed.md §1.2), with the Llama-3 tokenizer's 128,256-symbol vocabulary and
        sequence length 1024. "100M" counts the non-embedding parameters (113.3M); RoPE base and
        head tying are not stated there: Hugging Face's LlamaConfig defaults (10,000; untied)."""
        return cls(**{**dict(
            vocab_size=128_256, features=768, num_layers=12, num_heads=12, mlp_dim=3072,
            rope_theta=10_000.0, norm_eps=1e-5, tie_embeddings=False, max_len=1024,
        ), **overrides})  # fmt: skip

    @classmethod
    def cpu_10m(cls, **overrides) -> "TransformerConfig":
        """A ~10M byte-level model for CPU runs: D 384, 6 layers, 6 heads of 64 (GQA 2 KV heads),
        F 1024, tied embeddings."""
        return cls(**{**dict(
            vocab_size=256, features=384, num_layers=6, num_heads=6, num_kv_heads=2,
            mlp_dim=1024, tie_embeddings=True, max_len=1024,
        ), **overrides})  # fmt: skip

    @classmethod
    def smoke(cls, **overrides) -> "TransformerConfig":
        """Tiny: 2 layers of width 64, 4 query / 2 KV heads, bytes; for tests and smoke runs."""
        return cls(**{**dict(
            vocab_size=256, features=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
            max_len=256,
        ), **overrides})  # fmt: skip
