"""Fold inference-time BatchNorm into the preceding convolution (the LowFormer speed protocol).

LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones (arXiv:2409.03460;
its speed protocol times the TorchScript `optimize_for_inference` graph, which folds Conv+BN);
the algebra is that of Batch Normalization (arXiv:1502.03167 §3.1, inference as a linear map).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _fold_conv(conv: Mapping[str, Any], bn: Mapping[str, Any], stats: Mapping[str, Any], eps):
    kernel = conv["kernel"]
    # BN(conv(x) + b) = gamma (conv(x) + b - mean) / sqrt(var + eps) + beta
    #                 = conv_{kernel * a}(x) + (b - mean) a + beta,   a = gamma / sqrt(var + eps).
    # Computed in float32 at least (bf16-stored weights would otherwise lose the small a's).
    compute = jnp.float32 if jnp.finfo(kernel.dtype).bits <= 32 else kernel.dtype
    a = bn["scale"].astype(compute) * jax.lax.rsqrt(stats["var"].astype(compute) + eps)
    bias = conv.get("bias", jnp.zeros_like(stats["mean"])).astype(compute)
    shift = (bias - stats["mean"].astype(compute)) * a + bn["bias"].astype(compute)
    a_out = a.reshape((1,) * (kernel.ndim - 1) + a.shape)  # scales the output axis (last)
    return {
        "kernel": (kernel.astype(compute) * a_out).astype(kernel.dtype),
        "bias": shift.astype(kernel.dtype),
    }


def _fold(params: Mapping[str, Any], stats: Mapping[str, Any], eps: float, path: str):
    """Folded copy of `params`; every 'bn' entry of `stats` under this subtree is consumed."""
    out = {}
    if "bn" in params:
        if "conv" not in params or "bn" not in stats:
            raise ValueError(
                f"fold_batch_norm: '{path}/bn' needs a sibling 'conv' in params and running "
                f"statistics in batch_stats; found params keys {sorted(params)} and batch_stats "
                f"keys {sorted(stats)}."
            )
        out["conv"] = _fold_conv(params["conv"], params["bn"], stats["bn"], eps)
    for name, value in params.items():
        if name in ("bn",) or name in out:
            continue
        if isinstance(value, Mapping):
            out[name] = _fold(value, stats.get(name, {}), eps, f"{path}/{name}")
        else:
            out[name] = value
    unused = set(stats) - set(params)
    if unused:
        raise ValueError(f"fold_batch_norm: batch_stats at '{path}' has no params for {unused}.")
    return out


def fold_batch_norm(variables: Mapping[str, Any], *, epsilon: float = 1e-5) -> dict[str, Any]:
    """Fold every BatchNorm of a LowFormer (`fold_bn=False`) into the conv before it.

    `LowFormer(replace(config, fold_bn=True)).apply(fold_batch_norm(variables), x, train=False)`
    equals `LowFormer(config).apply(variables, x, train=False)` up to float rounding. Works for any
    model built from `efficient.nn.ConvBN` (a 'conv' with a sibling 'bn').

    Args:
      variables: {'params': ..., 'batch_stats': ...} of the unfolded model; parameters may be
        boxed with logical axis names (`nn.LogicallyPartitioned`).
      epsilon: the BatchNorm epsilon (1e-5 in `efficient.nn.BatchNorm`).

    Returns:
      {'params': ...} for the folded model, unboxed (call `jax.eval_shape` on the folded model's
      `init` for its logical axis names). Works under `jax.jit`.

    Raises:
      ValueError: if 'params' or 'batch_stats' is missing or the two trees do not match.
    """
    if "params" not in variables or "batch_stats" not in variables:
        raise ValueError(
            f"fold_batch_norm: variables must hold 'params' and 'batch_stats', got "
            f"{sorted(variables)}."
        )
    variables = nn.meta.unbox(variables)
    return {"params": _fold(variables["params"], variables["batch_stats"], epsilon, "")}
