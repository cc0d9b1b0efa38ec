"""LaCT language-model configuration and presets.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884) §5.2 (the language model) and
App. A; sizes from the released configs (a1600012888/LaCT, lact_llm/configs/*.json).
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
from efficient.nn.lact import NS5_FIXED, NS5_PER_STEP

NS_COEFFICIENTS = {"per_step": NS5_PER_STEP, "fixed": NS5_FIXED}


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class LaCTConfig:
    """A pre-norm decoder whose token mixer is the LaCT layer: token embedding, `num_layers` x
    (RMSNorm -> LaCT layer -> residual, RMSNorm -> SwiGLU -> residual), final RMSNorm, head.

    The LaCT layer projects x to one q, k, v (D each) that feed two branches, summed before the
    output projection: causal sliding-window attention over `num_heads` heads with RoPE, and
    large-chunk test-time training over `num_lact_heads` heads of SwiGLU fast weights.

    Attributes:
      vocab_size: V (32,000 in the paper's LM; 256 for bytes).
      features: model width D.
      num_layers: decoder blocks.
      num_heads: H, attention heads of width K = D / H (the RoPE split, also for the TTT q, k).
      num_lact_heads: nh, TTT heads of width D / nh (the fast-weight input and output width).
      fast_hidden_dim: the fast SwiGLU's hidden width per head; None means D / nh (the code's
        `inter_multi` 1).
      fast_weight_rank: r: the initial W0, W2 are W_l W_r + 0.5 I with W_l [dh, r], W_r [r, dk]
        learned (the code's `w0_w2_low_rank`, 32); None learns them as full matrices.
      fast_weight_init_gain: g in the low-rank init stds g / sqrt(r) and g / sqrt(dk) (0.5).
      mlp_dim: SwiGLU hidden width F of the block MLP.
      sliding_window: w: attention sees the w most recent positions, its own included.
      chunk_size: tokens per fast-weight update (the paper's LM: 2048, equal to the window).
      base_lr: η at zero pre-activation: η = softplus(Linear(x) + softplus⁻¹(base_lr)) (1e-3).
      momentum: chunk momentum with per-token β = σ(Linear(x)) averaged over the chunk.
      muon: orthogonalise each update with Newton-Schulz (after momentum).
      ns_coefficients: "per_step" (the LM code's five triples) or "fixed" (the paper's App. A).
      weight_norm: restore each fast-weight row's norm to its initial value after each update.
      ttt_rope: apply the attention's RoPE to the TTT q and k (the code's `not ttt_nope`).
      update_fast_weights: False freezes the fast weights at their initial values (the TTT
        branch becomes a static per-head SwiGLU of q): an ablation and a test oracle.
      rope_theta: RoPE base (1e6 in the paper's LM).
      norm_eps: epsilon of the block and final RMSNorms (1e-6).
      ttt_norm_eps: epsilon of the per-head output RMSNorm (fla's RMSNorm default, 1e-5).
      tie_embeddings: the output head is the transposed token embedding (untied in the paper).
      attention_implementation: "einsum" or "jax" (see `efficient.nn.dot_product_attention`).
      init_std: std of the normal init of every Dense kernel and the embedding (the code's
        `initializer_range`, 0.02 in the LM configs); output projections of residual branches
        get init_std / sqrt(2 * num_layers) when `scale_residual_init` (off, as the code).
      scale_residual_init: see `init_std`.
      remat: rematerialise each block in the backward pass.
      max_len: the default cache length for generation.
      dtype: compute dtype (the TTT inner loop always runs in float32; NS5 in bfloat16).
      param_dtype: parameter storage dtype.
    """

    vocab_size: int = 256
    features: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_lact_heads: int = 2
    fast_hidden_dim: int | None = None
    fast_weight_rank: int | None = 32
    fast_weight_init_gain: float = 0.5
    mlp_dim: int = 768
    sliding_window: int = 64
    chunk_size: int = 64
    base_lr: float = 1e-3
    momentum: bool = True
    muon: bool = False
    ns_coefficients: Literal["per_step", "fixed"] = "per_step"
    weight_norm: bool = True
    ttt_rope: bool = True
    update_fast_weights: bool = True
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-6
    ttt_norm_eps: float = 1e-5
    tie_embeddings: bool = False
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
        check_positive(self, ("rope_theta", "norm_eps", "ttt_norm_eps", "init_std"))
        check_positive_ints(self, (
            "vocab_size", "features", "num_layers", "num_heads", "num_lact_heads", "mlp_dim",
            "sliding_window", "chunk_size", "max_len",
        ))  # fmt: skip
        for name in ("num_heads", "num_lact_heads"):
            if self.features % getattr(self, name):
                raise ValueError(
                    f"{name}={getattr(self, name)} must divide features={self.features} (q, k, v "
                    "are split into heads of equal width)."
                )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim={self.head_dim} (features / num_heads): RoPE needs it even."
            )
        for name in ("fast_hidden_dim", "fast_weight_rank"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected >= 1 or None.")
        if not self.base_lr > 0:
            raise ValueError(f"base_lr={self.base_lr}: expected > 0 (η = softplus(... ) > 0).")

    @property
    def head_dim(self) -> int:
        """K, the attention head width (and the RoPE width of the TTT q, k)."""
        return self.features // self.num_heads

    @property
    def lact_head_dim(self) -> int:
        """dk = dv, the fast weights' input and output width per TTT head."""
        return self.features // self.num_lact_heads

    @property
    def resolved_fast_hidden_dim(self) -> int:
        """dh, the fast SwiGLU's hidden width per TTT head."""
        return self.lact_head_dim if self.fast_hidden_dim is None else self.fast_hidden_dim

    @property
    def state_size(self) -> int:
        """Fast-weight entries per layer: nh (2 dh dk + dv dh) (the paper's 0.75 D² for nh = 4)."""
        dk, dh = self.lact_head_dim, self.resolved_fast_hidden_dim
        return self.num_lact_heads * 3 * dk * dh

    def num_params(self) -> int:
        """Parameter count from the formula (tests compare it with the initialised model)."""
        D, nh, F, V = self.features, self.num_lact_heads, self.mlp_dim, self.vocab_size
        dk, dh, r = self.lact_head_dim, self.resolved_fast_hidden_dim, self.fast_weight_rank
        attention = 4 * D * D  # q, k, v, out; no biases
        projections = (D + 1) * 3 * nh + (D + 1) * nh  # η (3 per head) and the output gate
        if self.momentum:
            projections += (D + 1) * nh
        w0_w2 = 2 * nh * (dh * dk if r is None else dh * r + r * dk)
        fast = w0_w2 + nh * dk * dh  # + W1 [nh, dv, dh]
        ttt = 4 * D + projections + dk + fast  # q/k scale and offset, output RMSNorm scale
        block = attention + ttt + 3 * D * F + 2 * D  # SwiGLU + two RMSNorm scales
        head = 0 if self.tie_embeddings else D * V
        return V * D + self.num_layers * block + D + head

    def num_non_embedding_params(self) -> int:
        """Parameters outside the embedding and the output head (the 6ND convention)."""
        embeddings = self.vocab_size * self.features * (1 if self.tie_embeddings else 2)
        return self.num_params() - embeddings

    @classmethod
    def lm_760m(cls, **overrides) -> "LaCTConfig":
        """The paper's 760M LM (§5.2; `760M_lact_swiglu_nh4_fwlow_rank_momentum.json`): D 1536,
        24 layers, 24 attention heads of 64, 4 TTT heads of 384, low-rank (32) initial W0/W2,
        chunk = window = 2048, momentum, fla's GatedMLP (F = 4096), V 32,000, untied, RoPE 1e6;
        `muon=True` gives the `_muon.json` variant. 797,625,312 parameters (699,321,312
        without the embedding and head)."""
        return cls(**{**dict(
            vocab_size=32_000, features=1536, num_layers=24, num_heads=24, num_lact_heads=4,
            fast_weight_rank=32, mlp_dim=4096, sliding_window=2048, chunk_size=2048,
            momentum=True, muon=False, max_len=32_768, dtype=jnp.bfloat16,
        ), **overrides})  # fmt: skip

    @classmethod
    def lm_3b(cls, **overrides) -> "LaCTConfig":
        """The paper's 3B LM (`3B_lact_swiglu_nh4_fwlow_rank_momentum*.json`): D 3072, 24 layers,
        24 attention heads of 128 (the `_momentum.json` file's 25 does not divide 3072; the
        `_muon.json` file has 24), 4 TTT heads of 768, F = 8192, chunk = window = 2048 (the repo's
        configs; the paper's §5.2 text says a 4096 window), momentum, V 32,000, untied.
        2,982,516,192 parameters (2,785,908,192 without the embedding and head)."""
        return cls(**{**dict(
            vocab_size=32_000, features=3072, num_layers=24, num_heads=24, num_lact_heads=4,
            fast_weight_rank=32, mlp_dim=8192, sliding_window=2048, chunk_size=2048,
            momentum=True, muon=False, max_len=32_768, dtype=jnp.bfloat16,
        ), **overrides})  # fmt: skip

    @classmethod
    def cpu_small(cls, **overrides) -> "LaCTConfig":
        """A byte-level model with `transformer/kjv`'s width, depth and heads (D 256, 4 layers,
        4 attention heads of 64, tied bytes), 2 TTT heads of 128, F 676 so that the parameter
        count (3,470,120) is within 0.2% of that transformer's (3,475,712); window = chunk = 64,
        for contexts several windows long (e.g. 512)."""
        return cls(**{**dict(
            vocab_size=256, features=256, num_layers=4, num_heads=4, num_lact_heads=2,
            fast_weight_rank=32, mlp_dim=676, sliding_window=64, chunk_size=64,
            tie_embeddings=True, max_len=1024,
        ), **overrides})  # fmt: skip

    @classmethod
    def smoke(cls, **overrides) -> "LaCTConfig":
        """Tiny: 2 layers of width 64, 4 attention heads of 16, 2 TTT heads of 32 (rank-8 init),
        F 128, window 8, chunk 16, bytes; for tests and smoke runs (T = 64: 4 chunks)."""
        return cls(**{**dict(
            vocab_size=256, features=64, num_layers=2, num_heads=4, num_lact_heads=2,
            fast_weight_rank=8, mlp_dim=128, sliding_window=8, chunk_size=16, max_len=256,
        ), **overrides})  # fmt: skip
