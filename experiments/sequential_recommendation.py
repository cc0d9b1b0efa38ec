"""Wiring shared by sequential-recommendation experiments: config -> user sequences -> model ->
train with early stopping -> test metrics of the best validation step.

TiM4Rec (arXiv:2409.16182) §4.1 trains and evaluates with RecBole 1.2.1's sequential defaults:
softmax cross-entropy over all items ("CE" loss), leave-one-out, full ranking, early stopping on
validation NDCG@10, and the test metrics of the parameters with the best validation NDCG@10.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from efficient.data import (
    RecSysDataConfig,
    check_ks,
    ranking_metrics,
    recsys_dataset_info,
    recsys_eval_dataset,
    recsys_train_dataset,
)
from efficient.train import OptimizerConfig, Task, TrainConfig, TrainResult, train
from efficient.train.metrics import write_text_atomic
from efficient.train.task import Batch, LossFn
from experiments.image_classification import to_json
from experiments.registry import ModelRegistry

# The validation metric that early stopping and the best parameters follow (TiM4Rec's configs:
# `valid_metric: NDCG@10`).
VALID_METRIC = ("ndcg@10", "max")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequentialRecommendation:
    """A next-item recommender trained with softmax cross-entropy over all items.

    Attributes:
      model: the model's config; `build_model` maps its type to the module. Its `num_items` and
        `max_len` are set from the data when the run starts (`with_data_sizes`).
      data: the user-sequence pipeline (source, T, k-core, batch sizes, seed).
      train: the training loop; `eval_every` steps between validations, and early stopping
        (`early_stopping_patience` validations, `keep_best`) on validation NDCG@10.
      ks: the cut-offs K of HR@K, NDCG@K and MRR@K.
    """

    model: Any
    data: RecSysDataConfig = dataclasses.field(default_factory=RecSysDataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    ks: tuple[int, ...] = (10, 20)

    def __post_init__(self):
        object.__setattr__(self, "ks", check_ks(self.ks))  # numpy ints as ints
        if 10 not in self.ks:
            raise ValueError(f"ks={self.ks}: must include 10 (early stopping follows NDCG@10).")


_MODELS = ModelRegistry("sequential recommendation")
register_model = _MODELS.register
build_model = _MODELS.build


def sequence_inputs(batch: Batch) -> tuple:
    """The model inputs of a recommendation batch: items [B, T], timestamps [B, T], lengths [B]."""
    return batch["items"], batch["timestamps"], batch["lengths"]


def next_item_loss(ks: Sequence[int] = (10, 20)) -> LossFn:
    """Softmax cross-entropy of the target item over every item, with full-ranking metrics.

    The scores are float [B, num_items + 1]; as RecBole's CE loss does, the softmax runs over all
    columns, padding column 0 included (the target is never 0, so training pushes it down), while
    the ranking metrics never rank column 0 (`efficient.data.ranking_metrics`). Metrics are
    means over the real examples (`mask` 1); computed in float32 whatever the scores' dtype.

    Args:
      ks: the cut-offs of hit@K, ndcg@K and mrr@K.

    Returns:
      (scores, batch) -> (loss, {"loss", "hit@K", "ndcg@K", "mrr@K"}).
    """
    ks = tuple(ks)

    def loss_fn(scores, batch):
        scores = scores.astype(jnp.float32)
        targets, mask = batch["targets"], batch["mask"].astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(scores, targets)  # [B]
        per_example = ranking_metrics(jax.lax.stop_gradient(scores), targets, ks=ks)
        weight = jnp.maximum(jnp.sum(mask), 1.0)
        loss = jnp.sum(ce * mask) / weight
        metrics = {k: jnp.sum(v * mask) / weight for k, v in per_example.items()}
        return loss, {"loss": loss, **metrics}

    return loss_fn


def with_data_sizes(config: SequentialRecommendation) -> SequentialRecommendation:
    """The config with `model.num_items` and `model.max_len` taken from the data (loads it).

    The item vocabulary depends on the source and its k-core filter, so presets cannot know it
    without reading the data; the run's config.json records the resolved values.
    """
    num_items = recsys_dataset_info(config.data)["num_items"]
    model = dataclasses.replace(config.model, num_items=num_items, max_len=config.data.max_len)
    return dataclasses.replace(config, model=model)


def check_compatible(config: SequentialRecommendation) -> None:
    """Early stopping needs periodic validation and the best parameters (RecBole's protocol)."""
    if config.train.eval_every == 0:
        raise ValueError("train.eval_every=0: validation (every epoch, say) is needed.")
    if config.train.early_stopping_patience is not None and not config.train.keep_best:
        raise ValueError(
            "train.keep_best=False with early stopping: the test metrics would come from the "
            "last parameters, not the best validation step's (set --train.keep_best True)."
        )


def smoke(model_config) -> SequentialRecommendation:
    """The smoke recipe every recommender shares: synthetic sequences, 60 steps of 64, T = 20."""
    return SequentialRecommendation(
        model=model_config,
        data=RecSysDataConfig(source="synthetic", max_len=20, batch_size=64, eval_batch_size=128),
        train=TrainConfig(
            steps=60, log_every=10, eval_every=20, checkpoint_every=20,
            early_stopping_patience=3, keep_best=True,
            optimizer=OptimizerConfig(name="adamw", learning_rate=3e-3, schedule="constant"),
        ),
    )  # fmt: skip


# MovieLens-100K after the 5-core filter (efficient.data.recsys): 96,458 training examples
# (every prefix of every user's training part; tests check this against the data).
ML100K_TRAIN_EXAMPLES = 96_458


def ml100k(model_config, *, batch_size: int = 256, epochs: int = 4) -> SequentialRecommendation:
    """The CPU recipe on MovieLens-100K shared by TiM4Rec, SSD4Rec and SASRec (<= 30 min).

    TiM4Rec's protocol (RecBole defaults): Adam at lr 1e-3 (no decay, no schedule), T = 50,
    5-core filtering, leave-one-out, full ranking, early stopping on validation NDCG@10, test
    metrics of the best validation step. Changed to fit 2 CPU cores, where a training step costs
    about 1.2 MFLOP per position (TiM4Rec; SASRec 0.8) and an epoch is 4.8M positions: measured
    on 2 cores shared with another training run, 380-440 s per epoch for TiM4Rec and SSD4Rec,
    250 s for SASRec (about half that on 2 idle cores).

    - `batch_size` 256, not 2048. The paper's 2048 on ML-1M is ~490 updates per epoch; on
      ML-100K it would be 47, so a CPU budget of a few epochs would be a few hundred Adam
      updates. 256 gives 376 updates per epoch at the lowest CPU cost per example (measured,
      TiM4Rec: 3.9 ms per example at B = 256, 4.4 at 128, 4.0 at 512; SASRec 2.6, 3.0, 3.2).
    - `epochs` 4 instead of up to 300: ~29 min for TiM4Rec on the shared cores. The models are
      still improving then (TiM4Rec's validation NDCG@10: 0.056 after 1 epoch, 0.062 after 2),
      so the table compares the three at an equal, short budget, not at convergence.
    - Validation 4 times per epoch (a pass over the 943 users costs about one training step);
      early stopping after 8 validations (2 epochs) without improvement instead of 20 epochs.

    A longer budget, e.g. on an accelerator: `--train.steps 112800
    --train.early_stopping_patience 80` (300 epochs, patience 20 epochs).
    """
    per_epoch = ML100K_TRAIN_EXAMPLES // batch_size
    eval_every = per_epoch // 4
    return SequentialRecommendation(
        model=model_config,
        data=RecSysDataConfig(source="ml-100k", max_len=50, batch_size=batch_size,
                              eval_batch_size=512),
        train=TrainConfig(
            steps=epochs * per_epoch, log_every=eval_every // 2, eval_every=eval_every,
            checkpoint_every=eval_every, keep_checkpoints=2, early_stopping_patience=8,
            keep_best=True,
            optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3, schedule="constant",
                                      weight_decay=0.0),
        ),
    )  # fmt: skip


def run(config: SequentialRecommendation, workdir: pathlib.Path, resume: bool = False) -> dict:
    """Train with early stopping; returns the summary (also in workdir/summary.json)."""
    return train_recommender(config, workdir, resume)[0].summary


def train_recommender(
    config: SequentialRecommendation, workdir: pathlib.Path, resume: bool = False
) -> tuple[TrainResult, Any]:
    """`run`, returning the training result (best parameters included) and the model as well.

    The summary's "test" holds the test metrics of the best validation step's parameters
    (`test_step`); "epochs" converts steps to passes over the training examples.
    """
    config = with_data_sizes(config)
    check_compatible(config)
    model = build_model(config.model)
    task = Task(
        model=model, loss_fn=next_item_loss(config.ks), inputs=sequence_inputs,
        best_metric=VALID_METRIC,
    )  # fmt: skip
    info = recsys_dataset_info(config.data)
    per_epoch = info["train_examples"] // config.data.batch_size
    print(f"data: {info['source']}, {info['num_users']:,} users, {info['num_items']:,} items, "
          f"{info['train_examples']:,} train examples ({per_epoch} steps per epoch)")  # fmt: skip
    result = train(
        task,
        config.train,
        train_data=recsys_train_dataset(config.data),
        eval_data=lambda: recsys_eval_dataset(config.data, "validation"),
        test_data=lambda: recsys_eval_dataset(config.data, "test"),
        workdir=workdir,
        resume=resume,
        run_config=to_json(config),
    )
    summary = result.summary
    summary["data"] = info
    summary["steps_per_epoch"] = per_epoch
    summary["epochs"] = {
        key: None if summary.get(key) is None else summary[key] / per_epoch
        for key in ("step", "best_step")
    }
    write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2, default=str))
    return result, model


__all__ = [
    "ML100K_TRAIN_EXAMPLES",
    "SequentialRecommendation",
    "VALID_METRIC",
    "build_model",
    "check_compatible",
    "ml100k",
    "next_item_loss",
    "register_model",
    "run",
    "sequence_inputs",
    "smoke",
    "train_recommender",
    "with_data_sizes",
]
