"""Slow-Fast video MLLM (arXiv:2504.01328): hybrid decoder layers that cross-attend to every
frame's tokens while the LLM input holds 16 pooled frames."""

from efficient.models.slowfast_mllm.config import (
    SlowFastConfig,
    TokenPipelineConfig,
    sample_fast_frames,
)
from efficient.models.slowfast_mllm.model import (
    PADDING,
    TEXT_PROMPT,
    TEXT_RESPONSE,
    VISUAL,
    FrameEncoder,
    HybridAttention,
    HybridDecoderBlock,
    SlowFastDecoder,
    SlowFastMLLM,
    load_llm_params,
)
from efficient.models.slowfast_mllm.pipeline import fast_tokens, slow_tokens, spatial_pool

__all__ = [
    "PADDING",
    "TEXT_PROMPT",
    "TEXT_RESPONSE",
    "VISUAL",
    "FrameEncoder",
    "HybridAttention",
    "HybridDecoderBlock",
    "SlowFastConfig",
    "SlowFastDecoder",
    "SlowFastMLLM",
    "TokenPipelineConfig",
    "fast_tokens",
    "load_llm_params",
    "sample_fast_frames",
    "slow_tokens",
    "spatial_pool",
]
