"""Pure train and eval step functions (jitted and sharded by the loop)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from efficient.train.state import TrainState
from efficient.train.task import Batch, Task


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def make_train_step(
    task: Task, tx: optax.GradientTransformation
) -> Callable[[TrainState, Batch], TrainState]:
    """One optimizer step: forward, backward, update, metric accumulation.

    An update whose loss or gradients are not finite is dropped (the state keeps its old
    params, optimizer and model state) and recorded in `nonfinite_count` / `first_nonfinite_step`;
    the loop decides whether to stop.
    """

    def train_step(state: TrainState, batch: Batch) -> TrainState:
        mutable = list(state.model_state)

        def loss_and_aux(params):
            variables = {"params": params, **state.model_state}
            rngs = {"dropout": state.step_key()}
            inputs = task.inputs(batch)
            if mutable:
                outputs, new_model_state = task.model.apply(
                    variables, *inputs, train=True, rngs=rngs, mutable=mutable
                )
            else:
                outputs = task.model.apply(variables, *inputs, train=True, rngs=rngs)
                new_model_state = {}
            loss, metrics = task.loss_fn(outputs, batch)
            return loss, (metrics, new_model_state)

        grad_fn = jax.value_and_grad(loss_and_aux, has_aux=True)
        (loss, (metrics, new_model_state)), grads = grad_fn(state.params)
        # Optax mixes Python floats with int32 counters (e.g. Adam's bias correction), which
        # jax's "strict" promotion mode (used by our tests) rejects; optax is not ours to fix.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        finite = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        metrics = {k: v.astype(jnp.float32) for k, v in metrics.items()}
        return state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            model_state=keep(dict(new_model_state), state.model_state),
            metric_sums=keep(jax.tree.map(jnp.add, state.metric_sums, metrics), state.metric_sums),
            metric_count=state.metric_count + finite.astype(jnp.float32),
            nonfinite_count=state.nonfinite_count + (~finite).astype(jnp.int32),
            first_nonfinite_step=jnp.where(
                (~finite) & (state.first_nonfinite_step < 0),
                state.step + 1,  # steps are counted from 1 in logs: step t is the t-th update
                state.first_nonfinite_step,
            ),
        )

    return train_step


def make_eval_step(task: Task) -> Callable[[TrainState, Batch], tuple[dict, jax.Array]]:
    """Metrics of one eval batch and its weight (number of real, unpadded examples)."""

    def eval_step(state: TrainState, batch: Batch):
        outputs = task.model.apply(state.variables(), *task.inputs(batch), train=False)
        _, metrics = task.loss_fn(outputs, batch)
        mask = batch.get("mask")
        weight = (
            jnp.sum(mask.astype(jnp.float32))
            if mask is not None
            else jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)
        )
        return {k: v.astype(jnp.float32) for k, v in metrics.items()}, weight

    return eval_step
