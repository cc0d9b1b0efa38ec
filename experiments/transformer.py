"""Reference-transformer presets: smoke (synthetic text) and byte-level KJV Bible (CPU).

Llama 2 (arXiv:2307.09288 §2.2) layout; the KJV preset is sized so that 2 CPU cores train it in
under 30 minutes.
"""

from __future__ import annotations

from efficient.data import TextDataConfig
from efficient.models.transformer import Transformer, TransformerConfig
from efficient.train import OptimizerConfig, TrainConfig
from experiments import language_modeling
from experiments.language_modeling import (
    LanguageModeling,
    SampleConfig,
    check_compatible,
    register_model,
    run,
)
from experiments.registry import register

register_model(TransformerConfig, Transformer)


def kjv_model() -> TransformerConfig:
    """The KJV model: chosen by measured loss per CPU minute (see the transformer README)."""
    return TransformerConfig(
        vocab_size=256, features=256, num_layers=4, num_heads=4, num_kv_heads=4, mlp_dim=768,
        tie_embeddings=True, max_len=1024,
    )  # fmt: skip


def kjv(steps: int = 700) -> LanguageModeling:
    """Byte-level KJV: T = 256, batch 32, AdamW 2e-3 cosine, validation on 7 held-out books."""
    return LanguageModeling(
        model=kjv_model(),
        data=TextDataConfig(source="kjv", seq_len=256, batch_size=32, eval_batch_size=64),
        train=TrainConfig(
            steps=steps,
            log_every=25,
            eval_every=200,
            checkpoint_every=200,
            optimizer=OptimizerConfig(
                name="adamw",
                learning_rate=2e-3,
                warmup_steps=100,
                schedule="cosine",
                end_lr_factor=0.1,
                b2=0.95,
                weight_decay=0.1,
                grad_clip_norm=1.0,
            ),
        ),
        sample=SampleConfig(prompts=("And God said", "In the beginning"), max_new_tokens=300),
    )


register(
    "transformer/smoke",
    "Tiny transformer on synthetic text: 40 steps, seconds on CPU (CI runs it).",
    language_modeling.smoke(TransformerConfig.smoke()),
    run,
    check_compatible,
)
register(
    "transformer/kjv",
    "Byte-level 3.5M transformer on the KJV Bible (held-out books): val < 1.8 nats/byte, <30 min.",
    kjv(),
    run,
    check_compatible,
)
