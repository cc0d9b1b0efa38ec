"""Weight decay: which parameters it reaches, against a hand-written AdamW step; the learning-rate
schedules against their closed forms; clipping before the update."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.train import OptimizerConfig, make_optimizer
from efficient.train.optimizer import decay_mask, learning_rate_schedule

PARAMS = {
    "pos_embed": jnp.ones((1, 5, 4)),
    "cls_token": jnp.ones((1, 1, 4)),
    "block": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,)), "scale": jnp.ones((4,))},
    "head": {"kernel": jnp.ones((4, 3))},
}


def test_mask_exempts_vectors_and_named_parameters():
    assert decay_mask()(PARAMS) == {
        "pos_embed": True,
        "cls_token": True,
        "block": {"kernel": True, "bias": False, "scale": False},
        "head": {"kernel": True},
    }
    assert decay_mask(("pos_embed", "cls_token", "head"))(PARAMS) == {
        "pos_embed": False,
        "cls_token": False,
        "block": {"kernel": True, "bias": False, "scale": False},
        "head": {"kernel": False},  # a name anywhere in the path exempts the subtree
    }


def test_an_exclude_name_that_matches_no_parameter_is_named():
    # A misspelt name used to leave the parameter decaying, silently.
    match = r"weight_decay_exclude: 'pos_embd' is no key .*keys: bias, block, cls_token"
    with pytest.raises(ValueError, match=match):
        decay_mask(("pos_embd", "cls_token"))(PARAMS)
    tx = make_optimizer(OptimizerConfig(weight_decay_exclude=("cls_tokn",)), total_steps=10)
    with pytest.raises(ValueError, match="'cls_tokn'"):
        tx.init(PARAMS)


@pytest.mark.parametrize("name", ["adamw", "lion", "sgd"])
def test_zero_gradient_step_decays_exactly_the_masked_parameters(name):
    # With zero gradients every optimizer's update is the decay term alone: -lr * wd * p where
    # decayed (sgd: -lr * (wd * p) through the momentum's first step), 0 elsewhere.
    lr, wd = 0.1, 0.5
    config = OptimizerConfig(
        name=name,
        learning_rate=lr,
        schedule="constant",
        weight_decay=wd,
        weight_decay_exclude=("pos_embed", "cls_token"),
    )
    tx = make_optimizer(config, total_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    with jax.numpy_dtype_promotion("standard"):  # as the trainer steps optax
        updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    expected = {
        "pos_embed": 0.0,
        "cls_token": 0.0,
        "block": {"kernel": -lr * wd, "bias": 0.0, "scale": 0.0},
        "head": {"kernel": -lr * wd},
    }
    if name == "sgd":  # Nesterov: the first step applies the decayed gradient (1 + momentum) times
        expected = jax.tree.map(lambda e: e * (1 + config.momentum), expected)
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [("",), ("pos_embed", 3), "pos_embed"])
def test_bad_exclude_is_refused(bad):
    with pytest.raises(ValueError, match="weight_decay_exclude="):
        OptimizerConfig(weight_decay_exclude=bad)


PEAK, TOTAL, END_FACTOR = 0.4, 20, 0.25


def _closed_form(schedule: str, warmup: int, t: int) -> float:
    """The documented schedule at optax count t (the (t+1)-th update): peak * t / w during the
    warm-up, then the decay over the remaining T - w counts to end = peak * end_lr_factor."""
    end = PEAK * END_FACTOR
    if t < warmup:
        return PEAK * t / warmup
    frac = min((t - warmup) / (TOTAL - warmup), 1.0)
    if schedule == "cosine":
        return end + (PEAK - end) * (1 + math.cos(math.pi * frac)) / 2
    if schedule == "linear":
        return PEAK + (end - PEAK) * frac
    return PEAK


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 4])
def test_schedule_matches_its_closed_form(schedule, warmup):
    config = OptimizerConfig(
        learning_rate=PEAK, warmup_steps=warmup, schedule=schedule, end_lr_factor=END_FACTOR
    )
    lr = learning_rate_schedule(config, TOTAL)
    # The warm-up's start (0, not a fraction of the peak) and middle, its end, mid-decay (where
    # the decay length T - w shows), the end (end_lr_factor * peak, not 0) and past it.
    for t in (0, 1, 2, 4, 7, 12, TOTAL - 1, TOTAL, TOTAL + 5):
        want = _closed_form(schedule, warmup, t)
        assert float(lr(t)) == pytest.approx(want, rel=1e-5, abs=1e-7), t


@pytest.mark.parametrize("scale", [10.0, 0.5])  # a global norm above and below the limit
def test_gradients_are_clipped_before_the_learning_rate(scale):
    # Plain SGD (lr 0.5, no momentum, no decay) after clipping to norm 1: the update is
    # -lr * g * min(1, 1 / |g|). Clipping after the optimizer would clip -lr * g instead (norm
    # 5 -> 1 for |g| = 10); lr 1 could not tell the two orders apart.
    lr = 0.5
    config = OptimizerConfig(
        name="sgd", learning_rate=lr, schedule="constant", momentum=0.0, grad_clip_norm=1.0
    )
    tx = make_optimizer(config, total_steps=10)
    params = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
    direction = {"a": jnp.array([1.0, 2.0, 2.0]), "b": jnp.array([[0.0, 4.0], [0.0, 0.0]])}
    grads = jax.tree.map(lambda d: d * (scale / 5.0), direction)  # |direction| = 5
    with jax.numpy_dtype_promotion("standard"):  # as the trainer steps optax
        updates, _ = tx.update(grads, tx.init(params), params)
    factor = min(1.0, 1.0 / scale)
    for got, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(np.asarray(got), -lr * factor * np.asarray(g), rtol=1e-6)
    norm = math.sqrt(sum(float(jnp.sum(u**2)) for u in jax.tree.leaves(updates)))
    assert norm == pytest.approx(lr * min(scale, 1.0), rel=1e-6)
