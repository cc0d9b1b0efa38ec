"""LaCT language-model presets: smoke (synthetic text) and byte-level KJV Bible at a context of 8
windows, next to a full-attention and a sliding-window-only transformer of equal size and budget.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884) §5.2 and Figure 5: the claim
is that the fast weights carry context beyond the attention window, seen as a validation loss that
keeps falling with the position in the context where a sliding-window-only model's flattens.

The three KJV presets share `transformer/kjv`'s recipe (AdamW 2e-3, b2 0.95, wd 0.1, clip 1.0,
100 warm-up steps, cosine to 10%, samples) and its 8,192 tokens per step, as B = 16 sequences of
T = 512 bytes instead of 32 of 256, so that T is 8x LaCT's window (= chunk = 64). The step count
is sized so that LaCT, the slowest of the three per step, fits 30 minutes on 2 CPU cores; the two
baselines run the same steps (equal tokens). Each reports its validation loss per 64-position
bucket (`LanguageModeling.position_bucket`):

- `lact/kjv`: `LaCTConfig.cpu_small()` (3,470,120 parameters): sliding-window attention (w 64) +
  SwiGLU fast weights updated once per 64-token chunk, momentum, no Muon.
- `transformer/kjv_long`: `transformer/kjv`'s model (3,475,712) with full causal attention at
  T = 512.
- `transformer/kjv_swa`: the same transformer with `sliding_window=64` (LaCT's window): its
  attention alone reaches 63 positions back per layer (4 layers: 252 through the stack).
"""

from __future__ import annotations

import dataclasses

from efficient.models.lact import LaCT, LaCTConfig
from experiments import language_modeling, transformer
from experiments.language_modeling import LanguageModeling, check_compatible, register_model, run
from experiments.registry import register

register_model(LaCTConfig, LaCT)

SEQ_LEN = 512  # 8 windows / chunks of 64
BATCH = 16  # x 512 = transformer/kjv's 8,192 tokens per step
WINDOW = LaCTConfig.cpu_small().sliding_window  # = chunk_size = 64
# Sized by LaCT's CPU step, 1.50x transformer/kjv's (~3.3 s alone; measured interleaved, see
# efficient/models/lact/README.md): 450 steps + evaluations fit 30 minutes. All three use it.
KJV_STEPS = 450


def long_context(model, steps: int = KJV_STEPS) -> LanguageModeling:
    """`transformer.kjv()` with `model`, T = 512, B = 16 and the per-position evaluation.

    Args:
      model: any registered language-model config.
      steps: optimizer steps (the cosine schedule spans them).

    Returns:
      The experiment config.
    """
    base = transformer.kjv(steps)
    return dataclasses.replace(
        base,
        model=model,
        data=dataclasses.replace(base.data, seq_len=SEQ_LEN, batch_size=BATCH),
        train=dataclasses.replace(base.train, eval_every=150, checkpoint_every=150),
        position_bucket=WINDOW,
    )


def kjv() -> LanguageModeling:
    """`lact/kjv`: `LaCTConfig.cpu_small()` on byte-level KJV at T = 512."""
    return long_context(LaCTConfig.cpu_small())


def kjv_long() -> LanguageModeling:
    """`transformer/kjv_long`: `transformer/kjv`'s model with full attention at T = 512."""
    return long_context(transformer.kjv_model())


def kjv_swa() -> LanguageModeling:
    """`transformer/kjv_swa`: `transformer/kjv`'s model, attention window 64 (LaCT's), T = 512."""
    return long_context(dataclasses.replace(transformer.kjv_model(), sliding_window=WINDOW))


def smoke() -> LanguageModeling:
    """`lact/smoke`: the shared smoke recipe (T = 64: 4 chunks of 16) with per-position eval."""
    config = language_modeling.smoke(LaCTConfig.smoke())
    return dataclasses.replace(config, position_bucket=LaCTConfig.smoke().chunk_size)


register(
    "lact/smoke",
    "Tiny LaCT LM on synthetic text: 40 steps, seconds on CPU (CI runs it).",
    smoke(),
    run,
    check_compatible,
)
register(
    "lact/kjv",
    f"Byte-level 3.47M LaCT LM (window = chunk = 64) on KJV at T = 512, {KJV_STEPS} steps; "
    "per-position validation loss (<= 30 min on 2 cores).",
    kjv(),
    run,
    check_compatible,
)
register(
    "transformer/kjv_long",
    f"lact/kjv's baseline: transformer/kjv's 3.48M model, full attention at T = 512, {KJV_STEPS} "
    "steps; per-position validation loss.",
    kjv_long(),
    run,
    check_compatible,
)
register(
    "transformer/kjv_swa",
    "lact/kjv's baseline: transformer/kjv's model with a 64-slot attention window at T = 512, "
    f"{KJV_STEPS} steps; per-position validation loss.",
    kjv_swa(),
    run,
    check_compatible,
)

__all__ = ["kjv", "kjv_long", "kjv_swa", "long_context", "smoke"]
