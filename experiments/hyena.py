"""Hyena long-convolution LM presets: smoke (synthetic text) and byte-level KJV Bible (CPU).

Hyena Hierarchy (Poli et al. 2023, arXiv:2302.10866 §3); the KJV preset is `transformer/kjv`
with the model swapped for the Hyena model of the same width, depth and MLP, so the two runs
compare side by side.
"""

from __future__ import annotations

import dataclasses

from efficient.data import encode
from efficient.models.hyena import Hyena, HyenaConfig
from experiments import language_modeling, transformer
from experiments.language_modeling import LanguageModeling, register_model, run
from experiments.registry import register

register_model(HyenaConfig, Hyena)


def check_compatible(config: LanguageModeling) -> None:
    """The shared vocabulary check, and every sequence (training windows, prompt + samples) must
    fit the filters' domain [0, max_len)."""
    language_modeling.check_compatible(config)
    max_len = config.model.max_len
    if config.data.seq_len > max_len:
        raise ValueError(
            f"data.seq_len={config.data.seq_len} exceeds model.max_len={max_len} (Hyena's "
            "filters are defined on [0, max_len))."
        )
    if config.sample.max_new_tokens:
        longest = max(len(encode(p)) for p in config.sample.prompts)
        if longest + config.sample.max_new_tokens > max_len:
            raise ValueError(
                f"sample: a {longest}-byte prompt + max_new_tokens="
                f"{config.sample.max_new_tokens} exceeds model.max_len={max_len}."
            )


def kjv() -> LanguageModeling:
    """`transformer.kjv()` (data, steps, schedule, optimizer, samples) with `HyenaConfig.kjv()`:
    built from it, so the two recipes cannot drift apart."""
    return dataclasses.replace(transformer.kjv(), model=HyenaConfig.kjv())


register(
    "hyena/smoke",
    "Tiny Hyena LM on synthetic text: 40 steps, seconds on CPU (CI runs it).",
    language_modeling.smoke(HyenaConfig.smoke()),
    run,
    check_compatible,
)
register(
    "hyena/kjv",
    "Byte-level 3.7M Hyena LM on the KJV Bible, transformer/kjv's recipe (held-out books).",
    kjv(),
    run,
    check_compatible,
)
