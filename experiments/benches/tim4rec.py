"""TiM4Rec vs SSD4Rec vs SASRec as sequences grow: train-step time and memory at T = 50 .. 4000.

TiM4Rec (Fan et al., arXiv:2409.16182 §5.4, Table 6): the time-aware mask adds little to SSD
(83.6 s vs 74.4 s per ML-1M epoch on an RTX 3090) and both train faster than SASRec (207.4 s);
the claim is that time-awareness adds O(T) to SSD's linear cost, against attention's O(T^2).
Issue 6's goals: TiM4Rec no slower than SASRec at T = 200 and >= 2x faster at T = 1000; the time
branch costs <= 15% over SSD4Rec; linear growth in T. The reference's time branch holds two L x L
position MLPs, so it is quadratic in T; "tim4rec_nomlp" (`position_mlp=False`, not the reference)
is the same model without them, timed beside it to show what the O(T) claim would cost.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from efficient.bench import (
    BenchCase,
    BenchResult,
    environment_line,
    print_table,
    synthetic_variables,
)
from efficient.bench.report import device_label, ratio_cell
from efficient.checks import check_field_types, validates_arguments
from experiments.benches.spec import (
    BenchArgs,
    BenchSpec,
    SideBySide,
    group_models,
    platform,
    protocol,
    time_side_by_side,
    train_step,
)

__all__ = [
    "FAMILIES",
    "LENGTHS",
    "MODELS",
    "POSITIONS",
    "SPEC",
    "ModelEntry",
    "batch_size",
    "report",
    "run",
    "scaling_figure",
]

Family = Literal["tim4rec", "tim4rec_nomlp", "ssd4rec", "sasrec"]
FAMILIES: tuple[Family, ...] = ("tim4rec", "tim4rec_nomlp", "ssd4rec", "sasrec")
LENGTHS = (50, 200, 1000, 4000)
# ML-100K's item vocabulary after the 5-core filter: the scoring matmul [B, D] x [D, items + 1]
# and the softmax over items are part of every step, as in training.
NUM_ITEMS = 1349
# Positions per step, B x T, the same at every length (an epoch of a fixed data set, the paper's
# measure, is a fixed number of positions too); `--batch` fixes B instead.
# - CPU: 4,000, i.e. B = 80, 20, 4, 1 sequences at T = 50, 200, 1000, 4000 (the whole bench takes
#   ~5 min on 2 CPU cores). A fixed B = 64 would need 24 GiB (T = 1000) and 369 GiB (T = 4000)
#   for SASRec's train step (XLA's estimate: B x 8 heads x T x T scores, several copies), so
#   attention could not be timed at the lengths the claim is about.
# - GPU / TPU: the paper's batch of 2,048 sequences at ML-100K's length 50, 102,400 positions
#   (B = 2048, 512, 102, 25). At 4,000 an H200 was launch-bound (2-7 ms per step whatever the
#   model, README), far from the regime of the paper's per-epoch times (batch 2048, RTX 3090).
#   Where a step exceeds the device's free memory (SASRec at T = 4000) the row is compiled only.
POSITIONS = {"cpu": 4_000, "accelerator": 2_048 * 50}


def batch_size(seq_len: int) -> int:
    """B at length T on this platform: `POSITIONS` // T sequences, at least one."""
    return max(1, POSITIONS[platform()] // seq_len)


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One benchmarked model at one sequence length.

    Attributes:
        family: "tim4rec" (`TiM4RecConfig.ml100k`), "tim4rec_nomlp" (the same with
            `position_mlp=False`), "ssd4rec" (time branch off) or "sasrec"
            (`SASRecConfig.ml100k`): D 64, 2 layers each.
        seq_len: T (the models' `max_len`; every position holds an item).
    """

    family: Family
    seq_len: int

    def __post_init__(self):
        check_field_types(self)


MODELS: dict[str, ModelEntry] = {
    f"{family}_{T}": ModelEntry(family=family, seq_len=T) for T in LENGTHS for family in FAMILIES
}


def _model(entry: ModelEntry) -> Any:
    if entry.family == "sasrec":
        from efficient.models.sasrec import SASRec, SASRecConfig

        return SASRec(SASRecConfig.ml100k(num_items=NUM_ITEMS, max_len=entry.seq_len))
    from efficient.models.tim4rec import TiM4Rec, TiM4RecConfig

    config = TiM4RecConfig.ml100k(
        num_items=NUM_ITEMS,
        max_len=entry.seq_len,
        time_aware=entry.family != "ssd4rec",
        position_mlp=entry.family == "tim4rec",
    )
    return TiM4Rec(config)


def _inputs(B: int, T: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Full-length sequences of random items, non-decreasing times in [0, 1], random targets."""
    rng = np.random.default_rng(0)
    items = rng.integers(1, NUM_ITEMS + 1, size=(B, T), dtype=np.int32)
    gaps = rng.exponential(size=(B, T))
    times = np.cumsum(gaps, 1) / np.sum(gaps, 1, keepdims=True)
    targets = rng.integers(1, NUM_ITEMS + 1, size=(B,), dtype=np.int32)
    return (
        jnp.asarray(items),
        jnp.asarray(times, jnp.float32),
        jnp.full((B,), T, jnp.int32),
        jnp.asarray(targets),
    )


def _train_step(model: Any, optimizer: Any):
    import optax

    def loss(params, items, timestamps, lengths, targets, key):
        scores = model.apply(
            {"params": params}, items, timestamps, lengths, train=True, rngs={"dropout": key}
        )  # [B, items + 1]
        ce = optax.softmax_cross_entropy_with_integer_labels(scores, targets)  # [B]
        return jnp.mean(ce)

    return train_step(loss, optimizer)


def run(args: BenchArgs) -> Iterator[BenchResult]:
    """Yield one train-step result per model entry, the models of one length timed side by side.

    Train step: softmax cross-entropy of the target over all items (the training loss), fp32,
    `jax.value_and_grad`, Adam at lr 1e-3 (the paper's optimizer), dropout on, jitted; synthetic
    LeCun-normal weights; B full-length sequences, B x T = `POSITIONS` (4,000 on CPU, 102,400
    on a GPU or TPU; `--batch` fixes B for every length). TiM4Rec, its no-MLP ablation and
    SSD4Rec of one length are timed in interleaved rounds (`benchmark_interleaved`: one step of
    each per round, shuffled), so the time branch's cost over SSD4Rec is a paired per-round
    ratio (`paired_ratio`) that machine drift cancels out of; SASRec, several times slower from
    T = 200 on, is timed after them on its own (sasrec/tim4rec is a ratio of medians).
    Where XLA's buffer estimate exceeds 80% of the free memory (the host's on CPU, the device's
    on a GPU or TPU) the row is compiled only (FLOPs and memory; "skipped" says why). Items
    are sequence positions, so items/s is positions/s. `--models` picks entries (e.g.
    `tim4rec_1000,sasrec_1000`).

    Yields:
        `BenchResult`s named "tim4rec/<family>_<T>/train", a group's rows once all are timed.
    """
    import flax.linen as nn

    from efficient.train import OptimizerConfig, make_optimizer

    optimizer = make_optimizer(
        OptimizerConfig(name="adamw", learning_rate=1e-3, schedule="constant"), total_steps=1
    )

    # SASRec is timed in a group of its own: at T >= 1000 its step allocates GiBs (XLA: 1.5 GiB
    # at 1000, 5.8 at 4000) and a round's SSD steps after it ran slower and far more variably
    # (one run on 2 CPU cores, 20 rounds: the time branch's 95% interval at T = 1000 spanned 22
    # points with SASRec in the round, 8 without; at 4000, 206 against 24).
    def group_of(key: str) -> tuple[int, bool]:
        return MODELS[key].seq_len, MODELS[key].family == "sasrec"

    warmup, repeats = protocol(args)
    for keys in group_models(SPEC, args.models, group_of):
        rows = []
        for key in keys:
            entry = MODELS[key]
            model = _model(entry)
            B, T = args.batch or batch_size(entry.seq_len), entry.seq_len
            items, times, lengths, targets = _inputs(B, T)
            init = jax.jit(lambda k, i, t, n, m=model: m.init(k, i, t, n, train=False))
            shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0), items, times, lengths))
            shapes = shapes["params"]
            extra = {
                "bench": "tim4rec",
                "model": key,
                "family": entry.family,
                "batch_size": B,
                "seq_len": T,
                "num_items": NUM_ITEMS,
                "params": sum(x.size for x in jax.tree.leaves(shapes)),
                "dtype": "float32",
                "matmul_precision": args.precision,
                "optimizer": "adam lr 1e-3, efficient.train.make_optimizer",
            }
            data = (items, times, lengths, targets, jax.random.key(1))

            def make_args(shapes=shapes, data=data):
                params = synthetic_variables(shapes)
                return (params, optimizer.init(params), *data)

            opt_shapes = jax.eval_shape(optimizer.init, shapes)
            case = BenchCase(
                fn=_train_step(model, optimizer), args=(shapes, opt_shapes, *data),
                name=f"tim4rec/{key}/train", batch=B * T, extra=extra,
            )  # fmt: skip
            rows.append(SideBySide(case=case, make_args=make_args))
        yield from time_side_by_side(rows, args, warmup=warmup, repeats=repeats)


def _ms(r: BenchResult | None) -> float | None:
    return None if r is None or r.lower_only else r.median_ms


def _gib(r: BenchResult | None) -> float | None:
    return None if r is None or not r.memory.total_bytes else r.memory.total_bytes / 2**30


def _gflop(r: BenchResult | None) -> float | None:
    return None if r is None or not r.flops else r.flops / 1e9


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _percent_over(a: float | None, b: float | None) -> float | None:
    ratio = _ratio(a, b)
    return None if ratio is None else 100 * (ratio - 1)


def _table(results: Sequence[BenchResult]) -> dict[tuple[int, int], dict[str, BenchResult]]:
    by_len: dict[tuple[int, int], dict[str, BenchResult]] = {}
    for r in results:
        if r.extra.get("bench") == "tim4rec":
            key = (r.extra["seq_len"], r.extra["batch_size"])
            by_len.setdefault(key, {})[r.extra["family"]] = r
    return dict(sorted(by_len.items()))


def _growth(by_len: dict[tuple[int, int], dict[str, BenchResult]], family: str, value) -> str:
    """log-log slopes of `value` per sequence between consecutive lengths (1 = linear in T,
    2 = quadratic), e.g. "50->200: 1.02, ..."; empty without two points."""
    points = [(T, value(row.get(family)), B) for (T, B), row in by_len.items()]
    points = [(T, v / B) for T, v, B in points if v]
    return ", ".join(
        f"{T0}->{T1}: {math.log(v1 / v0) / math.log(T1 / T0):.2f}"
        for (T0, v0), (T1, v1) in zip(points, points[1:], strict=False)
    )


def report(results: Sequence[BenchResult], args: BenchArgs) -> None:
    """Print the step times, the paper's ratios and growth exponents; save the scaling figure.

    Args:
        results: Results of `run` (others are ignored).
        args: The options of the run; the figure goes next to `args.out` (.png).
    """
    by_len = _table(results)
    if not by_len:
        return
    first = next(iter(next(iter(by_len.values())).values()))
    rows = []
    for (T, B), row in by_len.items():
        tim, lin, ssd, sas = (row.get(f) for f in FAMILIES)
        rows.append([
            T, B, _ms(tim), _ms(lin), _ms(ssd), _ms(sas), _ratio(_ms(sas), _ms(tim)),
            ratio_cell(tim, ssd, percent=True), _percent_over(_gflop(tim), _gflop(ssd)),
            ratio_cell(lin, ssd, percent=True), _percent_over(_gflop(lin), _gflop(ssd)),
            _gib(tim), _gib(ssd), _gib(sas),
            "; ".join(f"{f}: {r.extra['skipped']}" for f, r in row.items() if "skipped" in r.extra),
        ])  # fmt: skip
    print_table(
        ["T", "B", "tim4rec ms", "no-MLP ms", "ssd4rec ms", "sasrec ms", "sasrec/tim4rec",
         "time branch % ms", "time branch % FLOP", "no-MLP % ms", "no-MLP % FLOP",
         "tim4rec GiB", "ssd4rec GiB", "sasrec GiB", "note"],
        rows,
        title=(
            "Train step (fwd + bwd + Adam), TiM4Rec vs SSD4Rec vs SASRec, on "
            + device_label(first)
        ),
        caption=(
            f"D 64, 2 layers, {NUM_ITEMS} items (ML-100K presets, max_len = T); fp32, median ms "
            "per step. sasrec/tim4rec > 1: TiM4Rec is faster. time branch %: TiM4Rec over "
            "SSD4Rec, in step time (median of per-round ratios, the SSD models of one T timed in "
            "interleaved rounds, [95% bootstrap interval]) and in XLA's FLOP count (which no "
            "machine load disturbs); "
            "no-MLP: TiM4Rec without its L x L position MLPs (position_mlp=False, not the "
            "reference). "
            "GiB: XLA's buffer estimate (arguments + outputs + temporaries).\n"
            + environment_line(first)
        ),
    )  # fmt: skip
    print("growth exponents per sequence, d log(cost / B) / d log T (1 linear, 2 quadratic):")
    for family in FAMILIES:
        for what, value in (("time", _ms), ("FLOPs", _gflop)):
            slopes = _growth(by_len, family, value)
            if slopes:
                print(f"  {family:>8} {what:>5}: {slopes}")
    path = pathlib.Path(args.out).with_suffix(".png")
    figure = scaling_figure(results)
    if figure is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
        print(f"figure: {path}")


def scaling_figure(results: Sequence[BenchResult]):
    """Train time per sequence and step memory against T, log-log, one line per family.

    Time per sequence (step ms / B) grows like T for a linear-time model and like T^2 for
    attention; dotted guides show both slopes. A bare matplotlib `Figure`, not pyplot: saving
    it switches no notebook backend; a notebook displays it as a cell's value.

    Returns:
        The Figure, or None when no result is from this bench.
    """
    from matplotlib.figure import Figure

    by_len = _table(results)
    if not by_len:
        return None
    first = next(iter(next(iter(by_len.values())).values()))
    fig = Figure(figsize=(11, 4))
    ax_time, ax_mem = fig.subplots(1, 2)
    lowest = []
    for family, marker in zip(FAMILIES, "o^sd", strict=True):
        for ax, value in ((ax_time, _ms), (ax_mem, _gib)):
            points = [(T, value(row.get(family)), B) for (T, B), row in by_len.items()]
            points = [(T, v / B if ax is ax_time else v) for T, v, B in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=marker, label=family)
                if ax is ax_time:
                    lowest.append(points[0])
    lengths = np.array([T for T, _ in by_len], dtype=float)
    if lowest:
        T0, v0 = min(lowest)
        for slope, style in ((1, ":"), (2, "-.")):
            ax_time.plot(lengths, v0 * (lengths / T0) ** slope, style, color="gray", lw=1,
                         label=f"~T^{slope}")  # fmt: skip
    for ax, label in ((ax_time, "ms per sequence (step / B)"), (ax_mem, "GiB per step (XLA)")):
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel=label)
        ax.set_xticks(lengths, [str(int(T)) for T in lengths])
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=8)
    batches = "/".join(str(B) for _, B in by_len)
    ax_time.set_title(f"train step, {device_label(first)}, B = {batches}", fontsize=10)
    ax_mem.set_title("buffer estimate (also for rows compiled, not run)", fontsize=10)
    fig.suptitle(environment_line(first), fontsize=8)
    fig.tight_layout()
    return fig


SPEC = BenchSpec(
    description=(
        "TiM4Rec (and without its position MLP) vs SSD4Rec vs SASRec (D 64): train-step time "
        "and memory at T = 50, 200, 1000, 4000, B x T = 4,000 positions per step on CPU, "
        "102,400 (the paper's batch of 2,048 x 50) on a GPU or TPU "
        "(arXiv:2409.16182 §5.4)"
    ),
    run=run,
    models=tuple(MODELS),
    report=report,
)
