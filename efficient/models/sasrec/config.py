"""SASRec configuration and presets (RecBole's implementation, TiM4Rec's attention baseline).

Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018, arXiv:1808.09781 §3);
RecBole 1.2.1 `recbole/model/sequential_recommender/sasrec.py` and `recbole/model/layers.py`;
the baseline config of TiM4Rec (AlwaysFHao/TiM4Rec `baseline/SASRec/config.yaml`).
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


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class SASRecConfig:
    """Item + learned position embedding -> LayerNorm -> Dropout, `num_layers` post-LN layers
    (causal self-attention with a key-padding mask, GELU FFN), interest vector at the last real
    position, scores against every item embedding (tied).

    Attributes:
      num_items: item ids are 1..num_items; the embedding has num_items + 1 rows (0 = padding).
      max_len: L, positions with a learned embedding; batches may be shorter.
      features: model width D (hidden_size).
      num_layers: transformer layers (n_layers).
      num_heads: attention heads (n_heads); head_dim = D / num_heads.
      mlp_dim: FFN inner width F (inner_size).
      dropout_rate: hidden_dropout_prob: after the input LayerNorm, after the attention output
        projection and after the FFN.
      attention_dropout_rate: attn_dropout_prob: on the attention probabilities.
      norm_eps: layer_norm_eps.
      init_std: initializer_range: N(0, init_std) for every Linear and embedding.
      dtype: compute dtype (attention logits and softmax run in float32 regardless).
      param_dtype: parameter storage dtype.
    """

    num_items: int = 1349
    max_len: int = 50
    features: int = 64
    num_layers: int = 2
    num_heads: int = 8
    mlp_dim: int = 256
    dropout_rate: float = 0.2
    attention_dropout_rate: float = 0.2
    norm_eps: float = 1e-12
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        check_positive_ints(
            self, ("num_items", "max_len", "features", "num_layers", "num_heads", "mlp_dim")
        )
        if self.features % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide features={self.features}.")
        for name in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a rate in [0, 1).")
        check_positive(self, ("norm_eps", "init_std"))

    @property
    def head_dim(self) -> int:
        return self.features // self.num_heads

    def num_params(self) -> int:
        """Parameter count from the formula (tests compare it with the initialised model)."""
        D, F = self.features, self.mlp_dim
        layer = 4 * (D + 1) * D + (D + 1) * F + (F + 1) * D + 4 * D  # attention, FFN, 2 norms
        return (self.num_items + 1 + self.max_len) * D + 2 * D + self.num_layers * layer

    @classmethod
    def ml100k(cls, **overrides) -> "SASRecConfig":
        """TiM4Rec's SASRec baseline (`baseline/SASRec/config.yaml`: D 64, F 256, 2 layers,
        8 heads, dropout 0.2, GELU, eps 1e-12, init 0.02; RecBole's own SASRec.yaml has 2 heads
        and dropout 0.5) on this suite's MovieLens-100K (1,349 items), L = 50."""
        return cls(**{**dict(
            num_items=1349, max_len=50, features=64, num_layers=2, num_heads=8, mlp_dim=256,
            dropout_rate=0.2, attention_dropout_rate=0.2, norm_eps=1e-12, init_std=0.02,
        ), **overrides})  # fmt: skip

    @classmethod
    def smoke(cls, **overrides) -> "SASRecConfig":
        """Tiny, for tests and smoke runs: 32 items, L 16, D 16, 2 layers, 2 heads, F 32."""
        return cls(**{**dict(
            num_items=32, max_len=16, features=16, num_layers=2, num_heads=2, mlp_dim=32,
        ), **overrides})  # fmt: skip
