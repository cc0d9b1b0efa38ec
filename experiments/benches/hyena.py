"""Hyena vs attention at long sequences: train-step time of equal-size LMs at T = 1K, 4K, 16K.

Hyena Hierarchy (Poli et al. 2023, arXiv:2302.10866, abstract and §4.4: the operator is twice as
fast as optimized attention at 8K and 100x faster at 64K); FlashFFTConv (Fu et al. 2023,
arXiv:2311.05908 §5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

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
    protocol,
    time_side_by_side,
    train_step,
)

__all__ = ["MODELS", "SPEC", "ModelEntry", "run", "report"]


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One benchmarked model at one sequence length.

    Attributes:
        family: "hyena" (`HyenaConfig.kjv`) or "transformer" (`transformer/kjv`'s model): the same
            width, depth, SwiGLU and tied byte embedding.
        seq_len: T.
        batch: Sequences per step (B).
    """

    family: Literal["hyena", "transformer"]
    seq_len: int
    batch: int = 1

    def __post_init__(self):
        check_field_types(self)


MODELS: dict[str, ModelEntry] = {
    f"{family}_{T // 1024}k": ModelEntry(family=family, seq_len=T)
    for T in (1024, 4096, 16_384)
    for family in ("hyena", "transformer")
}


def _config(entry: ModelEntry) -> Any:
    from efficient.models.hyena import HyenaConfig
    from experiments.transformer import kjv_model

    if entry.family == "hyena":
        return HyenaConfig.kjv(max_len=entry.seq_len)
    return dataclasses.replace(kjv_model(), max_len=entry.seq_len)


def _module(config: Any) -> Any:
    from efficient.models.hyena import Hyena, HyenaConfig
    from efficient.models.transformer import Transformer

    return Hyena(config) if isinstance(config, HyenaConfig) else Transformer(config)


def _train_step(model: Any, optimizer: Any):
    from efficient.train import next_token_loss

    loss_fn = next_token_loss()

    def loss(params, inputs, targets):
        logits = model.apply({"params": params}, inputs, train=True)
        return loss_fn(logits, {"targets": targets})[0]

    return train_step(loss, optimizer)


def run(args: BenchArgs) -> Iterator[BenchResult]:
    """Yield one train-step result per model entry, Hyena and attention of one T side by side.

    Train step: next-token cross-entropy, `jax.value_and_grad`, AdamW with clipping
    (`efficient.train.make_optimizer`), jitted, fp32, synthetic LeCun-normal weights and zero
    tokens. The step is compiled first; where XLA's buffer estimate exceeds 80% of the free host
    memory on CPU the row is kept compiled-only (FLOPs and memory, "skipped" says why) instead of
    risking an out-of-memory kill. Items are tokens, so items/s is tokens/s. `--models` picks
    entries (e.g. `hyena_16k,transformer_16k`); `--batch` sets B. The models of one length are
    timed in interleaved rounds (`time_side_by_side`): one step of each per round, shuffled.

    Yields:
        `BenchResult`s named "hyena/<family>_<T>k/train".
    """
    import flax.linen as nn

    from efficient.train import OptimizerConfig, make_optimizer

    optimizer = make_optimizer(
        OptimizerConfig(learning_rate=3e-4, weight_decay=0.1, grad_clip_norm=1.0), total_steps=1000
    )
    warmup, repeats = protocol(args)
    for keys in group_models(SPEC, args.models, lambda key: MODELS[key].seq_len):
        rows = []
        for key in keys:
            entry = MODELS[key]
            config = _config(entry)
            model = _module(config)
            B, T = args.batch or entry.batch, entry.seq_len
            tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
            init = jax.jit(lambda k, t, m=model: m.init(k, t))
            shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0), tokens)["params"])
            extra = {
                "bench": "hyena",
                "model": key,
                "family": entry.family,
                "batch_size": B,
                "seq_len": T,
                "params": sum(x.size for x in jax.tree.leaves(shapes)),
                "dtype": jnp.dtype(config.dtype).name,
                "matmul_precision": args.precision,
                "optimizer": "adamw (wd 0.1 on matrices, clip 1.0), efficient.train.make_optimizer",
            }

            def make_args(shapes=shapes, tokens=tokens):
                params = synthetic_variables(shapes)
                return (params, optimizer.init(params), tokens, tokens)

            case = BenchCase(
                fn=_train_step(model, optimizer),
                args=(shapes, jax.eval_shape(optimizer.init, shapes), tokens, tokens),
                name=f"hyena/{key}/train",
                batch=B * T,
                extra=extra,
            )
            rows.append(SideBySide(case=case, make_args=make_args))
        yield from time_side_by_side(rows, args, warmup=warmup, repeats=repeats)


def report(results: Sequence[BenchResult], args: BenchArgs) -> None:
    """Print Hyena vs transformer per sequence length: ms, tokens/s, speed-up, FLOPs, memory.

    Args:
        results: Results of `run` (others are ignored).
        args: The options of the run (unused: no figure).
    """
    del args
    ours = [r for r in results if r.extra.get("bench") == "hyena"]
    if not ours:
        return
    by_len: dict[tuple[int, int], dict[str, BenchResult]] = {}
    for r in ours:
        by_len.setdefault((r.extra["seq_len"], r.extra["batch_size"]), {})[r.extra["family"]] = r
    gib, g = 1 / 2**30, 1e-9
    rows = []
    for (T, B), pair in sorted(by_len.items()):
        h, t = pair.get("hyena"), pair.get("transformer")

        def get(r, f):
            return None if r is None else f(r)

        rows.append(
            [
                T,
                B,
                get(h, lambda r: r.median_ms),
                get(h, lambda r: r.items_per_s),
                get(t, lambda r: r.median_ms),
                get(t, lambda r: r.items_per_s),
                ratio_cell(t, h),
                get(h, lambda r: r.flops and r.flops * g),
                get(t, lambda r: r.flops and r.flops * g),
                get(h, lambda r: r.memory.total_bytes and r.memory.total_bytes * gib),
                get(t, lambda r: r.memory.total_bytes and r.memory.total_bytes * gib),
                "; ".join(
                    f"{r.extra['family']}: {r.extra['skipped']}"
                    for r in (h, t)
                    if r is not None and "skipped" in r.extra
                ),
            ]
        )
    print_table(
        [
            "T",
            "B",
            "hyena ms",
            "hyena tok/s",
            "attn ms",
            "attn tok/s",
            "attn/hyena",
            "hyena GFLOP",
            "attn GFLOP",
            "hyena GiB",
            "attn GiB",
            "note",
        ],
        rows,
        title=f"Train step (fwd + bwd + AdamW), Hyena vs attention, on {device_label(ours[0])}",
        caption=(
            "Equal-size byte LMs (D 256, 4 layers, SwiGLU 768, tied): HyenaConfig.kjv (3.67M) vs "
            "transformer/kjv's model (3.48M); fp32, median ms per step; attn/hyena > 1: Hyena is "
            "faster (median of per-round ratios [95% bootstrap interval]: the two timed in "
            "interleaved rounds). GiB: XLA's buffer estimate (arguments + outputs + temporaries).\n"
            + environment_line(ours[0])
        ),
    )


SPEC = BenchSpec(
    description=(
        "Hyena LM vs the equal-size attention transformer: train-step time and tokens/s at "
        "T = 1K, 4K, 16K (arXiv:2302.10866 §4.4)"
    ),
    run=run,
    models=tuple(MODELS),
    report=report,
)
