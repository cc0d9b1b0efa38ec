"""Checks every model's tests make: logical axis names on each variable, the Flax NNX bridge
against the Linen module, and (language models) cached decoding and generation against full
forwards."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import bridge

from efficient.models.transformer import generate, init_cache
from efficient.sharding import LOGICAL_AXES


def assert_logically_annotated(abstract) -> None:
    """Every leaf of `abstract` (`jax.eval_shape` of `model.init`) is an `nn.LogicallyPartitioned`
    box with one name per dimension, each None or a key of `LOGICAL_AXES`, and no mesh axis twice.
    """
    leaves = jax.tree_util.tree_leaves_with_path(
        abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )
    assert leaves
    bare = [
        jax.tree_util.keystr(p) for p, x in leaves if not isinstance(x, nn.LogicallyPartitioned)
    ]
    assert not bare, f"variables without logical axis names: {bare}"
    for path, leaf in leaves:
        where = f"{jax.tree_util.keystr(path)}: {leaf.names}"
        assert len(leaf.names) == leaf.value.ndim, where
        assert set(leaf.names) - {None} <= set(LOGICAL_AXES), where
        mesh_axes = []
        for name in leaf.names:
            axes = LOGICAL_AXES.get(name)
            mesh_axes += [axes] if isinstance(axes, str) else list(axes or ())
        assert len(mesh_axes) == len(set(mesh_axes)), where  # a mesh axis splits one dim only


def assert_nnx_bridge_matches_linen(module: nn.Module, *args, **kwargs) -> dict:
    """`bridge.ToNNX(module)` initialised and called under `nnx.jit` gives the Linen module's
    output (1e-6) with the same variables; returns those variables (params, and batch_stats
    where the model has them)."""
    # Single-device NNX: no mesh, so the logical axis names stay metadata (no eager sharding).
    # threefry_partitionable(False) only makes the initialiser RNG ops compile faster on CPU.
    with nnx.use_eager_sharding(False), jax.threefry_partitionable(False):
        model = bridge.ToNNX(module, rngs=nnx.Rngs(0))
        nnx.jit(lambda m, *a: bridge.lazy_init(m, *a, **kwargs))(model, *args)
    got = nnx.jit(lambda m, *a: m(*a, **kwargs))(model, *args)
    variables = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    if stats := nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)):
        variables["batch_stats"] = stats
    want = jax.jit(lambda v: module.apply(v, *args, **kwargs))(variables)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    return variables


def assert_cached_decode_matches_full_forward(
    model, params, tokens, *, prefill: int, cache_len: int | None = None
) -> None:
    """Prefilling `prefill` tokens into a cache of `cache_len` slots (default: a few more than
    the tokens) and then decoding one token per call gives the full forward's logits at every
    position (1e-5)."""
    B, T = tokens.shape
    full = jax.jit(lambda p: model.apply({"params": p}, tokens))(params)
    step = jax.jit(
        lambda p, c, t: model.apply({"params": p, "cache": c}, t, decode=True, mutable=["cache"])
    )
    cache = init_cache(model, B, cache_len or T + 5)
    outs = []
    for lo, hi in [(0, prefill), *[(t, t + 1) for t in range(prefill, T)]]:
        logits, mutated = step(params, cache, tokens[:, lo:hi])
        cache = mutated["cache"]
        outs.append(logits)
    np.testing.assert_allclose(
        np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=1e-5, atol=1e-5
    )


def assert_greedy_generation_matches_argmax_loop(model, params, prompt, new_tokens: int) -> None:
    """`generate` at temperature 0 gives the tokens of an uncached argmax loop over full forwards.

    The loop runs one fixed-length forward: the model is causal, so the zeros after the current
    length do not change the logits at its last token (and there is one compile, not one a
    length)."""
    B, P = prompt.shape
    got = generate(model, params, prompt, jax.random.key(0), max_new_tokens=new_tokens)
    forward = jax.jit(lambda t: model.apply({"params": params}, t))
    want = jnp.zeros((B, P + new_tokens), jnp.int32).at[:, :P].set(prompt)
    for n in range(P, P + new_tokens):
        want = want.at[:, n].set(jnp.argmax(forward(want)[:, n - 1], -1).astype(jnp.int32))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
