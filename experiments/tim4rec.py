"""TiM4Rec and SSD4Rec presets: smoke (synthetic sequences) and MovieLens-100K (CPU).

TiM4Rec: An Efficient Sequential Recommendation Model Based on Time-Aware Structured State Space
Duality Model (Fan et al., arXiv:2409.16182 §5); SSD4Rec is TiM4Rec with the time branch off (the
paper's SSD baseline). Both ML-100K presets share `sequential_recommendation.ml100k`'s recipe
with `sasrec/ml100k`, so the three compare at equal data, budget and protocol.
"""

from __future__ import annotations

from efficient.models.tim4rec import TiM4Rec, TiM4RecConfig
from experiments import sequential_recommendation
from experiments.registry import register
from experiments.sequential_recommendation import check_compatible, ml100k, register_model, run

register_model(TiM4RecConfig, TiM4Rec)

register(
    "tim4rec/smoke",
    "Tiny TiM4Rec on synthetic timed sequences: 60 steps, seconds on CPU (CI runs it).",
    sequential_recommendation.smoke(TiM4RecConfig.smoke()),
    run,
    check_compatible,
)
register(
    "ssd4rec/smoke",
    "Tiny SSD4Rec (TiM4Rec without the time branch) on synthetic timed sequences: seconds on CPU.",
    sequential_recommendation.smoke(TiM4RecConfig.smoke(time_aware=False)),
    run,
    check_compatible,
)
register(
    "tim4rec/ml100k",
    "TiM4Rec (D 64) on MovieLens-100K, RecBole protocol, early stopping; <= 30 min on 2 cores.",
    ml100k(TiM4RecConfig.ml100k()),
    run,
    check_compatible,
)
register(
    "tim4rec/ml100k_no_mlp",
    "TiM4Rec without the L x L position MLP (position_mlp=False, not the reference: a time "
    "branch linear in T), tim4rec/ml100k's recipe.",
    ml100k(TiM4RecConfig.ml100k(position_mlp=False)),
    run,
    check_compatible,
)
register(
    "ssd4rec/ml100k",
    "SSD4Rec (TiM4Rec without the time branch) on MovieLens-100K, tim4rec/ml100k's recipe.",
    ml100k(TiM4RecConfig.ssd4rec_ml100k()),
    run,
    check_compatible,
)
