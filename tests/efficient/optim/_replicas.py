"""Run an optimizer on N replicas: `jax.shard_map` over a 'replica' mesh axis, or `jax.vmap`."""

from collections.abc import Callable

import jax
import numpy as np
import optax
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def replica_mesh(num_replicas: int) -> jax.sharding.Mesh:
    return jax.make_mesh(
        (num_replicas,), ("replica",), axis_types=(AxisType.Explicit,),
        devices=jax.devices()[:num_replicas],
    )  # fmt: skip


def _gradient(params, data):
    del params
    return data  # the data are the gradients themselves


def _steps(tx, grad_fn, params, state, data, extra):
    """T optimizer steps on one replica: params/state unstacked, data [T, ...]."""

    def body(carry, batch):
        params, state = carry
        # Optax (Adam's bias correction) mixes Python floats with int32 counters, which the
        # tests' "strict" promotion rejects; the training loop wraps tx.update the same way.
        with jax.numpy_dtype_promotion("standard"):
            updates, state = tx.update(grad_fn(params, batch), state, params, **extra)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state, updates)

    _, trajectory = lax.scan(body, (params, state), data)
    return trajectory  # params [T, ...], state [T, ...], updates [T, ...]


def run(
    tx: optax.GradientTransformation,
    params,
    data,
    *,
    grad_fn: Callable = _gradient,
    state=None,
    runner: str = "shard_map",
    **extra,
):
    """Stacked params [N, ...] and data [T, N, ...] -> numpy (params, state, updates) [T, N, ...].

    Each replica gets its own init (`jax.vmap(tx.init)`) unless `state` is given; with
    `runner="shard_map"` every replica is one simulated device of a ('replica',) mesh.
    """
    num_replicas = jax.tree.leaves(params)[0].shape[0]
    if state is None:
        state = jax.vmap(tx.init)(params)
    if runner == "vmap":
        step = jax.vmap(
            lambda p, s, d: _steps(tx, grad_fn, p, s, d, extra),
            in_axes=(0, 0, 1), out_axes=1, axis_name="replica",
        )  # fmt: skip
        return jax.device_get(jax.jit(step)(params, state, data))
    mesh = replica_mesh(num_replicas)

    def per_replica(params, state, data):  # blocks [1, ...] and data [T, 1, ...]
        first = lambda t: jax.tree.map(lambda x: x[0], t)  # noqa: E731
        trajectory = _steps(tx, grad_fn, first(params), first(state),
                            jax.tree.map(lambda x: x[:, 0], data), extra)  # fmt: skip
        return jax.tree.map(lambda x: x[:, None], trajectory)

    step = jax.shard_map(
        per_replica, mesh=mesh, in_specs=(P("replica"), P("replica"), P(None, "replica")),
        out_specs=P(None, "replica"),
    )  # fmt: skip
    put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))  # noqa: E731
    out = jax.jit(step)(put(params, P("replica")), put(state, P("replica")),
                        put(data, P(None, "replica")))  # fmt: skip
    return jax.device_get(out)  # numpy: free of the mesh's sharding types


def compiled_step_text(tx: optax.GradientTransformation, params) -> str:
    """HLO text of one jitted, shard_mapped update over a ('replica',) mesh; params [N, ...]."""
    data = jax.tree.map(lambda x: x[None], params)  # one step: [1, N, ...]
    num_replicas = jax.tree.leaves(params)[0].shape[0]
    mesh = replica_mesh(num_replicas)
    state = jax.vmap(tx.init)(params)

    def per_replica(params, state, data):
        first = lambda t: jax.tree.map(lambda x: x[0], t)  # noqa: E731
        params, state, _ = _steps(tx, _gradient, first(params), first(state),
                                  jax.tree.map(lambda x: x[:, 0], data), {})  # fmt: skip
        return jax.tree.map(lambda x: x[:, None], (params, state))

    step = jax.shard_map(
        per_replica, mesh=mesh, in_specs=(P("replica"), P("replica"), P(None, "replica")),
        out_specs=P(None, "replica"),
    )  # fmt: skip
    put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))  # noqa: E731
    lowered = jax.jit(step).lower(put(params, P("replica")), put(state, P("replica")),
                                  put(data, P(None, "replica")))  # fmt: skip
    return lowered.compile().as_text()


def stacked(tree, num_replicas: int):
    """The same params on every replica: [N, ...] (the papers start all replicas identical)."""
    return jax.tree.map(lambda x: np.broadcast_to(x, (num_replicas, *x.shape)).copy(), tree)
