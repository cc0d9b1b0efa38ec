"""Tracing for another platform, and the kernels compiled for a TPU without one (libtpu).

The compile test runs `python -m pallas_kernels.aot --quick` with `.venv/libtpu` (`make tpu-aot`
installs it; `make test` too) on the path: Mosaic compiles the kernels, so a kernel that overflows
the TPU's scoped VMEM or that Mosaic rejects fails here, on a CPU-only machine.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import platform
from pallas_kernels.fft_conv import api as fft_api
from pallas_kernels.fft_conv import kernel as fft_kernel
from pallas_kernels.rational import api as rational_api
from pallas_kernels.rational import group_rational

ROOT = pathlib.Path(__file__).parents[2]
LIBTPU = ROOT / ".venv" / "libtpu"


def test_compiling_for_overrides_the_platform():
    assert platform.current() == "cpu"
    with platform.compiling_for("tpu"):
        assert platform.current() == "tpu"
        with platform.compiling_for("gpu"):
            assert platform.current() == "gpu"
        assert platform.current() == "tpu"
        assert fft_api.resolve_implementation("auto", 1024) == "pallas"
        assert rational_api.resolve_implementation("auto") == "pallas"
    assert platform.current() == "cpu"
    assert fft_api.resolve_implementation("auto", 1024) == "jnp_fft"
    with (
        pytest.raises(ValueError, match="platform='cuda': one of cpu, gpu, tpu"),
        platform.compiling_for("cuda"),
    ):
        pass


def test_compiling_for_retraces_cached_functions():
    """A function jax has cached for this platform is traced anew inside and after the block."""
    f = jax.jit(lambda x: x + (1 if platform.current() == "gpu" else 0))
    assert int(f(0)) == 0
    with platform.compiling_for("gpu"):
        assert int(f(0)) == 1
    assert int(f(0)) == 0


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_a_sharded_program_with_the_kernels_exports_under_an_explicit_mesh(axis_type):
    """`jax.export` for TPU of a gradient through the kernels on a 4 x 2 mesh: under Explicit axes
    they run in a shard_map, which exports; under Auto axes their custom_partitioning rule is a
    host callback, which jax cannot serialize (README, Sharding)."""
    kind = getattr(jax.sharding.AxisType, axis_type)
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(kind,) * 2)

    def typed(shape, *spec):
        return jax.ShapeDtypeStruct(
            shape, jnp.float32, sharding=jax.NamedSharding(mesh, jax.P(*spec))
        )

    x, num, den = typed((8, 6, 256), "data", None, "tensor"), typed((1, 6)), typed((8, 4))

    def grad(x, num, den):
        return jax.grad(lambda x: group_rational(x, num, den, implementation="pallas").sum())(x)

    with jax.set_mesh(mesh), platform.compiling_for("tpu"):
        export = jax.export.export(jax.jit(grad), platforms=["tpu"])
        if axis_type == "Auto":
            with pytest.raises(Exception, match="host_callbacks"):
                export(x, num, den)
        else:
            assert "tpu_custom_call" in export(x, num, den).mlir_module()


def test_tpu_default_block_sizes_fit_the_scoped_vmem_rule():
    for n in (256, 1024, 4096, 16384, 32768):
        with platform.compiling_for("tpu"):
            blocks = fft_kernel.default_block_sizes(n)
        assert blocks.max_radix == 256 and blocks.block_b * blocks.block_h * n <= 2**17
        assert fft_kernel.default_block_sizes(n) == fft_kernel.BlockSizes()  # CPU: unchanged


def _run_aot(tmp_path, env_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (env_path, str(ROOT)) if p))
    out = tmp_path / "aot.json"
    command = [sys.executable, "-m", "pallas_kernels.aot", "--quick", "--out", str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    return result, out


@pytest.mark.slow
def test_kernels_compile_for_tpu(tmp_path):
    if not LIBTPU.is_dir() and importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed (make tpu-aot installs it into .venv/libtpu)")
    result, out = _run_aot(tmp_path, str(LIBTPU) if LIBTPU.is_dir() else "")
    rows = json.loads(out.read_text())["results"]
    failed = [r for r in rows if not r["ok"]]
    assert result.returncode == 0 and not failed, (result.stdout[-3000:], failed)
    assert len(rows) == 6 and {r["device_kind"] for r in rows} == {"TPU v5 lite"}, rows


# The GPU tiling that overflowed v5e's 16 MiB scoped VMEM (36 MiB): the check must report it.
_OVERFLOW = """
import json, os, sys
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
import jax, jax.numpy as jnp
from jax.experimental import topologies
from pallas_kernels import aot
from pallas_kernels.fft_conv import BlockSizes, fft_conv
device = topologies.get_topology_desc(platform="tpu", topology_name="v5e:1x1").devices[0]
sharding = jax.sharding.SingleDeviceSharding(device)
def build(sharding, blocks):
    u = jax.ShapeDtypeStruct((2, 256, 2048), jnp.float32, sharding=sharding)
    k = jax.ShapeDtypeStruct((256, 2048), jnp.float32, sharding=sharding)
    loss = lambda u, k: fft_conv(u, k, implementation="pallas", block_sizes=blocks).sum()
    return jax.grad(loss, argnums=(0, 1)), (u, k)
rows = [aot.compile_case(lambda s, b=b: build(s, b), sharding)
        for b in (BlockSizes(block_h=16, block_b=2), BlockSizes(block_h=4, block_b=2))]
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_a_kernel_that_does_not_fit_is_reported():
    too_big, fits = _compile_with_libtpu(_OVERFLOW)
    assert not too_big["ok"] and "vmem" in too_big["error"].lower(), too_big
    assert fits["ok"], fits  # the same op, 4 heads per program: compiles


def test_aot_without_libtpu_says_how_to_get_it(tmp_path):
    if importlib.util.find_spec("libtpu") is not None:
        pytest.skip("libtpu is importable here")
    result, _ = _run_aot(tmp_path, "")
    assert result.returncode == 2 and "libtpu is not importable" in result.stderr
    assert "libtpu==" in result.stderr


# The kernels inside a user's `jax.shard_map` that checks varying axes (its default): each
# pallas_call must declare how its results vary (`partitioning.manual_type`), the coefficient and
# filter gradients are summed over the axes their replicated primals do not vary over.
_SHARD_MAP = """
import json, os
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P
from pallas_kernels import aot
from pallas_kernels.fft_conv import fft_conv
from pallas_kernels.rational import group_rational
devices = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2").devices
mesh = jax.sharding.Mesh(np.array(devices).reshape(2, 2), ("data", "tensor"))
def build(op, shapes, specs):
    inner = jax.shard_map(op, mesh=mesh, in_specs=tuple(specs), out_specs=specs[0])
    args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=NamedSharding(mesh, p))
            for s, p in zip(shapes, specs)]
    loss = lambda *a: jnp.sum(inner(*a) ** 2)
    return jax.value_and_grad(loss, argnums=tuple(range(len(args)))), args
rational = lambda x, n, d: group_rational(x, n, d, implementation="pallas")
conv = lambda u, k: fft_conv(u, k, implementation="pallas")
rows = [
    aot.compile_case(lambda _: build(rational, [(16, 197, 768), (1, 6), (8, 4)],
                                     [P("data", None, "tensor"), P(), P()]), None),
    aot.compile_case(lambda _: build(conv, [(8, 256, 1024), (256, 1024)],
                                     [P("data", "tensor"), P("tensor")]), None),
]
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_kernels_compile_for_tpu_inside_a_checked_shard_map():
    rows = _compile_with_libtpu(_SHARD_MAP)
    assert all(row["ok"] for row in rows), rows


def _compile_with_libtpu(script: str):
    """Run a script that prints its `aot.compile_case` rows as JSON, with libtpu on the path."""
    if not LIBTPU.is_dir() and importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu not installed (make tpu-aot installs it into .venv/libtpu)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(LIBTPU), str(ROOT)) if p))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
