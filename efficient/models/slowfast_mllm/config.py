"""Slow-Fast video MLLM configuration: the visual token pipeline, the hybrid decoder, presets.

Slow-Fast Architecture for Video Multi-Modal Large Language Models (Shi et al., arXiv:2504.01328);
the settings of the released code (SHI-Labs/Slow-Fast-Video-Multimodal-LLM @69676a1): Qwen2-7B with
hybrid layers every 8 layers from layer 0, 81 tokens per frame (18 x 18 ConvNeXt map pooled 2 x 2),
16 fast frames, and the 64 / 96 / 128-frame configurations of its fine-tuning scripts
(`scripts/finetune`).
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from efficient.checks import (
    check_field_types,
    check_float_dtypes,
    check_positive_ints,
    validates_arguments,
)
from efficient.models.transformer import TransformerConfig
from efficient.models.vit import ViTConfig

# frames -> (fast-token sampling stride, temporal pool) of the released fine-tuning scripts.
_RELEASED = {16: (1, 1), 64: (1, 4), 96: (1, 6), 128: (2, 4)}


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenPipelineConfig:
    """How a clip's frames become slow tokens (all of them) and fast tokens (the LLM input).

    Per frame: encoder -> projector -> `frame_pooling` x `frame_pooling` average pool
    (`mm_video_pooling_stride`); the slow tokens are every frame's tokens. Fast tokens: the
    frames are zero-padded to a multiple of `temporal_sampling_stride * temporal_pool`, sub-sampled
    every `temporal_sampling_stride` frames (keeping at least `min_fast_frames`), average-pooled
    over time in windows of `temporal_pool` (floor mode; an adaptive pool to `min_fast_frames`
    frames if that would leave fewer), then `spatial_pool` x `spatial_pool` in space — the order
    and the quirks of the released `split_slow_fast_tokens`.

    Attributes:
      num_frames: F, frames per clip.
      frame_pooling: per-frame spatial average pool (2 in the released configs).
      temporal_sampling_stride: fast-token frame sub-sampling stride.
      temporal_pool: fast-token temporal average-pool window.
      spatial_pool: fast-token extra spatial pool (1 in the released configs).
      min_fast_frames: the fewest fast frames the sampling and pooling may leave (16).
    """

    num_frames: int = 64
    frame_pooling: int = 2
    temporal_sampling_stride: int = 1
    temporal_pool: int = 4
    spatial_pool: int = 1
    min_fast_frames: int = 16

    def __post_init__(self):
        check_field_types(self)
        check_positive_ints(
            self,
            (
                "num_frames",
                "frame_pooling",
                "temporal_sampling_stride",
                "temporal_pool",
                "spatial_pool",
                "min_fast_frames",
            ),
        )

    @classmethod
    def released(cls, frames: int, **overrides) -> "TokenPipelineConfig":
        """The fine-tuning scripts' configs (scripts/finetune): 64 frames (sampling stride 1,
        temporal pool 4), 96 (1, 6), 128 (2, 4), all giving 16 fast frames; and 16 frames with no
        temporal reduction (the 16-frame base).

        Raises:
          ValueError: `frames` is not one of 16, 64, 96, 128.
        """
        if frames not in _RELEASED:
            raise ValueError(f"frames={frames}: the released configs have {sorted(_RELEASED)}.")
        stride, pool = _RELEASED[frames]
        return cls(**{**dict(
            num_frames=frames, temporal_sampling_stride=stride, temporal_pool=pool,
        ), **overrides})  # fmt: skip

    @classmethod
    def frames64(cls, **overrides) -> "TokenPipelineConfig":
        return cls.released(64, **overrides)

    @classmethod
    def frames96(cls, **overrides) -> "TokenPipelineConfig":
        return cls.released(96, **overrides)

    @classmethod
    def frames128(cls, **overrides) -> "TokenPipelineConfig":
        return cls.released(128, **overrides)

    @classmethod
    def frames16(cls, **overrides) -> "TokenPipelineConfig":
        return cls.released(16, **overrides)

    @classmethod
    def all_fast(cls, num_frames: int, **overrides) -> "TokenPipelineConfig":
        """Every frame's tokens in the LLM input (the "more fast tokens" baseline)."""
        return cls(**{**dict(
            num_frames=num_frames, temporal_sampling_stride=1, temporal_pool=1,
            min_fast_frames=num_frames,
        ), **overrides})  # fmt: skip


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class SlowFastConfig:
    """The Slow-Fast MLLM: vision encoder + MLP projector + token pipeline + hybrid decoder.

    Attributes:
      llm: the decoder (`efficient.models.transformer`); hybrid layers keep its parameters
        and add the cross-attention ones.
      vision: the per-frame encoder (a ViT, used up to its final LayerNorm); None means the
        frames arrive already encoded, as [B, F, h, w, vision_features] feature maps (the
        released model's frozen ConvNeXt tower, whose outputs the compute figures take as given).
      vision_features: width of the encoder's output (the ViT's width, or 3072 for
        ConvNeXt-XXL).
      feature_grid: h = w of the encoder's feature map (the ViT's patches per side; 18 for
        ConvNeXt at 576 px).
      tokens: the visual token pipeline.
      hybrid: hybrid (cross-attention) layers on; False is the fast-only baseline.
      cross_attn_every_n_layers: hybrid layers are `range(cross_attn_min_layer, L, n)`.
      cross_attn_min_layer: the first hybrid layer.
      freeze_vision: no gradient flows into the vision encoder (a pretrained tower kept
        fixed, as LLaVA-style training does; the projector still learns).
      alpha_init: initial gate scalar alpha of every hybrid layer. The paper's 0 makes a hybrid
        layer start as its plain layer, preserving a pretrained LLM; the CPU video-QA presets,
        whose LLM trains from scratch, start the gate open (see experiments/slowfast.py).
      dtype: compute dtype of the vision encoder and projector.
      param_dtype: their parameter dtype.
    """

    llm: TransformerConfig
    vision: ViTConfig | None = None
    vision_features: int = 3072
    feature_grid: int = 18
    tokens: TokenPipelineConfig = dataclasses.field(default_factory=TokenPipelineConfig)
    hybrid: bool = True
    cross_attn_every_n_layers: int = 8
    cross_attn_min_layer: int = 0
    freeze_vision: bool = False
    alpha_init: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_field_types(self)
        check_float_dtypes(self, ("dtype", "param_dtype"))
        if self.vision is not None:
            if self.vision.features != self.vision_features:
                raise ValueError(
                    f"vision_features={self.vision_features}: must equal the vision encoder's "
                    f"width {self.vision.features}."
                )
            grid = self.vision.image_size // self.vision.patch_size
            if grid != self.feature_grid:
                raise ValueError(
                    f"feature_grid={self.feature_grid}: the vision encoder gives {grid} x {grid} "
                    "patches."
                )
        if self.cross_attn_every_n_layers < 1:
            raise ValueError(
                f"cross_attn_every_n_layers={self.cross_attn_every_n_layers}: expected >= 1."
            )
        if not 0 <= self.cross_attn_min_layer < self.llm.num_layers:
            raise ValueError(
                f"cross_attn_min_layer={self.cross_attn_min_layer}: expected a layer index in "
                f"[0, {self.llm.num_layers})."
            )
        t = self.tokens
        if self.feature_grid % t.frame_pooling:
            raise ValueError(
                f"tokens.frame_pooling={t.frame_pooling} must divide feature_grid="
                f"{self.feature_grid}."
            )
        if self.frame_grid % t.spatial_pool:
            raise ValueError(
                f"tokens.spatial_pool={t.spatial_pool} must divide the pooled frame grid "
                f"{self.frame_grid}."
            )

    @property
    def hybrid_layers(self) -> tuple[int, ...]:
        """Indices of the hybrid decoder layers ({0, 8, 16, 24} for Qwen2-7B); () if not hybrid."""
        if not self.hybrid:
            return ()
        return tuple(
            range(self.cross_attn_min_layer, self.llm.num_layers, self.cross_attn_every_n_layers)
        )

    @property
    def frame_grid(self) -> int:
        """Side of a frame's token grid after the per-frame pooling (9 in the released model)."""
        return self.feature_grid // self.tokens.frame_pooling

    @property
    def tokens_per_frame(self) -> int:
        return self.frame_grid**2

    @property
    def num_slow_tokens(self) -> int:
        """Slow tokens of a full clip: every frame's tokens."""
        return self.tokens.num_frames * self.tokens_per_frame

    @property
    def num_fast_frames(self) -> int:
        """Frames left after the fast-token sampling and temporal pooling."""
        t = self.tokens
        step = t.temporal_sampling_stride * t.temporal_pool
        padded = -(-t.num_frames // step) * step
        sampled = len(sample_fast_frames(padded, t.temporal_sampling_stride, t.min_fast_frames))
        if t.temporal_pool > 1:
            if sampled // t.temporal_pool >= t.min_fast_frames:
                return sampled // t.temporal_pool
            return min(sampled, t.min_fast_frames)
        return sampled

    @property
    def num_fast_tokens(self) -> int:
        """Fast (LLM input) tokens of a full clip: 1296 = 16 x 81 in the released configs."""
        return self.num_fast_frames * (self.frame_grid // self.tokens.spatial_pool) ** 2

    def num_cross_attention_params(self) -> int:
        """Parameters the hybrid layers add: per layer the KV projection (with biases), the
        gate Linear(H * K -> 1) and alpha."""
        c = self.llm
        G, K, H, D = c.kv_heads, c.resolved_head_dim, c.num_heads, c.features
        per_layer = 2 * (D * G * K + G * K) + (H * K + 1) + 1
        return len(self.hybrid_layers) * per_layer

    def num_projector_params(self) -> int:
        """The mlp2x_gelu projector: vision_features -> D -> D, with biases."""
        E, D = self.vision_features, self.llm.features
        return E * D + D + D * D + D

    # ------------------------------------------------------------------------ presets

    @classmethod
    def qwen2_7b(cls, frames: int = 64, **overrides) -> "SlowFastConfig":
        """The released model: Qwen2-7B, hybrid layers {0, 8, 16, 24}, frames pre-encoded by the
        CLIP ConvNeXt-XXL tower (3072 channels, 18 x 18 at 576 px), 64 / 96 / 128 frames
        (16 gives the 16-frame fast-only base with `hybrid=False`)."""
        return cls(**{**dict(
            llm=TransformerConfig.qwen2_7b(), vision=None, vision_features=3072,
            feature_grid=18, tokens=TokenPipelineConfig.released(frames),
            cross_attn_every_n_layers=8,
            dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
        ), **overrides})  # fmt: skip

    @classmethod
    def video_qa(cls, frames: int = 128, **overrides) -> "SlowFastConfig":
        """A CPU model for Fashion-MNIST clips: a 2-layer ViT (28 px, patch 7: 4 x 4 patches,
        pooled to 2 x 2 = 4 tokens per frame), a 4-layer byte-level decoder of width 128 with
        hybrid layers {0, 2}; the frame pipeline of the released config with that many frames."""
        vision = ViTConfig(
            image_size=28, patch_size=7, in_channels=1, num_classes=10, features=64,
            num_layers=2, num_heads=2, mlp_dim=128,
        )  # fmt: skip
        llm = TransformerConfig(
            vocab_size=256, features=128, num_layers=4, num_heads=4, num_kv_heads=2,
            mlp_dim=384, max_len=256,
        )  # fmt: skip
        return cls(**{**dict(
            llm=llm, vision=vision, vision_features=64, feature_grid=4,
            tokens=TokenPipelineConfig.released(frames), cross_attn_every_n_layers=2,
        ), **overrides})  # fmt: skip

    @classmethod
    def smoke(cls, **overrides) -> "SlowFastConfig":
        """Tiny, for tests: 16 x 16 frames, patch 4 (4 x 4 -> 2 x 2 tokens per frame), 8 frames
        pooled to 4 fast frames, a 2-layer decoder of width 32 with hybrid layer {0}."""
        vision = ViTConfig(
            image_size=16, patch_size=4, in_channels=1, num_classes=10, features=16,
            num_layers=1, num_heads=2, mlp_dim=32,
        )  # fmt: skip
        llm = TransformerConfig(
            vocab_size=256, features=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64,
            max_len=128,
        )  # fmt: skip
        tokens = TokenPipelineConfig(
            num_frames=8, temporal_sampling_stride=1, temporal_pool=2, min_fast_frames=4
        )
        return cls(**{**dict(
            llm=llm, vision=vision, vision_features=16, feature_grid=4, tokens=tokens,
            cross_attn_every_n_layers=2,
        ), **overrides})  # fmt: skip


def sample_fast_frames(total_frames: int, stride: int, min_frames: int) -> list[int]:
    """The released `sample_fast_frames`: `max(total // stride, min_frames)` frame indices spread
    evenly (index `floor(i * total / n)`); all frames when there are fewer than `min_frames`."""
    if total_frames < min_frames:
        return list(range(total_frames))
    n = max(total_frames // stride, min_frames)
    step = total_frames / n
    return [min(int(i * step), total_frames - 1) for i in range(n)]
