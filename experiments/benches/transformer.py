"""Language-model speed and FLOPs: train-step and decode tokens/s, XLA FLOPs vs the 6·N·T estimate.

Scaling Laws for Neural Language Models (Kaplan et al. 2020, arXiv:2001.08361, §2.1, Table 1);
PaLM (Chowdhery et al. 2022, arXiv:2204.02311, Appendix B: 6N + 12·L·H·Q·T FLOPs per token).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp

from efficient.bench import (
    BenchResult,
    benchmark,
    cost_stats,
    environment,
    environment_line,
    print_table,
    synthetic_variables,
)
from efficient.bench.report import device_label
from efficient.checks import check_field_types, validates_arguments
from experiments.benches.spec import BenchArgs, BenchSpec, protocol, resolve_models, train_step

__all__ = ["MODELS", "SPEC", "ModelEntry", "flop_estimates", "run", "report"]


@validates_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One benchmarked configuration.

    Attributes:
        label: Display name.
        preset: Name of the `TransformerConfig` classmethod.
        batch: Sequences per train/forward step (B).
        seq_len: Tokens per sequence (T).
        analysis: "timed": run the train step and decode; "compiled": lower and compile the train
            step and forward, run nothing; "lowered": cost analysis of the lowered HLO only (no
            compile: seconds even for 7B parameters).
        prompt_len: Decode prompt length P (timed entries).
        new_tokens: Tokens generated per decode call (timed entries).
    """

    label: str
    preset: str
    batch: int
    seq_len: int
    analysis: Literal["timed", "compiled", "lowered"]
    prompt_len: int = 0
    new_tokens: int = 0

    def __post_init__(self):
        check_field_types(self)


MODELS: dict[str, ModelEntry] = {
    "smoke": ModelEntry(
        label="smoke",
        preset="smoke",
        batch=8,
        seq_len=128,
        analysis="timed",
        prompt_len=16,
        new_tokens=16,
    ),
    "cpu_10m": ModelEntry(
        label="cpu-10M",
        preset="cpu_10m",
        batch=8,
        seq_len=256,
        analysis="timed",
        prompt_len=64,
        new_tokens=128,
    ),
    "llama_style_100m": ModelEntry(
        label="Llama-100M",
        preset="llama_style_100m",
        batch=1,
        seq_len=1024,
        analysis="compiled",
    ),
    # Compiling works on CPU too (3 s forward, 16 s train step on 2 cores), but the lowered HLO's
    # count is within 0.2% of the compiled one and XLA:CPU's buffer sizes say nothing about an
    # accelerator, so the 7B row stays a few seconds long.
    "qwen2_7b": ModelEntry(
        label="Qwen2-7B", preset="qwen2_7b", batch=1, seq_len=4096, analysis="lowered"
    ),
}

# (warmup, repeats) per platform and measurement. On 2 CPU cores a cpu_10m train step at B=8,
# T=256 takes a few seconds and a decode call well under one, so 1 + 5 calls keep the bench short;
# the median of 5 discards the odd slow call of a shared machine.
_DEFAULTS = {
    ("cpu", "train"): (1, 5),
    ("cpu", "decode"): (1, 5),
    ("accelerator", "train"): (5, 20),
    ("accelerator", "decode"): (5, 20),
}
_LATENCY_BATCH = 1


def flop_estimates(config: Any, batch: int, seq_len: int, *, train: bool) -> dict[str, float]:
    """Analytic FLOPs of one step on `batch` sequences of `seq_len` tokens.

    With N the non-embedding parameters, V x D the head, L layers, H query heads of K dims:

    - "6NT": 6·N·B·T (Kaplan et al. 2020 §2.1: C ≈ 6N per training token, 2N forward).
    - "6NT_all": the same with every parameter (embedding table and head included).
    - "model": (6·(N + D·V) + 12·L·H·K·T)·B·T (PaLM, Appendix B). The head is a D x V matmul
      (also when tied to the embedding), while the embedding lookup costs no FLOPs; QKᵀ and AV
      cost 2·T·H·K each per token and layer forward, x 3 with the backward pass. The full T x T
      score matrix is counted, as XLA counts the dense causal attention computed here (the mask
      halves the useful work, not the work done).

    A forward pass is one third of each (2·N, 4·L·H·K·T). XLA's count exceeds "model" by the
    elementwise work: normalisation, softmax, SwiGLU gating, the loss and the AdamW update (about
    20 FLOPs per parameter and step, which matters only at small B·T).

    Args:
        config: A `TransformerConfig`.
        batch: B.
        seq_len: T.
        train: Training step (forward + backward) rather than a forward pass.

    Returns:
        {"6NT", "6NT_all", "model"}: FLOPs per step.
    """
    tokens = batch * seq_len
    n = config.num_non_embedding_params()
    head = config.features * config.vocab_size
    attention = config.num_layers * config.num_heads * config.resolved_head_dim * seq_len
    per_param, per_attention = (6, 12) if train else (2, 4)
    return {
        "6NT": per_param * n * tokens,
        "6NT_all": per_param * config.num_params() * tokens,
        "model": (per_param * (n + head) + per_attention * attention) * tokens,
    }


def _train_step(model: Any, optimizer: Any):
    from efficient.train import next_token_loss

    loss_fn = next_token_loss()

    def loss(params, inputs, targets):
        logits = model.apply({"params": params}, inputs, train=True)
        return loss_fn(logits, {"targets": targets})[0]

    return train_step(loss, optimizer)


def _lowered(fn, *args, name: str, batch: int, extra: dict[str, Any]) -> BenchResult:
    """FLOPs of the lowered (unoptimised) HLO, without compiling: no buffer sizes, no timing."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    flops, bytes_accessed = cost_stats(lowered)  # `Lowered` has `cost_analysis` too
    return BenchResult(
        name=name,
        batch=batch,
        flops=flops,
        bytes_accessed=bytes_accessed,
        lower_s=t1 - t0,
        lower_only=True,
        env=environment(),
        extra=extra,
    )


def _decode(
    model: Any,
    params: Any,
    entry: ModelEntry,
    batches: Sequence[int],
    args: BenchArgs,
    meta: dict[str, Any],
    *,
    timed: bool,
) -> Iterator[BenchResult]:
    """Prefill (one new token) and full `generate` calls at each batch size."""
    from efficient.models.transformer import generate

    P, new = entry.prompt_len, entry.new_tokens
    warmup, repeats = protocol(args, _DEFAULTS, "decode")
    for b in batches:
        for step, n in (("prefill", 1), ("decode", new)):

            def gen(p, prompt, n=n):
                return generate(model, p, prompt, jax.random.key(0), max_new_tokens=n)

            name = f"{meta['bench']}/{meta['model']}/{step}_b{b}"
            what = f"{warmup} warm-up + {repeats} timed calls" if timed else "compiling"
            print(f"{name}: P={P}, {n} new tokens, {what} ...", file=sys.stderr)
            yield benchmark(
                gen,
                params,
                jax.ShapeDtypeStruct((b, P), jnp.int32),
                name=name,
                # Prefill: prompt tokens per call; decode: new tokens per call.
                batch=b * (P if step == "prefill" else n),
                warmup=warmup,
                repeats=repeats,
                lower_only=not timed,
                extra={**meta, "step": step, "batch_size": b, "prompt_len": P, "new_tokens": n},
            )


def run(args: BenchArgs) -> Iterator[BenchResult]:
    """Yield train-step, forward and decode results per model.

    Train step: next-token cross-entropy, `jax.value_and_grad`, AdamW update with gradient clipping
    (`efficient.train.make_optimizer`), jitted, fp32 (bf16 for Qwen2-7B, its preset), synthetic
    LeCun-normal weights and zero tokens (timing does not depend on values). Parameters are not
    donated: the harness calls the compiled step again on the same arguments. Items are tokens, so
    items/s is tokens/s.

    Decode: greedy `generate` of `new_tokens` after a `prompt_len` prompt at batch
    `--latency-batch` (default 1) and `--batch`; the whole call is timed (prefill + decode), items
    are new tokens. A "prefill" row times the same call with one new token. XLA's cost analysis
    counts a loop body once, not once per trip, so the FLOPs of these rows are not N steps' worth.

    Full-size presets ("compiled", "lowered") run nothing: parameters are the
    `jax.ShapeDtypeStruct`s of `jax.eval_shape(model.init, ...)`, so a 7B model is inspected,
    never materialised.

    Args:
        args: Bench options; `--batch` sets B of every train/forward step, `--latency-batch` the
            small decode batch (0: skip it); `--lower-only` compiles without running.

    Yields:
        `BenchResult`s named "transformer/<model>/<train|forward|prefill_bB|decode_bB>".
    """
    import flax.linen as nn

    from efficient.models.transformer import Transformer, TransformerConfig
    from efficient.train import OptimizerConfig, make_optimizer

    # The usual LM recipe (AdamW, weight decay 0.1 on matrices, clipping at 1) as the trainer
    # builds it; the schedule's length does not change the step's cost.
    optimizer = make_optimizer(
        OptimizerConfig(learning_rate=3e-4, weight_decay=0.1, grad_clip_norm=1.0), total_steps=1000
    )

    latency_batch = _LATENCY_BATCH if args.latency_batch is None else args.latency_batch
    for key in resolve_models(SPEC, args.models):
        entry = MODELS[key]
        config = getattr(TransformerConfig, entry.preset)()
        model = Transformer(config)
        B, T = args.batch or entry.batch, entry.seq_len
        tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
        init = jax.jit(lambda k, t, m=model: m.init(k, t))
        shapes = nn.unbox(jax.eval_shape(init, jax.random.key(0), tokens)["params"])
        num_params = sum(x.size for x in jax.tree.leaves(shapes))
        analysis = "compiled" if args.lower_only and entry.analysis == "timed" else entry.analysis
        timed = analysis == "timed"
        if timed:
            params = synthetic_variables(shapes)
            opt_state = optimizer.init(params)
        else:
            params, opt_state = shapes, jax.eval_shape(optimizer.init, shapes)
        meta = {
            "bench": "transformer",
            "model": key,
            "label": entry.label,
            "preset": entry.preset,
            "dtype": jnp.dtype(config.dtype).name,
            "params": num_params,
            "non_embedding_params": config.num_non_embedding_params(),
            "analysis": analysis,
            "weights": "synthetic (LeCun-normal kernels)" if timed else "none (shapes only)",
            "matmul_precision": args.precision,
            "optimizer": "adamw (wd 0.1 on matrices, clip 1.0), efficient.train.make_optimizer",
        }
        steps = [("train", _train_step(model, optimizer), (params, opt_state, tokens, tokens))]
        if not timed:

            def forward(p, t, m=model):
                return m.apply({"params": p}, t)

            steps.append(("forward", forward, (params, tokens)))
        for step, fn, fn_args in steps:
            name = f"transformer/{key}/{step}"
            extra = {
                **meta,
                "step": step,
                "batch_size": B,
                "seq_len": T,
                "estimates": flop_estimates(config, B, T, train=step == "train"),
            }
            if analysis == "lowered":
                print(f"{name}: B={B}, T={T}, lowering ...", file=sys.stderr)
                yield _lowered(fn, *fn_args, name=name, batch=B * T, extra=extra)
                continue
            warmup, repeats = protocol(args, _DEFAULTS, "train")
            what = f"{warmup} warm-up + {repeats} timed calls" if timed else "compiling"
            print(f"{name}: B={B}, T={T}, {what} ...", file=sys.stderr)
            yield benchmark(
                fn,
                *fn_args,
                name=name,
                batch=B * T,
                warmup=warmup,
                repeats=repeats,
                lower_only=not timed,
                extra=extra,
            )
        if entry.analysis == "timed":
            batches = tuple(dict.fromkeys(x for x in (latency_batch, B) if x > 0))
            yield from _decode(model, params, entry, batches, args, meta, timed=timed)
        del params, opt_state


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _flops_row(r: BenchResult) -> list[Any]:
    e, est = r.extra, r.extra["estimates"]
    g = 1e-9
    return [
        f"{e['label']} {e['step']}",
        e["batch_size"],
        e["seq_len"],
        e["params"] / 1e6,
        e["non_embedding_params"] / 1e6,
        None if r.flops is None else r.flops * g,
        est["6NT"] * g,
        _ratio(r.flops, est["6NT"]),
        _ratio(r.flops, est["6NT_all"]),
        _ratio(r.flops, est["model"]),
        r.median_ms,
        r.items_per_s,
        r.gflops_per_s,
        e["analysis"],
    ]


def report(results: Sequence[BenchResult], args: BenchArgs) -> None:
    """Print the FLOPs table (XLA vs the analytic estimates) and the decode table.

    Args:
        results: Results of `run` (others are ignored).
        args: The options of the run (unused: no figure).
    """
    del args
    ours = [r for r in results if r.extra.get("bench") == "transformer"]
    steps = [r for r in ours if r.extra["step"] in ("train", "forward")]
    if steps:
        print_table(
            [
                "model step",
                "B",
                "T",
                "params M",
                "non-emb M",
                "XLA GFLOP",
                "6NT GFLOP",
                "XLA/6NT",
                "XLA/6NT all",
                "XLA/model",
                "median ms",
                "tokens/s",
                "GFLOP/s",
                "analysis",
            ],
            [_flops_row(r) for r in steps],
            title=f"Transformer steps on {device_label(steps[0])}: XLA FLOPs vs estimates",
            caption=(
                "6NT: 6·N·B·T with N the non-embedding parameters (2·N·B·T for forward rows); "
                "'all': every parameter; model: (6(N + D·V) + 12·L·H·K·T)·B·T (PaLM App. B), "
                "head matmul and attention included. 'lowered': XLA's count on the unoptimised "
                "HLO, not compiled.\n" + environment_line(steps[0])
            ),
        )
    decode = {}
    for r in ours:
        if r.extra["step"] in ("prefill", "decode"):
            decode.setdefault((r.extra["label"], r.extra["batch_size"]), {})[r.extra["step"]] = r
    if not decode:
        return
    rows = []
    for (label, b), by_step in decode.items():
        pre, dec = by_step.get("prefill"), by_step.get("decode")
        per_token = None
        if pre and dec and pre.median_ms is not None and dec.median_ms is not None:
            per_token = (dec.median_ms - pre.median_ms) / max(dec.extra["new_tokens"] - 1, 1)
        rows.append(
            [
                label,
                b,
                (dec or pre).extra["prompt_len"],
                dec and dec.extra["new_tokens"],
                dec and dec.median_ms,
                dec and dec.items_per_s,
                pre and pre.median_ms,
                pre and pre.items_per_s,
                per_token,
            ]
        )
    any_r = next(iter(next(iter(decode.values())).values()))
    print_table(
        [
            "model",
            "B",
            "prompt P",
            "new N",
            "generate ms",
            "new tokens/s",
            "prefill ms",
            "prompt tokens/s",
            "ms/step",
        ],
        rows,
        title=f"Greedy decoding on {device_label(any_r)} (generate, jitted, KV cache)",
        caption=(
            "generate ms: one whole call (prefill + N decode steps); prefill ms: the same call "
            "with N = 1; ms/step = (generate - prefill) / (N - 1). No FLOP ratios: XLA counts the "
            "decode loop's body once, not N - 1 times.\n" + environment_line(any_r)
        ),
    )


SPEC = BenchSpec(
    description=(
        "Decoder LM (smoke, cpu-10M; Llama-100M and Qwen2-7B lowered only): train-step and "
        "decode tokens/s, XLA FLOPs vs 6NT (arXiv:2001.08361, 2204.02311)"
    ),
    run=run,
    models=tuple(MODELS),
    report=report,
)
