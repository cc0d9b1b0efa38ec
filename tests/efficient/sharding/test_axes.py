"""The logical-axis table: shardings from boxed parameters, and misspelt axis names refused."""

import flax.linen as nn
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from efficient.sharding import MeshConfig, logical_to_sharding, make_mesh


def _boxed(*names):
    return {"layer": {"kernel": nn.LogicallyPartitioned(jnp.zeros((4, 8)), names)}}


def test_known_axes_map_through_the_table_and_plain_leaves_replicate():
    mesh = make_mesh(MeshConfig())  # one device: every mesh axis of size 1
    tree = {**_boxed("embed", "mlp"), "plain": jnp.zeros(3)}
    shardings = logical_to_sharding(tree, mesh)
    assert shardings["layer"]["kernel"].spec == P("fsdp", "tensor")
    assert all(axis is None for axis in shardings["plain"].spec)


@pytest.mark.parametrize("names", [("embd", "mlp"), ("embed", "haeds")])
def test_an_unknown_logical_axis_is_named_not_silently_replicated(names):
    mesh = make_mesh(MeshConfig())
    with pytest.raises(
        ValueError, match=r"\['layer'\]\['kernel'\]: logical axes .*not in the rules"
    ):
        logical_to_sharding(_boxed(*names), mesh)
    # The same names in the user's own rules are fine.
    rules = ((names[0], None), (names[1], None))
    assert logical_to_sharding(_boxed(*names), mesh, rules)["layer"]["kernel"].spec == P(None, None)
