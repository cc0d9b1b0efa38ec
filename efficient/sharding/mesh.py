"""`MeshConfig` -> `jax.sharding.Mesh` with the axes replica / data / fsdp / tensor."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from efficient.sharding.axes import MESH_AXES


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Sizes of the four mesh axes; exactly one may be -1 (fill with the remaining devices).

    replica: NoLoCo/DiLoCo groups (each holds its own model copy); data: plain data parallel;
    fsdp: data parallel with parameters sharded; tensor: Megatron-style model parallel.
    """

    replica: int = 1
    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def shape(self, num_devices: int) -> tuple[int, ...]:
        sizes = [getattr(self, name) for name in MESH_AXES]
        for name, size in zip(MESH_AXES, sizes, strict=True):
            if size == 0 or size < -1:
                raise ValueError(f"MeshConfig.{name}={size}: sizes must be positive or -1 (fill).")
        if sizes.count(-1) > 1:
            raise ValueError(f"{self}: at most one axis may be -1.")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(
                    f"{self}: {num_devices} devices are not divisible by the fixed "
                    f"axes' product {known}."
                )
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"{self}: axes multiply to {math.prod(sizes)}, but {num_devices} "
                "devices are in use."
            )
        return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    """Build the mesh (all axes in Auto mode) over `devices` (default: every device)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = config.shape(len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == jax.device_count():
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)
