"""Slow-Fast video MLLM on Fashion-MNIST video question answering: slow-fast vs fast-only.

Slow-Fast Architecture for Video Multi-Modal Large Language Models (Shi et al.,
arXiv:2504.01328): the LLM input holds 16 pooled frames (the fast tokens) whatever the clip
length; hybrid layers let the text read every frame (the slow tokens). The task
(`efficient.data.video_qa`): a 128-frame clip, empty but for 1-3 single-frame flashes of a
Fashion-MNIST item; "Which item flashes by?". A flash is 1/4 of one pooled fast frame at 64
frames and at 128 (where the stride-2 sampling also drops every other frame), and a 16-frame
sampling of the clip misses 7 of 8 flashes, so the answer needs the fine temporal detail the
paper's design keeps.

Presets, all with `SlowFastConfig.video_qa(frames)` at one token per frame (LLM input: 16 fast
tokens + 40 text bytes whatever the frames) and one recipe:
- `slowfast/video_qa` (128 frames), `slowfast/video_qa_f64`, `slowfast/video_qa_f16`;
- `fastonly/video_qa_f128`, `fastonly/video_qa_f64`, `fastonly/video_qa_f16`: the same model
  without hybrid layers (equal LLM input length);
- `allfast/video_qa_f128`: the "more fast tokens" baseline, all 128 frames' tokens in the LLM
  input and no hybrid layers;
- `slowfast/smoke`: a tiny model on synthetic clips, seconds on CPU.

Metric: exact-match answer accuracy (every answer byte, the final newline included, is the
argmax: exactly what greedy decoding would produce), overall and per question type, on 1024
held-out clips made from Fashion-MNIST's test images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from efficient.data import (
    ImageDataConfig,
    VideoQADataConfig,
    video_qa_dataset_info,
    video_qa_eval_dataset,
    video_qa_train_dataset,
)
from efficient.data import eval_dataset as image_eval_dataset
from efficient.data import train_dataset as image_train_dataset
from efficient.data.video_qa import ANSWER_TOKEN, QUESTION_TYPES
from efficient.models.slowfast_mllm import SlowFastConfig, SlowFastMLLM, TokenPipelineConfig
from efficient.models.transformer import TransformerConfig
from efficient.models.vit import ViT, ViTConfig
from efficient.train import (
    OptimizerConfig,
    Task,
    TrainConfig,
    classification_loss,
    replace_params,
    train,
)
from efficient.train.loop import config_differences
from efficient.train.metrics import write_text_atomic
from efficient.train.task import Batch
from experiments.image_classification import ImageClassification, to_json
from experiments.registry import register


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoQA:
    """A video MLLM trained to answer questions about clips with next-token cross-entropy on
    the answer bytes.

    Attributes:
      model: the Slow-Fast configuration (`hybrid=False`: the fast-only baseline).
      data: the clip pipeline; its `num_frames` must be the model's.
      train: the training loop.
      vision_pretrain: first train `model.vision` as a Fashion-MNIST classifier with this
        recipe (into `workdir/vision_pretrain/`; its `model` must be `model.vision`) and start
        the video model's encoder from it — the paper's MLLM starts from a pretrained vision
        tower; None: the encoder starts from a random init.
      vision_pretrain_dir: where that pretraining runs instead of `workdir/vision_pretrain/`.
        Runs that name one directory share one pretraining: the first trains it (under a file
        lock, so runs started together wait for it) and the others reuse it. A directory that
        holds a different `vision_pretrain` recipe is an error, not silently reused.
    """

    model: SlowFastConfig
    data: VideoQADataConfig = dataclasses.field(default_factory=VideoQADataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    vision_pretrain: ImageClassification | None = None
    vision_pretrain_dir: str | None = None


def check_compatible(config: VideoQA) -> None:
    """The clip's frames must be what the model's token pipeline expects."""
    if config.data.num_frames != config.model.tokens.num_frames:
        raise ValueError(
            f"data.num_frames={config.data.num_frames} but model.tokens.num_frames="
            f"{config.model.tokens.num_frames}: they must match."
        )
    vision = config.model.vision
    if vision is None or vision.image_size != 28 or vision.in_channels != 1:
        raise ValueError("model.vision must be a ViT on 28 x 28 x 1 frames (Fashion-MNIST).")
    if config.vision_pretrain is not None and config.vision_pretrain.model != vision:
        raise ValueError("vision_pretrain.model must be model.vision (the encoder it pretrains).")
    if config.data.text_len > config.model.llm.max_len:
        raise ValueError(
            f"data.text_len={config.data.text_len} exceeds model.llm.max_len="
            f"{config.model.llm.max_len}."
        )


def qa_inputs(batch: Batch) -> tuple:
    """The model inputs of a video-QA batch: frames, text tokens, their types."""
    return batch["frames"], batch["tokens"], batch["token_types"]


def answer_correct(logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per example: (cross-entropy summed over the answer bytes, number of answer bytes,
    1.0 if every answer byte is the argmax). Logits at text position t predict byte t + 1."""
    logits = logits[:, :-1].astype(jnp.float32)  # [B, L-1, V]
    targets = batch["tokens"][:, 1:]
    weight = (batch["token_types"][:, 1:] == ANSWER_TOKEN).astype(jnp.float32)  # [B, L-1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, L-1]
    hit = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    exact = jnp.min(jnp.where(weight > 0, hit, 1.0), axis=-1)  # [B]
    return jnp.sum(ce * weight, -1), jnp.sum(weight, -1), exact


def answer_loss(logits, batch):
    """Mean cross-entropy per answer byte, with exact-match and per-byte accuracy."""
    ce, count, exact = answer_correct(logits, batch)
    mask = batch["mask"].astype(jnp.float32)
    bytes_ = jnp.maximum(jnp.sum(count * mask), 1.0)
    examples = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(ce * mask) / bytes_
    return loss, {"loss": loss, "accuracy": jnp.sum(exact * mask) / examples}


def evaluate_accuracy(model: SlowFastMLLM, params: Any, data: VideoQADataConfig) -> dict:
    """Exact-match accuracy over the whole evaluation set: overall, per question type, and for
    "count" per true number of flashes (exact counts, not batch-weighted means)."""
    apply = jax.jit(lambda p, f, t, y: answer_correct(model.apply({"params": p}, f, t, y), {
        "tokens": t, "token_types": y}))  # fmt: skip
    rows = []
    for batch in video_qa_eval_dataset(data):
        _, _, exact = apply(params, batch["frames"], batch["tokens"], batch["token_types"])
        real = batch["mask"] > 0
        rows.append(
            np.stack([np.asarray(exact), batch["question_type"], batch["num_events"]], 1)[real]
        )
    table = np.concatenate(rows)
    out = {"accuracy": float(table[:, 0].mean()), "examples": len(table)}
    for k, name in enumerate(QUESTION_TYPES):
        of_type = table[table[:, 1] == k]
        if len(of_type):
            out[f"accuracy_{name}"] = float(of_type[:, 0].mean())
    counts = table[table[:, 1] == QUESTION_TYPES.index("count")]
    for n in np.unique(counts[:, 2]).astype(int):
        out[f"accuracy_count_n{n}"] = float(counts[counts[:, 2] == n, 0].mean())
    return out


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive advisory lock on `path` (created), held for the block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pretrain_vision(config: VideoQA, workdir: pathlib.Path) -> tuple[dict, dict]:
    """Train the encoder as an image classifier (`config.vision_pretrain`) into
    `config.vision_pretrain_dir` (default `workdir/vision_pretrain/`), resuming or reusing a
    run there.

    Returns:
      (the encoder's parameters without the classifier head, the classifier's summary with
      "directory" and "reused": whether a finished run was found there).

    Raises:
      ValueError: the directory holds the pretraining of another recipe.
    """
    pre = config.vision_pretrain
    directory = pathlib.Path(config.vision_pretrain_dir or workdir / "vision_pretrain")
    directory.mkdir(parents=True, exist_ok=True)
    wanted = json.loads(json.dumps(to_json(pre), default=str))  # as train writes config.json
    # `--train.progress False` silences the pretraining's bar as well.
    pre_train = dataclasses.replace(
        pre.train, progress=pre.train.progress and config.train.progress
    )
    with _locked(directory / ".lock"):
        found = directory / "config.json"
        # The rule train() applies on resume (session fields and fields added since aside).
        if found.exists() and config_differences(json.loads(found.read_text()), wanted):
            raise ValueError(
                f"{directory} holds the vision pretraining of another recipe (its config.json "
                "differs from this run's vision_pretrain); choose another vision_pretrain_dir."
            )
        record = directory / "summary.json"
        previous = json.loads(record.read_text()) if record.exists() else {}
        reused = previous.get("status") == "completed"
        result = train(
            Task(model=ViT(pre.model), loss_fn=classification_loss(pre.label_smoothing)),
            pre_train,
            train_data=image_train_dataset(pre.data),
            eval_data=lambda: image_eval_dataset(pre.data),
            workdir=directory,
            resume=(directory / "checkpoints").exists(),
            run_config=to_json(pre),
        )
        summary = result.summary
        if reused:  # keep the record (wall time, ...) of the run that trained it
            write_text_atomic(record, json.dumps(previous, indent=2, default=str))
            summary = previous
    if summary.get("status") != "completed":
        raise RuntimeError(f"vision pretraining stopped early: {summary.get('status')}")
    params = {k: v for k, v in nn.unbox(result.state.params).items() if k != "head"}
    return jax.device_get(params), dict(summary, directory=str(directory), reused=reused)


def run(config: VideoQA, workdir: pathlib.Path, resume: bool = False) -> dict:
    """Train (after the encoder's pretraining, if any), then score the evaluation clips once
    more with the final parameters for the per-type accuracies."""
    check_compatible(config)
    workdir = pathlib.Path(workdir)
    init_params, pretrain_summary = None, None
    if config.vision_pretrain is not None:
        vision, pretrain_summary = pretrain_vision(config, workdir)
        accuracy = pretrain_summary["final_eval"]["accuracy"]
        how = "reused from" if pretrain_summary["reused"] else "pretrained in"
        print(f"vision encoder {how} {pretrain_summary['directory']}: test accuracy {accuracy:.4f}")

        def init_params(params):
            return replace_params(params, ("frames", "vision"), vision)

    model = SlowFastMLLM(config.model)
    task = Task(
        model=model, loss_fn=answer_loss, inputs=qa_inputs, best_metric=("accuracy", "max"),
        init_params=init_params,
    )  # fmt: skip
    info = video_qa_dataset_info(config.data)
    print(
        f"data: {info['source']} clips of {config.data.clip_frames} frames, "
        f"{config.data.num_frames} given to the model; {config.data.eval_clips} evaluation clips; "
        f"fast tokens {config.model.num_fast_tokens}, slow tokens "
        f"{config.model.num_slow_tokens if config.model.hybrid else 0}"
    )
    result = train(
        task,
        config.train,
        train_data=video_qa_train_dataset(config.data),
        eval_data=lambda: video_qa_eval_dataset(config.data),
        workdir=workdir,
        resume=resume,
        run_config=to_json(config),
    )
    summary = result.summary
    summary["data"] = info
    if pretrain_summary is not None:
        summary["vision_pretrain"] = {
            k: pretrain_summary.get(k)
            for k in ("final_eval", "wall_time_s", "params", "directory", "reused")
        }
    if summary.get("status") == "completed":
        scores = evaluate_accuracy(model, result.state.params, config.data)
        summary["eval_accuracy"] = scores
        print(
            "accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "examples")
        )
    write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


# ---------------------------------------------------------------------------- presets

# The CPU recipe (all six video_qa presets): batch 32 clips, AdamW 1e-3, cosine, 600 steps.
VIDEO_QA_STEPS = 600
# "Which item flashes by?" on a blank stage. With scene backgrounds (a slideshow of another
# class between the flashes) every model stayed at chance on "what", "count" and "present" (the
# H100 runs of the README, and CPU probes: "present" stayed at chance even with 16-frame flashes
# that the fast tokens show plainly, so the byte-level decoder trained from scratch did not bind
# an item named in the question to the frames); on a blank stage the slow path learns "what" in
# a few hundred steps (README of models/slowfast_mllm).
VIDEO_QA_QUESTIONS = ("what",)
VIDEO_QA_BACKGROUND = "blank"
# One token per frame (the 4 x 4 ViT patch map pooled whole): a 28-px item is one object, and
# the slow path then searches 128 tokens, not 512, at 128 frames.
VIDEO_QA_FRAME_POOLING = 4
VISION_PRETRAIN_STEPS = 3000
# The hybrid layers' gate scalar at init. The paper's alpha = 0 keeps a pretrained LLM's output
# at step 0; here the LLM trains from scratch, so there is nothing to keep, and a closed gate
# barely opens: at alpha = 0 the only gradient is alpha's, tanh(gate) x cross-attention output,
# a random-sign sum while the cross-attention is untrained (probe: slowfast/video_qa, 300 steps,
# "present" 46% = chance, "scene" 98%). tanh(1) = 0.76 lets every cross parameter learn at once.
VIDEO_QA_ALPHA_INIT = 1.0


def video_qa(
    frames: int, *, hybrid: bool, steps: int = VIDEO_QA_STEPS, all_fast: bool = False
) -> VideoQA:
    """`SlowFastConfig.video_qa(frames)` (slow-fast or fast-only) at one token per frame, on
    128-frame clips sampled to `frames` frames; the LLM input is 16 fast tokens + 40 text bytes
    in every case — except with `all_fast`: every frame's token in the LLM input (the "more fast
    tokens" baseline: `frames` + 40 tokens, no hybrid layers).

    As the paper's MLLM starts from a pretrained vision tower, the ViT is first trained as a
    Fashion-MNIST classifier (`VISION_PRETRAIN_STEPS` steps of 128 images, 1-2 minutes on CPU)
    and then kept frozen (`freeze_vision`; no weight decay, so it stays exactly as pretrained):
    with a random encoder 300 steps of the QA task learned only the answer priors
    (fastonly/video_qa_f16: 22.3% exact match = the 22.2% chance rate). The projector, the LLM
    and the hybrid layers train.
    """
    if all_fast and hybrid:
        raise ValueError("all_fast puts every frame in the LLM input: it has no hybrid layers.")
    tokens = (TokenPipelineConfig.all_fast if all_fast else TokenPipelineConfig.released)(
        frames, frame_pooling=VIDEO_QA_FRAME_POOLING
    )
    model = SlowFastConfig.video_qa(
        frames, hybrid=hybrid, freeze_vision=True, alpha_init=VIDEO_QA_ALPHA_INIT, tokens=tokens
    )
    return VideoQA(
        model=model,
        data=VideoQADataConfig(
            source="fashion-mnist", background=VIDEO_QA_BACKGROUND, clip_frames=128,
            num_frames=frames, batch_size=32, eval_batch_size=128, eval_clips=1024,
            question_types=VIDEO_QA_QUESTIONS, text_len=40,
        ),
        train=TrainConfig(
            steps=steps, log_every=25, eval_every=150, checkpoint_every=150,
            optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=30, weight_decay=0.0,
                                      grad_clip_norm=1.0),
        ),
        vision_pretrain=ImageClassification(
            model=model.vision,
            data=ImageDataConfig(source="fashion_mnist", batch_size=128, eval_batch_size=500),
            train=TrainConfig(
                steps=VISION_PRETRAIN_STEPS, log_every=100, eval_every=0,
                checkpoint_every=VISION_PRETRAIN_STEPS,
                optimizer=OptimizerConfig(learning_rate=2e-3, warmup_steps=25,
                                          weight_decay=0.05),
            ),
            label_smoothing=0.0,
        ),
    )  # fmt: skip


def smoke() -> VideoQA:
    """Tiny model, synthetic 16-frame clips, 30 steps."""
    vision = ViTConfig(
        image_size=28, patch_size=7, in_channels=1, num_classes=10, features=16, num_layers=1,
        num_heads=2, mlp_dim=32,
    )  # fmt: skip
    llm = TransformerConfig(
        vocab_size=256, features=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64,
        max_len=128,
    )  # fmt: skip
    model = SlowFastConfig(
        llm=llm, vision=vision, vision_features=16, feature_grid=4,
        tokens=TokenPipelineConfig(num_frames=16, temporal_pool=4, min_fast_frames=4),
        cross_attn_every_n_layers=2, freeze_vision=True,
    )  # fmt: skip
    return VideoQA(
        model=model,
        data=VideoQADataConfig(
            source="synthetic", clip_frames=16, num_frames=16, batch_size=8, eval_batch_size=16,
            eval_clips=32, synthetic_size=200,
        ),
        train=TrainConfig(
            steps=30, log_every=10, eval_every=15, checkpoint_every=15,
            optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=5),
        ),
        vision_pretrain=ImageClassification(
            model=vision,
            data=ImageDataConfig(source="synthetic", image_size=28, batch_size=32,
                                 eval_batch_size=64, synthetic_eval_size=64),
            train=TrainConfig(steps=6, log_every=3, eval_every=0, checkpoint_every=6),
        ),
    )  # fmt: skip


register(
    "allfast/video_qa_f128",
    "The 'more fast tokens' baseline: all 128 frames' tokens in the LLM input (128 + 40 "
    f"tokens, 3x the others'), no hybrid layers, {VIDEO_QA_STEPS} steps.",
    video_qa(128, hybrid=False, all_fast=True),
    run,
    check_compatible,
)
register(
    "slowfast/smoke",
    "Tiny Slow-Fast MLLM on synthetic 16-frame clips: 30 steps, seconds on CPU (CI runs it).",
    smoke(),
    run,
    check_compatible,
)
for _frames in (128, 64, 16):
    _suffix = "" if _frames == 128 else f"_f{_frames}"
    register(
        f"slowfast/video_qa{_suffix}",
        f"Slow-Fast MLLM (hybrid layers 0, 2) on Fashion-MNIST video QA, {_frames} frames "
        f"(16 fast tokens in the LLM input, {_frames} slow), {VIDEO_QA_STEPS} steps.",
        video_qa(_frames, hybrid=True),
        run,
        check_compatible,
    )
    register(
        f"fastonly/video_qa_f{_frames}",
        f"The fast-only baseline of slowfast/video_qa{_suffix}: same model and LLM input, no "
        "hybrid layers.",
        video_qa(_frames, hybrid=False),
        run,
        check_compatible,
    )
