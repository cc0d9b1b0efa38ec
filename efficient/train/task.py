"""What a paper hands the trainer: a model, how to feed it a batch, and a loss with metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from efficient.checks import validates_arguments

# Per-process numpy arrays on the host, jax Arrays (or tracers) on the device.
Batch = Mapping[str, Any]
# (model outputs, batch) -> (scalar loss, {name: scalar metric}); metrics are means over the
# batch's real examples (those with mask 1), so the trainer can weight them by the mask sum.
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]


def _image_inputs(batch: Batch) -> tuple:
    return (batch["image"],)


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """A model plus a loss: everything paper-specific the training loop needs.

    Attributes:
      model: a Flax Linen module called as `model(*inputs(batch), train=bool)`. Collections
        other than 'params' (e.g. 'batch_stats') are model state, updated in training steps.
      loss_fn: maps (model outputs, batch) to (loss, metrics).
      inputs: picks the model's positional arguments out of a batch.
      best_metric: the eval metric that picks `best_eval` in the summary, as (name, "max" or
        "min"); None: accuracy (max) when reported, else loss (min).
      init_params: maps the freshly initialised parameters (boxed with their logical axes) to
        the ones training starts from, e.g. to load pretrained weights into part of the model
        (`replace_params`); None keeps the random init. Not applied when a run resumes (the
        checkpoint holds the parameters).
    """

    model: nn.Module
    loss_fn: LossFn
    inputs: Callable[[Batch], tuple] = _image_inputs
    best_metric: tuple[str, str] | None = None
    init_params: Callable[[Any], Any] | None = None

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model: {type(self.model).__name__}; expected a flax.linen Module.")
        for name in ("loss_fn", "inputs"):
            if not callable(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a callable.")
        if self.init_params is not None and not callable(self.init_params):
            raise ValueError(f"init_params={self.init_params!r}: expected None or a callable.")
        metric = self.best_metric
        if metric is None:
            return
        if not (isinstance(metric, tuple) and len(metric) == 2 and isinstance(metric[0], str)):
            raise ValueError(f"best_metric={metric!r}: expected None or (name, 'max' or 'min').")
        if metric[1] not in ("max", "min"):
            raise ValueError(f"best_metric={metric!r}: the mode must be 'max' or 'min'.")


def replace_params(params: Any, path: tuple[str, ...], values: Any) -> Any:
    """`params` with the subtree at `path` replaced by `values` (same structure and shapes),
    keeping the logical-axis boxes of `params`; for `Task.init_params`.

    Raises:
      ValueError: `values` does not match the subtree's structure or shapes.
    """
    tree = params
    for key in path:
        tree = tree[key]
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
    boxes, structure = jax.tree.flatten(tree, is_leaf=is_box)
    new = jax.tree.leaves(values)
    if jax.tree.structure(nn.unbox(tree)) != jax.tree.structure(values):
        raise ValueError(f"values do not have the structure of params{list(path)}.")
    leaves = []
    for box, value in zip(boxes, new, strict=True):
        old = box.unbox() if is_box(box) else box
        if tuple(old.shape) != tuple(jnp.shape(value)):
            raise ValueError(
                f"a value of shape {jnp.shape(value)} replaces one of {old.shape} in "
                f"params{list(path)}."
            )
        value = jnp.asarray(value, old.dtype)
        leaves.append(box.replace_boxed(value) if is_box(box) else value)
    replaced = jax.tree.unflatten(structure, leaves)

    def put(tree, keys):
        if not keys:
            return replaced
        return {**tree, keys[0]: put(tree[keys[0]], keys[1:])}

    return put(params, path)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Softmax cross-entropy (optionally label-smoothed) with top-1 accuracy.

    The batch must hold `label` int [B] and may hold `mask` float [B] (0 marks padding).
    The loss and metrics are computed in float32 whatever the logits' dtype.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 1).")

    def loss_fn(logits, batch):
        logits = logits.astype(jnp.float32)
        labels = batch["label"]
        mask = batch.get("mask")
        mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
        ce = optax.softmax_cross_entropy(logits, targets)  # [B]
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)  # [B]
        loss = _masked_mean(ce, mask)
        return loss, {"loss": loss, "accuracy": _masked_mean(correct, mask)}

    return loss_fn


def token_inputs(batch: Batch) -> tuple:
    """The model input of a language-model batch: `inputs` int [B, T]."""
    return (batch["inputs"],)


def next_token_loss() -> LossFn:
    """Mean next-token cross-entropy (nats per token) over real tokens, with top-1 accuracy.

    The batch holds `targets` int [B, T] and may hold `mask` float [B, T] (0 marks padding); the
    loss runs in float32 whatever the logits' dtype. For byte-level models nats/token is
    nats/byte; bits per byte is loss / ln 2.
    """

    def loss_fn(logits, batch):
        logits = logits.astype(jnp.float32)
        targets = batch["targets"]
        mask = batch.get("mask")
        mask = jnp.ones(targets.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, T]
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)  # [B, T]
        loss = _masked_mean(ce, mask)
        return loss, {"loss": loss, "accuracy": _masked_mean(correct, mask)}

    return loss_fn
