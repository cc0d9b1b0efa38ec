"""The check every model's sharding test makes: each variable names its axes from LOGICAL_AXES."""

import flax.linen as nn
import jax

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
