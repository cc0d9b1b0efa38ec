"""Weight decay: which parameters it reaches, against a hand-written AdamW step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.train import OptimizerConfig, make_optimizer
from efficient.train.optimizer import decay_mask

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
def test_bad_exclude_is_refused(no_typecheck, bad):
    with pytest.raises(ValueError, match="weight_decay_exclude="):
        OptimizerConfig(weight_decay_exclude=bad)
