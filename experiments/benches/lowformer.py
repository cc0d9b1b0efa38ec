"""LowFormer speed protocol: paper MACs vs measured throughput/latency of LowFormer B0-B3, DeiT.

LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones (Nottebaum et al.,
WACV 2025, arXiv:2409.03460), README speed table (throughput at batch 200, latency at batch 1).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from efficient.bench import (
    BenchResult,
    benchmark,
    environment_line,
    print_table,
    synthetic_variables,
)
from efficient.bench.report import device_label, inverted_pairs, spearman
from experiments.benches.spec import BenchArgs, BenchSpec, protocol, resolve_models

__all__ = ["MODELS", "SPEC", "ModelEntry", "run", "report"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One benchmarked model and the figures its paper reports.

    Attributes:
        label: Display name.
        build: image size -> Flax module in inference form (BatchNorm folded).
        paper_macs_m: MACs (millions) per 224 px image as published.
        paper_params_m: Parameters (millions) as published.
        paper_throughput: Published GPU throughput, img/s (None if not comparable).
        paper_latency_ms: Published GPU latency at batch 1, ms.
        source: Where the paper figures come from.
    """

    label: str
    build: Callable[[int], Any]
    paper_macs_m: float
    paper_params_m: float
    paper_throughput: float | None = None
    paper_latency_ms: float | None = None
    source: str


def _with_image_size(cfg: Any, image_size: int) -> Any:
    names = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, image_size=image_size) if "image_size" in names else cfg


def _lowformer(preset: str) -> Callable[[int], Any]:
    def build(image_size: int) -> Any:
        from efficient.models.lowformer import LowFormer, LowFormerConfig

        cfg = getattr(LowFormerConfig, preset)()
        # Timing does not depend on weight values, so the folded form is initialised directly.
        return LowFormer(_with_image_size(dataclasses.replace(cfg, fold_bn=True), image_size))

    return build


def _vit(preset: str) -> Callable[[int], Any]:
    def build(image_size: int) -> Any:
        from efficient.models.vit import ViT, ViTConfig

        return ViT(_with_image_size(getattr(ViTConfig, preset)(), image_size))

    return build


_LF = "LowFormer README (GPU thr. batch 200, lat. batch 1)"
_DEIT = "DeiT paper (Touvron et al. 2021, arXiv:2012.12877) Table 1: 1.3 / 4.6 GFLOPs (= GMACs)"

MODELS: dict[str, ModelEntry] = {
    "b0": ModelEntry(
        label="LowFormer-B0",
        build=_lowformer("b0"),
        paper_macs_m=944,
        paper_params_m=14.1,
        paper_throughput=5988,
        paper_latency_ms=0.30,
        source=_LF,
    ),
    "b1": ModelEntry(
        label="LowFormer-B1",
        build=_lowformer("b1"),
        paper_macs_m=1410,
        paper_params_m=17.9,
        paper_throughput=4237,
        paper_latency_ms=0.43,
        source=_LF,
    ),
    "b15": ModelEntry(
        label="LowFormer-B1.5",
        build=_lowformer("b15"),
        paper_macs_m=2573,
        paper_params_m=33.9,
        paper_throughput=2739,
        paper_latency_ms=0.66,
        source=_LF,
    ),
    "b3": ModelEntry(
        label="LowFormer-B3",
        build=_lowformer("b3"),
        paper_macs_m=6098,
        paper_params_m=57.1,
        paper_throughput=1162,
        paper_latency_ms=1.55,
        source=_LF,
    ),
    "deit_tiny": ModelEntry(
        label="DeiT-Tiny",
        build=_vit("deit_tiny"),
        paper_macs_m=1257,
        paper_params_m=5.7,
        source=_DEIT,
    ),
    "deit_small": ModelEntry(
        label="DeiT-Small",
        build=_vit("deit_small"),
        paper_macs_m=4608,
        paper_params_m=22.1,
        source=_DEIT,
    ),
}

# Protocol defaults: (warmup, repeats) per platform and measurement. The paper uses 10 warm-up
# passes and 400 (throughput) / 4000 (latency) iterations on a GPU. On 2 CPU cores one batch-200
# call takes ~10 s (B0) to ~60 s (B3), so the bench makes do with 3 calls per model to stay under
# ~15 min: no warm-up, because the one-time costs it absorbs (first touch of the temporary buffers,
# thread-pool start) are < 1% of such a call, and the median of 3 discards a slow first call.
_DEFAULTS = {
    ("cpu", "throughput"): (0, 3),
    ("cpu", "latency"): (2, 10),
    ("accelerator", "throughput"): (10, 50),
    ("accelerator", "latency"): (10, 200),
}
_BATCH, _LATENCY_BATCH, _IMAGE_SIZE = 200, 1, 224


def run(args: BenchArgs) -> Iterator[BenchResult]:
    """Yield a throughput and a latency result per model, under the paper's protocol.

    The paper's protocol in JAX: eval mode with BatchNorm folded into the convolutions, `jit`, fp32
    randn input at 224 px, warm-up, then the median of repeated calls (see
    `efficient.bench.benchmark`) for throughput at batch 200 and latency at batch 1. The paper's
    point, which `report` checks: MACs do not predict speed. Weights come from
    `efficient.bench.synthetic_variables` (the folded inference form; shapes from `jax.eval_shape`
    of `init`).

    Args:
        args: Bench options; unset ones take the paper's protocol (batch 200 / 1, 224 px).

    Yields:
        `BenchResult`s named "lowformer/<model>/<throughput|latency>".
    """
    size = args.image_size or _IMAGE_SIZE
    batch = args.batch or _BATCH
    latency_batch = _LATENCY_BATCH if args.latency_batch is None else args.latency_batch
    for key in resolve_models(SPEC, args.models):
        entry = MODELS[key]
        module = entry.build(size)
        image1 = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        init = jax.jit(lambda k, x, m=module: m.init(k, x, train=False))
        shapes = jax.eval_shape(init, jax.random.key(0), image1)
        params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.get("params", shapes)))
        variables = shapes if args.lower_only else synthetic_variables(shapes)

        def apply(v, x, m=module):
            return m.apply(v, x, train=False)

        meta = {
            "bench": "lowformer",
            "model": key,
            "label": entry.label,
            "image_size": size,
            "dtype": "float32",
            "fold_bn": True,
            "weights": "synthetic (LeCun-normal kernels)",
            "params_m": params / 1e6,
            "paper_macs_m": entry.paper_macs_m,
            "paper_params_m": entry.paper_params_m,
            "paper_throughput": entry.paper_throughput,
            "paper_latency_ms": entry.paper_latency_ms,
            "paper_source": entry.source,
            "matmul_precision": args.precision,
        }
        for mode, b in (("throughput", batch), ("latency", latency_batch)):
            if b <= 0:
                continue
            warmup, repeats = protocol(args, _DEFAULTS, mode)
            what = "compiling" if args.lower_only else f"{warmup} warm-up + {repeats} timed calls"
            print(f"lowformer/{key}/{mode}: batch {b}, {size} px, {what} ...", file=sys.stderr)
            yield benchmark(
                apply,
                variables,
                jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32),
                name=f"lowformer/{key}/{mode}",
                batch=b,
                warmup=warmup,
                repeats=repeats,
                lower_only=args.lower_only,
                extra={**meta, "mode": mode},
            )
        del variables


def _by_model(results: Sequence[BenchResult]) -> dict[str, dict[str, BenchResult]]:
    table: dict[str, dict[str, BenchResult]] = {}
    for r in results:
        if r.extra.get("bench") == "lowformer":
            table.setdefault(r.extra["model"], {})[r.extra["mode"]] = r
    return table


def _macs_m(r: BenchResult | None) -> float | None:
    return None if r is None or r.flops_per_item is None else r.flops_per_item / 2 / 1e6


def report(results: Sequence[BenchResult], args: BenchArgs) -> None:
    """Print the paper-style table and the MACs-vs-speed analysis; save a PNG next to `args.out`.

    Args:
        results: Results of `run` (others are ignored).
        args: The options of the run (for the figure path).
    """
    models = _by_model(results)
    if not models:
        return
    rows, points = [], []
    for key, by_mode in models.items():
        thr, lat = by_mode.get("throughput"), by_mode.get("latency")
        any_r = thr or lat
        e = any_r.extra
        xla_macs = _macs_m(thr) or _macs_m(lat)
        rows.append(
            [
                e["label"],
                e["params_m"],
                e["paper_macs_m"],
                xla_macs,
                thr and thr.items_per_s,
                lat and lat.median_ms,
                thr and thr.gflops_per_s,
                e["paper_throughput"],
                e["paper_latency_ms"],
            ]
        )
        if thr is not None and thr.items_per_s is not None:
            points.append((e["label"], e["paper_macs_m"], xla_macs, thr.items_per_s, key))
    first = next(iter(models.values()))
    any_r = first.get("throughput") or first.get("latency")
    thr_b = next((m["throughput"].batch for m in models.values() if "throughput" in m), None)
    lat_b = next((m["latency"].batch for m in models.values() if "latency" in m), None)
    print_table(
        [
            "model",
            "params M",
            "paper MACs M †",
            "XLA MACs M/img",
            f"img/s (b={thr_b})",
            f"latency ms (b={lat_b})",
            "GFLOP/s",
            "paper img/s †",
            "paper lat ms †",
        ],
        rows,
        title=(
            f"LowFormer speed protocol on {device_label(any_r)}: fp32, "
            f"{any_r.extra['image_size']} px, BN folded"
        ),
        caption=(
            "† the papers' numbers (LowFormer README, GPU; DeiT paper for DeiT MACs). "
            "XLA MACs = compiled FLOPs / 2 / batch (elementwise ops included).\n"
            + environment_line(any_r)
        ),
    )
    if len(points) >= 2:
        _print_analysis(points)
        path = _save_figure(points, any_r, pathlib.Path(args.out).with_suffix(".png"))
        if path is not None:
            print(f"figure: {path}")


def _print_analysis(points: list[tuple[str, float, float | None, float, str]]) -> None:
    labels = [p[0] for p in points]
    thr = [p[3] for p in points]
    paper = [p[1] for p in points]
    xla = [p[2] for p in points]
    print("MACs vs measured throughput (a perfect MACs -> speed predictor has Spearman rho = -1):")
    print(f"  Spearman rho(paper MACs, img/s) = {spearman(paper, thr):+.3f}")
    if all(x is not None for x in xla):
        print(f"  Spearman rho(XLA MACs,   img/s) = {spearman(xla, thr):+.3f}")
    pairs = inverted_pairs(labels, paper, thr)
    if not pairs:
        print("  no inverted pairs: every model with more MACs is slower on this device")
    for more, fewer in pairs:
        i, j = labels.index(more), labels.index(fewer)
        print(
            f"  inverted: {more} has more MACs ({paper[i]:,.0f}M vs {paper[j]:,.0f}M) "
            f"but is faster ({thr[i]:,.1f} vs {thr[j]:,.1f} img/s) than {fewer}"
        )


def _save_figure(points, result: BenchResult, path: pathlib.Path) -> pathlib.Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
        return None
    labels = [p[0] for p in points]
    macs = np.array([p[1] for p in points], dtype=float)
    thr = np.array([p[3] for p in points], dtype=float)
    keys = [p[4] for p in points]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, x, y in zip(labels, macs, thr, strict=True):
        color = "tab:blue" if label.startswith("LowFormer") else "tab:orange"
        ax0.scatter(x, y, color=color)
        ax0.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax0.set(xlabel="paper MACs per image (M)", ylabel="measured throughput (img/s)")
    ax0.set_title(f"{device_label(result)}, batch {result.batch}", fontsize=10)
    ax0.grid(alpha=0.3)
    # Throughput relative to the first model: comparable across devices, unlike absolute img/s.
    order = np.argsort(macs, kind="stable")
    ref = 0
    x = np.arange(len(points))
    ax1.bar(x - 0.2, thr[order] / thr[ref], width=0.4, label="measured")
    paper = [MODELS[k].paper_throughput if k in MODELS else None for k in keys]
    if paper[ref] is not None:
        rel = [np.nan if p is None else p / paper[ref] for p in paper]
        ax1.bar(x + 0.2, np.asarray(rel)[order], width=0.4, label="paper (GPU) †")
    ax1.set_xticks(x, [labels[i] for i in order], rotation=30, ha="right", fontsize=8)
    ax1.set(ylabel=f"throughput relative to {labels[ref]}")
    ax1.set_title("sorted by MACs", fontsize=10)
    ax1.legend(fontsize=8)
    fig.suptitle(f"MACs vs speed — {environment_line(result)}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


SPEC = BenchSpec(
    description=(
        "LowFormer B0/B1/B1.5/B3 + DeiT-Tiny/Small: fp32 224 px, BN folded, throughput at batch "
        "200 and latency at batch 1, vs paper MACs (arXiv:2409.03460)"
    ),
    run=run,
    models=tuple(MODELS),
    report=report,
)
