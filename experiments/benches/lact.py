"""LaCT speed: fast-weight utilisation against chunk size, and LM training tokens/s at long T.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884): §1 and Figure 2 (per-token
or small-minibatch TTT uses under 5% of a GPU; chunks of thousands of tokens reach up to 70% on
an A100), App. A (TTT FLOPs 18·n·d²·r/nh per chunk pass), Table 3 (training tokens/s of a 3B
model at 32K context: Transformer 4.1K, Transformer + SWA 6.4K, LaCT 4.3-5.0K on A100-40GB).

Two parts, picked by `--models`:

- utilisation, `util_c<C>`: the forward of `efficient.nn.lact` (apply + update per chunk,
  momentum and weight-norm restore on, Muon off), vmapped over `heads` sequences of `seq_len`
  tokens, at chunk C = 64 .. 4096; every chunk size sees the same tokens. Achieved FLOP/s (the
  paper's formula via `lact_flops`, and XLA's count) divided by the measured throughput of one
  large `jnp.dot` in the same dtype (`matmul`, timed in the same run). Issue 7's goal on CPU:
  >= 50% at chunk >= 2048.
- LM tokens/s, `lm_<T>k_<family>`: one training step (fwd + bwd + AdamW) of the LaCT LM
  (`LaCTConfig.cpu_small()`'s size with the paper's window = chunk = 2048) and of the equal-size
  full-attention transformer (`transformer/kjv`'s model) at T = 4K, 16K, 32K, B = 1; a row whose
  XLA buffer estimate exceeds 80% of the free host memory is compiled, not run.

`quick_*` entries (small shapes, seconds) are for tests and notebooks; they run only when named.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from efficient.bench import (
    BenchResult,
    benchmark,
    environment_line,
    print_table,
    synthetic_variables,
)
from efficient.bench.report import device_label
from efficient.checks import check_field_types, validates_arguments
from experiments.benches.spec import (
    BenchArgs,
    BenchSpec,
    protocol,
    resolve_models,
    skip_if_too_big,
    train_step,
)

__all__ = [
    "CHUNKS",
    "DEFAULT_MODELS",
    "MODELS",
    "QUICK_MODELS",
    "SPEC",
    "LMEntry",
    "MatmulEntry",
    "UtilEntry",
    "report",
    "run",
    "utilisation_figure",
    "utilisation_rows",
]

# 64 .. 4096 is issue 7's range; 1 (per-token TTT) and 16 show where small chunks fall off.
CHUNKS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096)
LM_LENGTHS = (4096, 16_384, 32_768)
# The paper's LM window and chunk (lact_llm/configs: 2048 in the 760M and 3B configs).
LM_WINDOW = 2048


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatmulEntry:
    """The reference: one [n, n] x [n, n] `jnp.dot` in float32 (the dtype `lact` computes in).

    Attributes:
        size: n.
    """

    size: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class UtilEntry:
    """The fast-weight core at one chunk size.

    Attributes:
        chunk: C, tokens per update.
        seq_len: T per sequence, the same for every C (so C = 4096 still updates 3 times).
        heads: sequences (batch x TTT heads) vmapped; `--batch` overrides.
        head_dim: dk = dh = dv (384: the 760M LM's TTT heads, D 1536 / 4).
        matmul: the reference matmul, timed right before the row.
    """

    chunk: int
    seq_len: int = 16_384
    heads: int = 2
    head_dim: int = 384
    matmul: MatmulEntry = MatmulEntry(size=2048)

    def __post_init__(self):
        if self.seq_len % self.chunk or self.seq_len < 3 * self.chunk:
            raise ValueError(
                f"seq_len={self.seq_len}: expected a multiple of chunk={self.chunk}, at least 3 "
                "chunks (XLA's count is extrapolated from 2 and 3 chunks)."
            )


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class LMEntry:
    """One language model at one sequence length, one train step.

    Attributes:
        family: "lact" (`LaCTConfig.cpu_small(sliding_window=window, chunk_size=window)`) or
            "transformer" (`transformer/kjv`'s model, full causal attention).
        seq_len: T.
        batch: B; `--batch` overrides.
        window: LaCT's window and chunk.
        smoke: use the `smoke()` presets instead (quick entries).
    """

    family: Literal["lact", "transformer"]
    seq_len: int
    batch: int = 1
    window: int = LM_WINDOW
    smoke: bool = False

    def __post_init__(self):
        check_field_types(self)


Entry = MatmulEntry | UtilEntry | LMEntry

MODELS: dict[str, Entry] = {
    "matmul": MatmulEntry(size=2048),
    **{f"util_c{C}": UtilEntry(chunk=C) for C in CHUNKS},
    **{
        f"lm_{T // 1024}k_{family}": LMEntry(family=family, seq_len=T)
        for T in LM_LENGTHS
        for family in ("lact", "transformer")
    },
    "quick_matmul": MatmulEntry(size=256),
    **{
        f"quick_c{C}": UtilEntry(
            chunk=C, seq_len=512, heads=2, head_dim=32, matmul=MatmulEntry(size=256)
        )
        for C in (16, 64)
    },
    **{
        f"quick_lm_{family}": LMEntry(family=family, seq_len=128, window=32, smoke=True)
        for family in ("lact", "transformer")
    },
}
DEFAULT_MODELS = tuple(k for k in MODELS if not k.startswith("quick_"))
QUICK_MODELS = tuple(k for k in MODELS if k.startswith("quick_"))

_LR, _BETA = 1e-3, 0.5  # per-token learning rate and momentum coefficient of the util inputs


def _timed(fn, *args, name, batch, extra, bench_args: BenchArgs) -> BenchResult:
    """Compile, then time unless --lower-only or the buffer estimate exceeds free memory."""
    compiled = benchmark(fn, *args, name=name, batch=batch, lower_only=True, extra=extra)
    skipped = skip_if_too_big(compiled, name)
    if bench_args.lower_only or skipped:
        compiled = skipped or compiled
        return compiled
    warmup, repeats = protocol(bench_args)
    print(f"{name}: {warmup} warm-up + {repeats} timed calls ...", file=sys.stderr)
    args = synthetic_variables(args)
    return benchmark(fn, *args, name=name, batch=batch, warmup=warmup, repeats=repeats, extra=extra)


def _matmul(key: str, entry: MatmulEntry, args: BenchArgs) -> BenchResult:
    n = entry.size
    x = jax.ShapeDtypeStruct((n, n), jnp.float32)
    extra = {"bench": "lact", "part": "matmul", "model": key, "size": n, "dtype": "float32",
             "matmul_precision": args.precision}  # fmt: skip
    print(f"lact/{key}: [{n}, {n}] x [{n}, {n}] float32, compiling ...", file=sys.stderr)
    return _timed(jnp.dot, x, x, name=f"lact/{key}", batch=None, extra=extra, bench_args=args)


def _util_inputs(heads: int, T: int, d: int) -> tuple:
    from efficient.nn.lact import FastWeights

    keys = jax.random.split(jax.random.key(0), 6)

    def unit(k):  # the layer feeds L2-normalised q, k
        x = jax.random.normal(k, (heads, T, d), jnp.float32)
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    w = FastWeights(*(jax.random.normal(k, (heads, d, d)) / d**0.5 for k in keys[3:]))
    v = jax.random.normal(keys[2], (heads, T, d), jnp.float32)
    lr = jnp.full((heads, T, 3), _LR, jnp.float32)
    beta = jnp.full((heads, T), _BETA, jnp.float32)
    return unit(keys[0]), unit(keys[1]), v, lr, beta, w


def _util_fn(chunk: int, unroll: int | bool = 1):
    from efficient.nn.lact import lact

    def one(q, k, v, lr, beta, w):
        return lact(q, k, v, lr, w, chunk_size=chunk, momentum=beta, unroll=unroll)

    return jax.vmap(one)


def _unrolled_flops(heads: int, T: int, d: int, C: int) -> float | None:
    """XLA's FLOP count of the utilisation program over T tokens, every chunk counted.

    XLA's cost analysis counts a loop body once, so the count comes from the program with the
    chunk scan unrolled, lowered (unoptimised HLO; never compiled or run). Unrolled, it is
    a + b·n for n chunks (identical chunks, one apply-only last chunk), so it is read at n = 2
    and 3 and extrapolated (T a multiple of C): cheap at any n, and within a few scalar ops of
    the full unroll's count (tested).
    """
    counts = []
    for n in (2, 3):
        shapes = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _util_inputs(heads, n * C, d)
        )
        cost = jax.jit(_util_fn(C, unroll=True)).lower(*shapes).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        if not cost or "flops" not in cost:
            return None
        counts.append(cost["flops"])
    per_chunk = counts[1] - counts[0]
    return counts[0] + (T // C - 2) * per_chunk


def _util(key: str, entry: UtilEntry, args: BenchArgs) -> BenchResult:
    from efficient.nn.lact import lact_flops

    heads = args.batch or entry.heads
    T, d, C = entry.seq_len, entry.head_dim, entry.chunk
    inputs = _util_inputs(heads, T, d)
    formula = heads * lact_flops(T, d, d, d, C, order="apply_then_update")
    # The reference matmul is timed again right before each row: on a shared machine the load
    # changes between rows, and the ratio should see the same load.
    reference = _matmul(f"{key}/matmul", entry.matmul, args)
    extra = {
        "bench": "lact", "part": "utilisation", "model": key, "chunk": C, "seq_len": T,
        "heads": heads, "head_dim": d, "dtype": "float32", "matmul_precision": args.precision,
        "formula_flops": formula, "xla_unrolled_flops": _unrolled_flops(heads, T, d, C),
        "matmul_size": entry.matmul.size, "matmul_median_ms": reference.median_ms,
        "matmul_min_ms": reference.min_ms,
        "variant": "causal apply-then-update, momentum, weight norm, no Muon; forward",
    }  # fmt: skip
    print(f"lact/{key}: {heads} x T {T}, d {d}, chunk {C}, compiling ...", file=sys.stderr)
    result = _timed(
        _util_fn(C), *inputs, name=f"lact/{key}", batch=heads * T, extra=extra, bench_args=args
    )
    # The compiled program's own count has the chunk loop's body once: keep it in extra, and
    # report the unrolled count as the result's FLOPs (so GFLOP/s columns are right).
    extra = {**result.extra, "xla_rolled_flops": result.flops}
    return dataclasses.replace(result, flops=extra["xla_unrolled_flops"], extra=extra)


def _lm_config(entry: LMEntry) -> Any:
    from efficient.models.lact import LaCTConfig
    from efficient.models.transformer import TransformerConfig
    from experiments.transformer import kjv_model

    w = entry.window
    if entry.family == "lact":
        base = LaCTConfig.smoke if entry.smoke else LaCTConfig.cpu_small
        return base(sliding_window=w, chunk_size=w, max_len=entry.seq_len)
    if entry.smoke:
        return TransformerConfig.smoke(max_len=entry.seq_len)
    return dataclasses.replace(kjv_model(), max_len=entry.seq_len)


def _train_step(model: Any, optimizer: Any):
    from efficient.train import next_token_loss

    loss_fn = next_token_loss()

    def loss(params, inputs, targets):
        logits = model.apply({"params": params}, inputs, train=True)
        return loss_fn(logits, {"targets": targets})[0]

    return train_step(loss, optimizer)


def _lm(key: str, entry: LMEntry, args: BenchArgs, optimizer: Any) -> BenchResult:
    import flax.linen as nn

    from efficient.models.lact import LaCT, LaCTConfig
    from efficient.models.transformer import Transformer

    config = _lm_config(entry)
    model = LaCT(config) if isinstance(config, LaCTConfig) else Transformer(config)
    B, T = args.batch or entry.batch, entry.seq_len
    tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
    init = jax.jit(lambda k, t: model.init(k, t))
    shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0), tokens)["params"])
    opt_shapes = jax.eval_shape(optimizer.init, shapes)
    extra = {
        "bench": "lact", "part": "lm", "model": key, "family": entry.family, "batch_size": B,
        "seq_len": T, "params": sum(x.size for x in jax.tree.leaves(shapes)),
        "window": entry.window if entry.family == "lact" else None,
        "preset": "smoke" if entry.smoke else "cpu_small / transformer/kjv",
        "dtype": jnp.dtype(config.dtype).name, "matmul_precision": args.precision,
        "optimizer": "adamw (wd 0.1 on matrices, clip 1.0), efficient.train.make_optimizer",
    }  # fmt: skip
    name = f"lact/{key}/train"
    print(f"{name}: B={B}, T={T}, compiling ...", file=sys.stderr)
    step = _train_step(model, optimizer)
    return _timed(
        step, shapes, opt_shapes, tokens, tokens, name=name, batch=B * T, extra=extra,
        bench_args=args,
    )  # fmt: skip


def run(args: BenchArgs) -> Iterator[BenchResult]:
    """Yield the results of the entries that `--models` names (default: every non-quick one).

    Utilisation rows time the jitted forward of `lact` vmapped over `heads` (fp32, synthetic
    L2-normalised q, k, normal v, η = 1e-3, β = 0.5; items are tokens, heads x T), each right
    after its reference matmul (same protocol; kept in the row's extra). LM rows
    time one train step (next-token cross-entropy, AdamW with clipping, fp32, synthetic weights,
    zero tokens); items are tokens, so items/s is tokens/s. `--batch` sets the utilisation
    heads and the LM batch.

    Yields:
        `BenchResult`s named "lact/matmul", "lact/util_c<C>", "lact/lm_<T>k_<family>/train"
        (and their quick_ twins); the per-row matmuls are not yielded.
    """
    from efficient.train import OptimizerConfig, make_optimizer

    keys = resolve_models(SPEC, args.models) if args.models else DEFAULT_MODELS
    optimizer = make_optimizer(
        OptimizerConfig(learning_rate=3e-4, weight_decay=0.1, grad_clip_norm=1.0), total_steps=1000
    )
    for key in keys:
        entry = MODELS[key]
        if isinstance(entry, MatmulEntry):
            yield _matmul(key, entry, args)
        elif isinstance(entry, UtilEntry):
            yield _util(key, entry, args)
        else:
            yield _lm(key, entry, args, optimizer)


def _ours(results: Sequence[BenchResult], part: str) -> list[BenchResult]:
    return [r for r in results if r.extra.get("bench") == "lact" and r.extra.get("part") == part]


def utilisation_rows(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    """Per timed utilisation result: chunk, ms, achieved GFLOP/s by the paper's formula and by
    XLA's count, and each divided by the matmul throughput of the device.

    Both sides use the fastest of their timed calls (load from other processes only slows calls
    down), and the matmul side is the best of every reference timed in `results` (one before
    each row, and `matmul` entries of the same size): a load spike during one reference cannot
    inflate a row's utilisation.
    """
    best: dict[int, float] = {}  # matmul size -> best GFLOP/s
    for r in results:
        if r.extra.get("bench") != "lact":
            continue
        if r.extra.get("part") == "utilisation" and r.extra.get("matmul_min_ms"):
            n, ms = r.extra["matmul_size"], r.extra["matmul_min_ms"]
        elif r.extra.get("part") == "matmul" and r.times_ms:
            n, ms = r.extra["size"], r.min_ms
        else:
            continue
        best[n] = max(best.get(n, 0.0), 2 * n**3 / (ms / 1e3) / 1e9)
    rows = []
    for r in _ours(results, "utilisation"):
        if not r.times_ms:
            continue
        seconds = r.min_ms / 1e3
        formula = r.extra["formula_flops"] / seconds / 1e9
        counted = r.extra.get("xla_unrolled_flops")
        counted = counted / seconds / 1e9 if counted else None
        peak = best.get(r.extra["matmul_size"])
        rows.append({
            "chunk": r.extra["chunk"], "seq_len": r.extra["seq_len"], "heads": r.extra["heads"],
            "head_dim": r.extra["head_dim"], "ms": r.min_ms, "median_ms": r.median_ms,
            "formula_gflops": formula, "xla_gflops": counted, "matmul_gflops": peak,
            "matmul_size": r.extra["matmul_size"],
            "utilisation": formula / peak if peak else None,
            "xla_utilisation": counted / peak if peak and counted else None,
            "env": r,
        })  # fmt: skip
    return rows


def utilisation_figure(results: Sequence[BenchResult]):
    """Utilisation (formula and XLA count) against chunk size, log2 x axis, the 50% goal dotted.

    A bare matplotlib `Figure` (no pyplot): saving it switches no notebook backend.

    Returns:
        The Figure, or None without timed utilisation results.
    """
    from matplotlib.figure import Figure

    rows = [r for r in utilisation_rows(results) if r["utilisation"] is not None]
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    chunks = [r["chunk"] for r in rows]
    ax.plot(chunks, [100 * r["utilisation"] for r in rows], "o-", label="paper's FLOP formula")
    if all(r["xla_utilisation"] is not None for r in rows):
        ax.plot(chunks, [100 * r["xla_utilisation"] for r in rows], "s--", label="XLA's count")
    ax.axhline(50, color="gray", ls=":", lw=1, label="goal (CPU): 50% at chunk >= 2048")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="chunk size (tokens per fast-weight update)",
           ylabel="% of the measured matmul FLOP/s", ylim=(0, None))  # fmt: skip
    ax.set_xticks(chunks, [str(c) for c in chunks])
    ax.set_xticks([], minor=True)
    ax.grid(alpha=0.3, which="both")
    first = rows[0]
    ax.set_title(
        f"LaCT forward, {first['heads']} x T {first['seq_len']}, d {first['head_dim']}, fp32, on "
        f"{device_label(first['env'])}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.suptitle(environment_line(first["env"]), fontsize=7)
    fig.tight_layout()
    return fig


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def report(results: Sequence[BenchResult], args: BenchArgs) -> None:
    """Print the utilisation table and the LM tokens/s table; save the utilisation figure next to
    `args.out` (.png)."""
    rows = utilisation_rows(results)
    if rows:
        print_table(
            ["chunk", "best ms", "median ms", "GFLOP/s (formula)", "GFLOP/s (XLA)",
             "matmul GFLOP/s", "utilisation", "utilisation (XLA)"],
            [[r["chunk"], r["ms"], r["median_ms"], r["formula_gflops"], r["xla_gflops"],
              r["matmul_gflops"],
              r["utilisation"] and f"{100 * r['utilisation']:.1f}%",
              r["xla_utilisation"] and f"{100 * r['xla_utilisation']:.1f}%"] for r in rows],
            title="LaCT fast-weight forward: utilisation vs chunk, on "
            + device_label(rows[0]["env"]),
            caption=(
                f"{rows[0]['heads']} sequences x T = {rows[0]['seq_len']} tokens, dk = dh = dv = "
                f"{rows[0]['head_dim']}, fp32; apply + update per chunk (momentum, weight norm; "
                "no Muon), causal (the last chunk only applies). Formula: lact_flops, 18·n·d² "
                "per updated token (App. A); XLA: cost analysis of the lowered program with the "
                "chunk scan unrolled (a rolled loop's body is counted once), which adds the "
                "elementwise work. Utilisation: achieved / the FLOP/s of one (n x n) @ (n x n) "
                f"jnp.dot (n = {rows[0]['matmul_size']}, same dtype, timed before every row), "
                "both from the fastest call (the matmul: the best of the run).\n"
                + environment_line(rows[0]["env"])
            ),
        )  # fmt: skip
        path = pathlib.Path(args.out).with_suffix(".png")
        figure = utilisation_figure(results)
        if figure is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=120)
            print(f"figure: {path}")
    lm = _ours(results, "lm")
    if not lm:
        return
    by_len: dict[tuple[int, int], dict[str, BenchResult]] = {}
    for r in lm:
        by_len.setdefault((r.extra["seq_len"], r.extra["batch_size"]), {})[r.extra["family"]] = r

    def get(r, f):
        return None if r is None or (r.lower_only and f is not _gib) else f(r)

    table = []
    for (T, B), pair in sorted(by_len.items()):
        ours, attn = pair.get("lact"), pair.get("transformer")
        table.append([
            T, B, get(ours, lambda r: r.median_ms), get(ours, lambda r: r.items_per_s),
            get(attn, lambda r: r.median_ms), get(attn, lambda r: r.items_per_s),
            _ratio(get(ours, lambda r: r.items_per_s), get(attn, lambda r: r.items_per_s)),
            get(ours, _gib), get(attn, _gib),
            "; ".join(f"{f}: {r.extra['skipped']}" for f, r in pair.items()
                      if "skipped" in r.extra),
        ])  # fmt: skip
    first = lm[0]
    print_table(
        ["T", "B", "lact ms", "lact tok/s", "attn ms", "attn tok/s", "lact/attn tok/s",
         "lact GiB", "attn GiB", "note"],
        table,
        title=f"Train step (fwd + bwd + AdamW), LaCT LM vs attention, on {device_label(first)}",
        caption=(
            _lm_caption(lm) + "; fp32, median ms per step; lact/attn > 1: LaCT trains faster. "
            "GiB: XLA's buffer estimate. Paper (Table 3, 3B, 32K, A100): Transformer 4.1K tok/s, "
            "LaCT 4.3-5.0K.\n" + environment_line(first)
        ),
    )  # fmt: skip


def _lm_caption(lm: Sequence[BenchResult]) -> str:
    parts = []
    for r in lm:
        if r.extra["family"] == "lact":
            what = (
                "LaCTConfig.smoke" if r.extra.get("preset") == "smoke" else "LaCTConfig.cpu_small"
            )
            parts.append(
                f"{what} with window = chunk = {r.extra['window']} ({r.extra['params']:,})"
            )
        else:
            what = (
                "TransformerConfig.smoke"
                if r.extra.get("preset") == "smoke"
                else "transformer/kjv's model"
            )
            parts.append(f"{what}, full causal attention ({r.extra['params']:,})")
    return "Byte LMs (parameters): " + " vs ".join(dict.fromkeys(parts))


def _gib(r: BenchResult) -> float | None:
    return r.memory.total_bytes / 2**30 if r.memory.total_bytes else None


SPEC = BenchSpec(
    description=(
        "LaCT: fast-weight utilisation (vs a matmul) at chunk 64 .. 4096, and LM train tokens/s "
        "vs full attention at T = 4K, 16K, 32K (arXiv:2505.23884 Fig. 2, Table 3)"
    ),
    run=run,
    models=tuple(MODELS),
    report=report,
)
