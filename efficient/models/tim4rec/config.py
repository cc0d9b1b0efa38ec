"""TiM4Rec configuration and presets (SSD4Rec is the same model with the time branch off).

TiM4Rec: An Efficient Sequential Recommendation Model Based on Time-Aware Structured State Space
Duality Model (Fan et al., arXiv:2409.16182 §4, §5.1); the released configs
(AlwaysFHao/TiM4Rec `config/config4movie_64d.yaml`).
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

Activation = Literal["auto", "silu", "hardswish"]


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class TiM4RecConfig:
    """Item embedding -> Dropout -> LayerNorm, `num_layers` x TiSSDLayer, interest vector at the
    last real position, scores against every item embedding (tied).

    Attributes:
      num_items: item ids are 1..num_items; the embedding has num_items + 1 rows (0 = padding).
      max_len: L, the (padded) sequence length. The time branch's position-mixing Linear layers
        are L x L, so every batch must have exactly L positions (RecBole's
        MAX_ITEM_LIST_LENGTH: 200 on ML-1M, 50 elsewhere).
      features: model width D (hidden_size).
      num_layers: TiSSD layers; with one layer the reference drops the mixer's residual.
      state_dim: SSD state size N (d_state).
      conv_width: W of the causal depthwise convolutions (d_conv), the mixer's and the time
        branch's.
      expand: d_inner = expand * D.
      head_dim: K; H = d_inner / K heads (every released config has H = 4).
      chunk_size: SSD chunk length.
      dropout_rate: dropout_prob: on the item embeddings, on the time differences before the
        first sequence LayerNorm (the reference reuses its `self.dropout` there), after the
        mixer and twice in the FFN.
      time_dropout_rate: time_drop_out: before the time MLP and before the time gate.
      norm_eps: every LayerNorm's epsilon (and the gated RMSNorm's), except the FFN's, which
        the reference leaves at its default 1e-12.
      use_ffn: the Hardswish FFN after each mixer (is_ffn; on in every config).
      time_aware: the time branch (is_time). False is SSD4Rec: a plain Mamba-2 mixer, and
        timestamps are ignored.
      mask_padding: False reproduces the reference, where the padded positions (timestamp 0,
        so one large negative difference) enter the sequence LayerNorms, the L x L time MLP and
        the time gate, so a score depends on what the padded timestamp slots hold. True zeroes
        the time state at padded positions and takes the LayerNorm statistics over the real
        positions only. Either way the time MLP mixes all real positions (it is not causal).
      p2p_residual: the time gate is L-wide (one gate per position) instead of one scalar per
        head.
      position_mlp: the time branch's position-mixing MLP s = Lin_{L->L}(SiLU(Lin_{L->L}(T)))
        scaling the time state (the reference's `mlp4time_scale`; True in every released
        config). Its two L x L layers make the branch quadratic in L: 51% of SSD4Rec's train
        FLOPs at L = 4000. False is **not the reference**: s = 1 (u = T), so the branch is
        linear in L (the convolutions, the L -> 1 gate and the sequence LayerNorm remain) and
        the first layer's τ is causal in its time state (which is still normalised over the
        whole sequence: timestamps stay non-causal) — an ablation for long sequences, the
        paper's "O(T) extra" in fact (`experiments.benches.tim4rec`, `tim4rec/ml100k_no_mlp`).
      activation: after the mixer's convolution and each time convolution. "auto" follows the
        reference: Hardswish when H % 8 != 0 (its fused causal-conv1d path needs H % 8 == 0),
        SiLU otherwise. The FFN always uses Hardswish.
      init_std: standard deviation of the normal init of every Linear and the embedding.
      dtype: compute dtype of the item path; the time branch runs in float32.
      param_dtype: parameter storage dtype.
    """

    num_items: int = 1349
    max_len: int = 50
    features: int = 64
    num_layers: int = 2
    state_dim: int = 32
    conv_width: int = 4
    expand: int = 2
    head_dim: int = 32
    chunk_size: int = 32
    dropout_rate: float = 0.2
    time_dropout_rate: float = 0.2
    norm_eps: float = 1e-12
    use_ffn: bool = True
    time_aware: bool = True
    mask_padding: bool = False
    p2p_residual: bool = False
    position_mlp: bool = True
    activation: Activation = "auto"
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        check_positive_ints(
            self,
            (
                "num_items",
                "max_len",
                "features",
                "num_layers",
                "state_dim",
                "conv_width",
                "expand",
                "head_dim",
                "chunk_size",
            ),
        )
        if (self.expand * self.features) % self.head_dim:
            raise ValueError(
                f"head_dim={self.head_dim}: must divide expand * features = "
                f"{self.expand * self.features}."
            )
        for name in ("dropout_rate", "time_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a rate in [0, 1).")
        check_positive(self, ("norm_eps", "init_std"))

    @property
    def d_inner(self) -> int:
        return self.expand * self.features

    @property
    def num_heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def resolved_activation(self) -> Literal["silu", "hardswish"]:
        """The activation the reference would run: Hardswish unless H % 8 == 0 ("auto")."""
        if self.activation != "auto":
            return self.activation
        return "hardswish" if self.num_heads % 8 else "silu"

    def num_params(self) -> int:
        """Parameter count from the formula (tests compare it with the initialised model)."""
        D, E, H, N, W, L = (
            self.features,
            self.d_inner,
            self.num_heads,
            self.state_dim,
            self.conv_width,
            self.max_len,
        )
        conv_channels = E + 2 * N  # x, B, C (one group)
        mixer = (
            (D + 1) * (2 * E + 2 * N + H)  # in_proj -> z, x, B, C, dt
            + (W + 1) * conv_channels  # depthwise conv
            + 3 * H  # A_log, dt_bias, D
            + E  # gated RMSNorm scale
            + (E + 1) * D  # out_proj
        )
        time = 0
        if self.time_aware:
            gate = L if self.p2p_residual else 1
            mlp = 2 * (L + 1) * L if self.position_mlp else 0
            time = mlp + 2 * (W + 1) * H + (L + 1) * gate + 2 * L
        ffn = (D + 1) * 4 * D + (4 * D + 1) * D + 2 * D if self.use_ffn else 0
        layer = mixer + time + 2 * D + ffn
        embedding = (self.num_items + 1) * D + 2 * D  # + the input LayerNorm
        time_norm = 2 * L if self.time_aware else 0
        return embedding + time_norm + self.num_layers * layer

    @classmethod
    def ml1m_64d(cls, **overrides) -> "TiM4RecConfig":
        """The paper's main configuration (`config/config4movie_64d.yaml`): D 64, 2 layers,
        N 32, W 4, expand 2, head_dim 32 (H = 4, so Hardswish), chunk 32, dropout 0.2, time
        dropout 0.2, eps 1e-12, FFN on, gate per head, Kaiming conv init; ML-1M with 5-core
        filtering (3,416 items) and L = 200."""
        return cls(**{**dict(
            num_items=3416, max_len=200, features=64, num_layers=2, state_dim=32, conv_width=4,
            expand=2, head_dim=32, chunk_size=32, dropout_rate=0.2, time_dropout_rate=0.2,
            norm_eps=1e-12, time_aware=True, p2p_residual=False,
        ), **overrides})  # fmt: skip

    @classmethod
    def ml100k(cls, **overrides) -> "TiM4RecConfig":
        """`ml1m_64d()`'s widths and rates on this suite's MovieLens-100K (5-core: 1,349 items)
        with RecBole's default L = 50 (the length the paper uses for every dataset but ML-1M)."""
        return cls.ml1m_64d(**{**dict(num_items=1349, max_len=50), **overrides})

    @classmethod
    def ssd4rec_ml100k(cls, **overrides) -> "TiM4RecConfig":
        """SSD4Rec on MovieLens-100K: `ml100k()` with the time branch off (the paper's SSD
        baseline; its ML-1M-256d config also runs `is_time: False`)."""
        return cls.ml100k(**{**dict(time_aware=False), **overrides})

    @classmethod
    def smoke(cls, **overrides) -> "TiM4RecConfig":
        """Tiny, for tests and smoke runs: 32 items, L 16, D 16, 2 layers, N 8, 4 heads of 8,
        chunk 8."""
        return cls(**{**dict(
            num_items=32, max_len=16, features=16, num_layers=2, state_dim=8, head_dim=8,
            chunk_size=8,
        ), **overrides})  # fmt: skip
