"""Compile the kernels ahead of time for a TPU that this machine does not have.

    python -m pallas_kernels.aot [--topology v5e:1x1 v6e:1x1 ...] [--quick] [--models] [--out PATH]

With libtpu importable, JAX compiles for a TPU topology description without a TPU attached, and
Mosaic compiles every Pallas kernel on the way. That catches what lowering alone cannot: scoped
VMEM overflows, layouts Mosaic cannot prove aligned, ops it rejects. Nothing runs, so numbers
and speed on a TPU stay unmeasured (`python -m pallas_kernels.check` and the benches, on one).

libtpu is not a dependency (640 MB): `make tpu-aot` installs it into `.venv/libtpu/` and runs this;
by hand, `pip install --target DIR "libtpu==<the version jax[tpu] pins>"` and `PYTHONPATH=DIR`.

Cases: `fft_conv` forward and forward + backward at the paper's H = 768 (B = 8: the largest
backward row block of the default tilings; more rows only lengthen the grid), f32 ungated and
bf16 gated, N = 256 ... 32768; `group_rational` forward and forward + backward at KAT's
[128, 197, D], D = 192, 768, 3072, f32 and bf16; with `--models`, a KAT train step and Hyena ones
at T = 1K and 16K (`implementation="auto"`, so the path a TPU user gets). Exit status 1 if any
case fails to compile.
"""

import argparse
import functools
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import optax

from pallas_kernels import platform
from pallas_kernels._bench import add_result, environment, exit_status
from pallas_kernels.fft_conv import fft_conv
from pallas_kernels.rational import group_rational

__all__ = ["cases", "compile_case", "libtpu_requirement", "main"]


def libtpu_requirement() -> str:
    """The libtpu pin of this jax's `tpu` extra, e.g. "libtpu==0.0.50.*"."""
    for requirement in importlib.metadata.requires("jax") or ():
        if requirement.startswith("libtpu") and 'extra == "tpu"' in requirement:
            return re.sub(r"\s", "", requirement.split(";")[0])
    return "libtpu"


def _spec(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sharding)


def _fft_conv_case(n: int, dtype: str, gated: bool, backward: bool, sharding):
    batch, heads, length = 8, 768, n // 2
    u = _spec((batch, heads, length), dtype, sharding)
    k = _spec((heads, length), "float32", sharding)
    gate = u if gated else None

    def forward(u, k, pre, post):
        return fft_conv(u, k, pregate=pre, postgate=post, implementation="pallas")

    f = forward
    if backward:
        argnums = (0, 1, 2, 3) if gated else (0, 1)
        f = jax.grad(lambda *a: forward(*a).astype(jnp.float32).sum(), argnums=argnums)
    return f, (u, k, gate, gate)


def _rational_case(width: int, dtype: str, backward: bool, sharding):
    x = _spec((128, 197, width), dtype, sharding)
    numerator, denominator = _spec((1, 6), "float32", sharding), _spec((8, 4), "float32", sharding)

    def forward(x, a, b):
        return group_rational(x, a, b, implementation="pallas")

    f = forward
    if backward:
        f = jax.grad(lambda *a: forward(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
    return f, (x, numerator, denominator)


def _train_step_case(model_name: str, sharding, seq_len: int = 1024):
    from efficient.models.hyena import Hyena, HyenaConfig
    from efficient.models.kat import KAT, KATConfig

    if model_name == "kat":
        model = KAT(KATConfig.fashion_mnist())
        inputs, labels = (128, 28, 28, 1), (128,)
        apply_kwargs = {"train": False}
    else:
        model = Hyena(HyenaConfig.kjv(max_len=seq_len))
        inputs = labels = (max(1, 8192 // seq_len), seq_len)
        apply_kwargs = {}
    x_dtype = "float32" if model_name == "kat" else "int32"
    x = jnp.zeros(inputs, x_dtype)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **apply_kwargs))
    params = jax.tree.map(lambda a: _spec(a.shape, a.dtype, sharding), params)

    def loss(params, x, y):
        logits = model.apply(params, x, **apply_kwargs).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    args = (params, _spec(inputs, x_dtype, sharding), _spec(labels, "int32", sharding))
    return jax.grad(loss), args


def cases(quick: bool, models: bool) -> Iterator[tuple[str, Callable]]:
    """(name, build) pairs; build(sharding) -> (function, abstract arguments)."""
    sizes = (1024, 4096) if quick else (256, 1024, 4096, 16384, 32768)
    kinds = (("bfloat16", True),) if quick else (("float32", False), ("bfloat16", True))
    for n in sizes:
        for dtype, gated in kinds:
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                name = f"fft_conv N={n} {dtype}{' gated' if gated else ''} {mode}"
                yield name, functools.partial(_fft_conv_case, n, dtype, gated, backward)
    widths = (768,) if quick else (192, 768, 3072)
    for width in widths:
        for dtype in ("bfloat16",) if quick else ("float32", "bfloat16"):
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                name = f"group_rational D={width} {dtype} {mode}"
                yield name, functools.partial(_rational_case, width, dtype, backward)
    if models:
        yield "kat/fashion_mnist train step", functools.partial(_train_step_case, "kat")
        for seq_len in (1024, 16384):  # the paper's long-sequence claim reaches 16K
            name = f"hyena/kjv train step (T={seq_len})"
            yield name, functools.partial(_train_step_case, "hyena", seq_len=seq_len)


def compile_case(build: Callable, sharding) -> dict:
    """Trace for TPU and compile; {"ok", "seconds", "error"?}."""
    start = time.perf_counter()
    try:
        with platform.compiling_for("tpu"):
            f, args = build(sharding)
            jax.jit(f).lower(*args).compile()
    except Exception as e:  # every case is reported, also when one fails
        message = " ".join(str(e).split())
        return {"ok": False, "seconds": time.perf_counter() - start, "error": message[:1500]}
    return {"ok": True, "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    """CLI entry point: one line per case, JSON after every case, 1 on any failure."""
    parser = argparse.ArgumentParser(
        prog="python -m pallas_kernels.aot", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--topology", nargs="+", default=["v5e:1x1"],
        help="TPU topologies (e.g. v4:2x2x1 v5e:1x1 v5p:2x2x1 v6e:1x1); the first chip compiles",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="N = 1K, 4K and D = 768, bf16 only")
    parser.add_argument("--models", action="store_true", help="also KAT and Hyena train steps")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench_results/aot.json"))
    args = parser.parse_args(argv)
    if importlib.util.find_spec("libtpu") is None:
        print(
            "libtpu is not importable: `make tpu-aot`, or `pip install --target DIR "
            f'"{libtpu_requirement()}"` and PYTHONPATH=DIR',
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no cloud metadata server to ask
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip to guard: no lockfile
    from jax.experimental import topologies

    env = environment()
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for topology in args.topology:
        try:
            device = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices[0]
        except Exception as e:
            parser.error(f"--topology {topology!r}: {' '.join(str(e).split())[:300]}")
        sharding = jax.sharding.SingleDeviceSharding(device)
        for name, build in cases(args.quick, args.models):
            record = {"topology": topology, "device_kind": device.device_kind, "case": name}
            record |= compile_case(build, sharding)
            status = "ok  " if record["ok"] else "FAIL"
            detail = "" if record["ok"] else f": {record['error'][:300]}"
            print(f"{status} {topology} {name} ({record['seconds']:.1f} s){detail}", flush=True)
            add_result(args.out, env, results, record)
    return exit_status(results, args.out, "compiled")


if __name__ == "__main__":
    sys.exit(main())
