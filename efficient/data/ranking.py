"""Full-ranking next-item metrics (HR, NDCG, MRR @ K) and checks of recommender inputs.

TiM4Rec: An Efficient Sequential Recommendation Model Based on Time-Aware Structured State Space
Duality Model (arXiv:2409.16182), experiments: RecBole 1.2.1's full-sort evaluation. Its trainer
(`recbole/trainer/trainer.py` `_full_sort_batch_eval`) scores every item, sets the padding
column 0 to -inf and, for sequential models, masks nothing else: the FullSortEvalDataLoader
(`recbole/data/dataloader/general_dataloader.py`) returns `history_index = None` when
`MODEL_TYPE == SEQUENTIAL`, so items already in the user's history stay candidates. With one
positive per example its Hit, MRR and NDCG (`recbole/evaluator/metrics.py`) reduce to
1[r <= K], 1[r <= K] / r and 1[r <= K] / log2(r + 1) of the target's rank r.

Ties: RecBole ranks with `torch.topk`, whose order among equal scores is unspecified. Here the
rank is 1 + the number of items scored strictly higher ("optimistic", the default; equal to any
tie order when scores are distinct) or higher-or-equal ("pessimistic"). A model that scores
every item alike gets HR@K = 1 optimistically and 0 pessimistically, so a large gap between the
two flags degenerate scores. A NaN target score gets rank num_items + 1, a miss at every K up to
num_items; a NaN score of another item counts as above the target in both modes (as
`torch.topk`, which ranks NaN above every number, puts it), so NaN scores never raise a metric.

The pipelines call `check_sequences` on every batch they build (it lives beside the models'
`efficient.nn.next_item.check_inputs`, which runs it on concrete inputs: importing
`efficient.data` loads grain, and models do not).
"""

from collections.abc import Sequence
from typing import Literal

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Float32, Int, Int32

from efficient.checks import as_array, check_range, concrete_values, is_integer, validates_arguments


@validates_arguments
def target_ranks(
    scores: Float[Array, "B V"],
    targets: Int[Array, " B"],
    *,
    ties: Literal["optimistic", "pessimistic"] = "optimistic",
) -> Int32[Array, " B"]:
    """The 1-based rank of each target among items 1..V-1 (column 0, padding, is excluded).

    Args:
        scores: one score per item id, V = num_items + 1; column 0 is ignored.
        targets: item ids in 1..V-1 (rows with a padding target 0 get a meaningless rank; mask
            them when averaging). Outside jit, an id outside 0..V-1 is a ValueError; under jit
            (values unknown) it gets rank V, a miss.
        ties: "optimistic": rank = 1 + #items scored strictly higher; "pessimistic": 1 +
            #other items scored higher or equal. Scores are compared in their own dtype (bf16
            scores tie far more often than float32 ones).

    Returns:
        int32 [B] in 1..V-1; V (after every item) where the target's score is NaN or the target
        is out of range.

    Raises:
        ValueError: the shapes do not fit, `targets` is not integer or (concrete) out of range,
            or `ties` is unknown.
    """
    scores, targets = as_array(scores), as_array(targets)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores: shape {scores.shape}, expected [B, num_items + 1] with V >= 2.")
    if targets.shape != scores.shape[:1]:
        raise ValueError(f"targets: shape {targets.shape}, expected [B] = {scores.shape[:1]}.")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets: dtype {targets.dtype}, expected an integer dtype.")
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties={ties!r}: expected 'optimistic' or 'pessimistic'.")
    num_items = scores.shape[1] - 1
    if (values := concrete_values(targets)) is not None:
        check_range("targets", values, 0, num_items, "1..num_items, 0 on padding rows")
    in_range = (targets >= 0) & (targets <= num_items)
    index = jnp.where(in_range, targets, 0)[:, None]  # no wrap-around of negative ids
    target_score = jnp.take_along_axis(scores, index, axis=1)  # [B, 1]
    items = scores[:, 1:]  # [B, V-1]
    is_target = jnp.arange(1, num_items + 1)[None, :] == targets[:, None]  # [B, V-1]
    above = items > target_score if ties == "optimistic" else items >= target_score  # [B, V-1]
    above = (above | jnp.isnan(items)) & ~is_target
    ranks = 1 + jnp.sum(above, axis=1).astype(jnp.int32)
    miss = jnp.isnan(target_score[:, 0]) | ~in_range
    return jnp.where(miss, jnp.int32(num_items + 1), ranks)


@validates_arguments
def ranking_metrics(
    scores: Float[Array, "B V"],
    targets: Int[Array, " B"],
    *,
    ks: Sequence[int] = (10, 20),
    ties: Literal["optimistic", "pessimistic"] = "optimistic",
) -> dict[str, Float32[Array, " B"]]:
    """Per-example HR@K, NDCG@K and MRR@K of full ranking with one target per example.

    With r the target's rank (`target_ranks`): hit@K = 1[r <= K], ndcg@K = 1[r <= K] /
    log2(r + 1), mrr@K = 1[r <= K] / r. Average them over the real examples (mask 1), as
    RecBole averages over users. Jittable (`ks` and `ties` static).

    Args:
        scores: [B, num_items + 1] scores; column 0 (padding) is never ranked.
        targets: [B] item ids in 1..num_items.
        ks: the cut-offs K (positive).
        ties: see `target_ranks`.

    Returns:
        `{"hit@K", "ndcg@K", "mrr@K" for K in ks}`: float32 [B] each.

    Raises:
        ValueError: a K is not positive, or see `target_ranks`.
    """
    ks = check_ks(ks)
    ranks = target_ranks(scores, targets, ties=ties).astype(jnp.float32)  # [B]
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"hit@{k}"] = hit.astype(jnp.float32)
        out[f"ndcg@{k}"] = jnp.where(hit, 1.0 / jnp.log2(ranks + 1.0), 0.0)
        out[f"mrr@{k}"] = jnp.where(hit, 1.0 / ranks, 0.0)
    return out


# ---------------------------------------------------------------------------- input checks


# Unannotated argument: this is the check (as efficient.nn.next_item.check_sequences).
def check_ks(ks) -> tuple[int, ...]:
    """The cut-offs as a tuple of ints; a ValueError unless there is one or more and each is an
    int (numpy ints too; not a bool or float, which would name a metric `hit@2.5`) >= 1."""
    ks = tuple(ks) if isinstance(ks, Sequence | np.ndarray) else (ks,)
    if not ks or any(not is_integer(k) or k < 1 for k in ks):
        raise ValueError(f"ks={ks}: expected one or more positive integer cut-offs.")
    return tuple(int(k) for k in ks)
