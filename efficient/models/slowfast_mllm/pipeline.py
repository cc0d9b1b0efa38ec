"""The visual token pipeline: frame token maps -> fast tokens (LLM input) and slow tokens (the
cross-attention context), as the released `split_slow_fast_tokens` computes them
(SHI-Labs/Slow-Fast-Video-Multimodal-LLM, `llava_qwen2_slowfast.py`)."""

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from efficient.models.slowfast_mllm.config import TokenPipelineConfig, sample_fast_frames


def spatial_pool(x: Float[Array, "B F h w D"], k: int) -> Float[Array, "B F _h _w D"]:
    """k x k average pool with stride k over each frame (torch `avg_pool2d`, floor mode)."""
    if k == 1:
        return x
    B, F, h, w, D = x.shape
    x = x[:, :, : h // k * k, : w // k * k]
    x = x.reshape(B, F, h // k, k, w // k, k, D)
    return jnp.mean(x.astype(jnp.float32), axis=(3, 5)).astype(x.dtype)


def _adaptive_time_pool(x: Float[Array, "B n h w D"], out: int) -> Float[Array, "B out h w D"]:
    """torch's adaptive average pool over axis 1: window i is
    [floor(i n / out), ceil((i + 1) n / out))."""
    n = x.shape[1]
    frames = []
    for i in range(out):
        start, stop = (i * n) // out, -(-((i + 1) * n) // out)
        frames.append(jnp.mean(x[:, start:stop].astype(jnp.float32), axis=1))
    return jnp.stack(frames, axis=1).astype(x.dtype)


def fast_tokens(
    frame_tokens: Float[Array, "B F g g D"], config: TokenPipelineConfig
) -> Float[Array, "B N D"]:
    """The fast tokens: zero-pad F to a multiple of sampling stride x temporal pool, sample every
    `temporal_sampling_stride` frames (at least `min_fast_frames`), average-pool windows of
    `temporal_pool` frames (adaptively to `min_fast_frames` if fewer would remain), pool
    `spatial_pool` x `spatial_pool` in space, flatten frame-major.

    Raises:
      ValueError: the clip does not have `config.num_frames` frames.
    """
    B, F, g, _, D = frame_tokens.shape
    if config.num_frames != F:
        raise ValueError(
            f"frame_tokens has {F} frames; the token pipeline is configured for "
            f"num_frames={config.num_frames}."
        )
    s, p = config.temporal_sampling_stride, config.temporal_pool
    x = frame_tokens
    if F % (s * p):  # the released code pads with zero frames, which then enter the pools
        x = jnp.pad(x, ((0, 0), (0, s * p - F % (s * p)), (0, 0), (0, 0), (0, 0)))
    if s > 1:
        x = x[:, jnp.asarray(sample_fast_frames(x.shape[1], s, config.min_fast_frames))]
    if p > 1:
        n = x.shape[1]
        if n // p >= config.min_fast_frames:
            x = x[:, : n // p * p].reshape(B, n // p, p, g, g, D)
            x = jnp.mean(x.astype(jnp.float32), axis=2).astype(frame_tokens.dtype)
        else:
            x = _adaptive_time_pool(x, min(n, config.min_fast_frames))
    x = spatial_pool(x, config.spatial_pool)
    return x.reshape(B, -1, D)


def slow_tokens(
    frame_tokens: Float[Array, "B F g g D"], frame_mask: Bool[Array, "B F"] | None = None
) -> tuple[Float[Array, "B S D"], Bool[Array, "B S"]]:
    """Every frame's tokens, frame-major, and their mask (False: a padding frame's tokens).

    Raises:
      ValueError: `frame_mask` is not [B, F].
    """
    B, F, g, _, D = frame_tokens.shape
    if frame_mask is None:
        frame_mask = jnp.ones((B, F), bool)
    elif frame_mask.shape != (B, F):
        raise ValueError(f"frame_mask must be [B, F] = {(B, F)}, got {frame_mask.shape}.")
    mask = jnp.repeat(frame_mask.astype(bool), g * g, axis=1)  # [B, F g g]
    return frame_tokens.reshape(B, F * g * g, D), mask
