"""SASRec presets: smoke (synthetic sequences) and MovieLens-100K (CPU), TiM4Rec's baseline.

Self-Attentive Sequential Recommendation (Kang & McAuley, arXiv:1808.09781 §3), as RecBole and
TiM4Rec's baseline config (arXiv:2409.16182 §5) run it; `sasrec/ml100k` is `tim4rec/ml100k`'s
recipe with the model swapped.
"""

from __future__ import annotations

from efficient.models.sasrec import SASRec, SASRecConfig
from experiments import sequential_recommendation
from experiments.registry import register
from experiments.sequential_recommendation import check_compatible, ml100k, register_model, run

register_model(SASRecConfig, SASRec)

register(
    "sasrec/smoke",
    "Tiny SASRec on synthetic sequences: 60 steps, seconds on CPU.",
    sequential_recommendation.smoke(SASRecConfig.smoke()),
    run,
    check_compatible,
)
register(
    "sasrec/ml100k",
    "SASRec (D 64, 8 heads) on MovieLens-100K, tim4rec/ml100k's recipe; <= 30 min on 2 cores.",
    ml100k(SASRecConfig.ml100k()),
    run,
    check_compatible,
)
