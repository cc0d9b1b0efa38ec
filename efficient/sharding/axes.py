"""The one table from logical axis names to mesh axes, and the shardings derived from it.

Every parameter in `efficient` names its dimensions with logical axes
(`nn.with_logical_partitioning`) drawn from `LOGICAL_AXES` below; nothing else in the code base
names a mesh axis for a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("replica", "data", "fsdp", "tensor")
# Mesh axes that split the batch: every data-parallel flavour shards examples.
BATCH_AXES = ("replica", "data", "fsdp")

# logical axis -> mesh axis (or None: replicated). Each entry says why.
LOGICAL_AXES: dict[str, str | tuple[str, ...] | None] = {
    "batch": BATCH_AXES,  # activations: examples split over every data-parallel axis
    "embed": "fsdp",  # model width: ZeRO-3 style parameter sharding
    "mlp": "tensor",  # FFN hidden: Megatron column/row split
    "heads": "tensor",  # attention heads: Megatron split
    "kv_heads": "tensor",
    "head_dim": None,
    "vocab": "tensor",
    "conv_height": None,  # spatial kernel taps are tiny; never split
    "conv_width": None,
    "conv_in": "fsdp",  # conv kernels [kh, kw, C_in, C_out] follow the dense rule: in->fsdp,
    "conv_out": "tensor",  # out->tensor
    "norm": None,  # scales/biases of norms: small, replicated
    "classes": None,  # classifier output: small, replicated
    "length": None,
    "seq": None,
}

RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = tuple(LOGICAL_AXES.items())


def _fit(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drop mesh axes from dimensions they do not divide (replicate those dimensions instead).

    Odd widths (e.g. LowFormer's 20-channel stem, 10 classes) cannot be split evenly over a mesh
    axis; replicating them is correct and costs little, while an uneven split would fail to compile.
    """
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        if axes is None:
            fitted.append(None)
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        kept = []
        size = 1
        for name in names:
            if dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        fitted.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*fitted)


def logical_to_sharding(tree, mesh: Mesh, rules=RULES):
    """Shardings for a pytree whose leaves may be `nn.LogicallyPartitioned` boxes.

    Args:
      tree: a pytree of arrays or `jax.ShapeDtypeStruct`s, possibly boxed with logical axis names
        (as returned by `jax.eval_shape(model.init, ...)`).
      mesh: the device mesh.
      rules: logical axis -> mesh axes; defaults to the table in this module.

    Returns:
      A pytree of `NamedSharding` with the structure of the unboxed tree. Unboxed leaves are
      replicated; mesh axes that do not divide a dimension are dropped for that dimension.

    Raises:
      ValueError: a leaf names a logical axis that `rules` lacks (flax would replicate that
        dimension silently: a misspelt axis name would quietly turn off its sharding).
    """
    known = {name for name, _ in rules}

    def one(path, leaf):
        if isinstance(leaf, nn.LogicallyPartitioned):
            unknown = [name for name in leaf.names if name is not None and name not in known]
            if unknown:
                raise ValueError(
                    f"{jax.tree_util.keystr(path)}: logical axes {leaf.names} name "
                    f"{', '.join(map(repr, unknown))}, not in the rules: one of {sorted(known)}."
                )
            spec = nn.logical_to_mesh_axes(leaf.names, rules)
            value = leaf.value
        else:
            spec, value = P(), leaf
        return NamedSharding(mesh, _fit(spec, np.shape(value), mesh))

    return jax.tree_util.tree_map_with_path(
        one, tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: the leading (example) dimension over every data-parallel axis."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
