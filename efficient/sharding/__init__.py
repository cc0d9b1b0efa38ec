"""Device meshes and the logical-axis table."""

from efficient.sharding.axes import (
    BATCH_AXES,
    LOGICAL_AXES,
    MESH_AXES,
    RULES,
    batch_sharding,
    logical_to_sharding,
    replicated,
)
from efficient.sharding.mesh import MeshConfig, make_mesh

__all__ = [
    "BATCH_AXES",
    "LOGICAL_AXES",
    "MESH_AXES",
    "RULES",
    "MeshConfig",
    "batch_sharding",
    "logical_to_sharding",
    "make_mesh",
    "replicated",
]
