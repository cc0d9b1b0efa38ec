# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TiM4Rec: time-aware SSD for sequential recommendation, on MovieLens-100K
#
# TiM4Rec (Fan et al., arXiv:2409.16182) builds a next-item recommender on Mamba-2's SSD and
# injects the time differences between a user's interactions into SSD's structured mask; the
# paper finds that this recovers the accuracy SSD loses at small widths, at an O(T) extra cost,
# and that both SSD models train faster than the attention model SASRec. This notebook shows
# the data (MovieLens-100K with timestamps, RecBole's protocol), trains TiM4Rec, SSD4Rec (the
# time branch off) and SASRec with the suite's training loop (early stopping on validation
# NDCG@10, test metrics of the best validation step), reads the seeds table if one was run, and
# plots the train-step time against the sequence length.
#
# `SMOKE = True` (the default, and what CI runs) trains the tiny `*/smoke` presets on synthetic
# timed sequences for a few seconds each and times short sequences only; `False` trains the
# `*/ml100k` presets (up to ~30 min each on 2 CPU cores; needs the `recbole` wheel, installed
# with `--no-deps`) and runs the whole benchmark (a few minutes).

# %%
# Install (Colab / a fresh TPU VM): the repository root holds pyproject.toml.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("efficient") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", ".."])

SMOKE = True

# %%
import dataclasses
import pathlib
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from efficient.data import RecSysDataConfig, load_sequences, recsys_dataset_info
from efficient.train import read_metrics
from experiments import recommendation_table
from experiments.benches import BenchArgs
from experiments.benches import tim4rec as tim4rec_bench
from experiments.registry import presets

print(jax.devices())

# %% [markdown]
# ## The data
# MovieLens-100K as the `recbole` wheel ships it, filtered 5-core, each user's ratings in time
# order; every interaction but the first is a next-item example whose history is the (at most
# 50) interactions before it. The last example of each user is the test example, the one before
# it the validation example. Without the wheel the synthetic twin stands in (its next item
# depends on whether the last time gap was a minute or a day, so time-awareness can help there).

# %%
try:
    data = RecSysDataConfig(source="ml-100k")
    info = recsys_dataset_info(data)
except FileNotFoundError as missing:
    print(f"MovieLens-100K not installed ({missing}); synthetic data instead.")
    data = RecSysDataConfig(source="synthetic")
    info = recsys_dataset_info(data)
for key, value in info.items():
    print(f"{key:>20}: {value:,.4g}" if isinstance(value, float) else f"{key:>20}: {value}")

sequences, _ = load_sequences(data)
lengths = np.diff(sequences.offsets)
starts = sequences.offsets[:-1]
seconds = sequences.timestamps.astype(np.float64) * (sequences.time_max - sequences.time_min)
gaps = np.diff(seconds)
gaps = np.delete(gaps, starts[1:] - 1)  # drop the gaps between one user and the next
print(f"{np.mean(gaps == 0):.0%} of consecutive interactions share their timestamp")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.5))
ax0.hist(lengths, bins=50)
ax0.set(xlabel="interactions per user", ylabel="users", yscale="log")
ax0.axvline(data.max_len + 1, color="C1", ls="--", label=f"history cut at T = {data.max_len}")
ax0.legend()
ax1.hist(np.log10(gaps[gaps > 0]), bins=60)
ax1.set(xlabel="log10 time gap (seconds, non-zero gaps)", ylabel="pairs")
fig.suptitle(f"{info['source']}: {info['num_users']} users, {info['num_items']} items")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Training: TiM4Rec, SSD4Rec and SASRec with one recipe
# Softmax cross-entropy over all items, Adam at lr 1e-3, validation NDCG@10 (full ranking)
# picks the best step and stops the run early; the test metrics are those of the best step's
# parameters. The same presets run from the shell: `python -m experiments.run tim4rec/ml100k`.

# %%
suffix = "smoke" if SMOKE else "ml100k"
runs = {}
for family in ("tim4rec", "ssd4rec", "sasrec"):
    name = f"{family}/{suffix}"
    preset = presets()[name]
    workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
    config = dataclasses.replace(
        preset.config, train=dataclasses.replace(preset.config.train, progress=not SMOKE)
    )
    summary = preset.run(config, workdir)
    runs[name] = (summary, read_metrics(workdir / "metrics.jsonl"))
    print(f"{name}: {summary['num_params']:,} parameters, best step {summary['best_step']}, "
          f"stopped by {summary['stop_reason']}, {summary['wall_time_s']:.0f} s")  # fmt: skip

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for (name, (summary, records)), color in zip(runs.items(), ("C0", "C1", "C2"), strict=True):
    train_rows = [r for r in records if r["split"] == "train"]
    eval_rows = [r for r in records if r["split"] == "eval"]
    axes[0].plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], color=color,
                 label=f"{name} train")  # fmt: skip
    axes[0].plot([r["step"] for r in eval_rows], [r["loss"] for r in eval_rows], "o--",
                 color=color, label=f"{name} validation")  # fmt: skip
    axes[1].plot([r["step"] for r in eval_rows], [r["ndcg@10"] for r in eval_rows], "o-",
                 color=color, label=name)  # fmt: skip
    axes[1].axvline(summary["best_step"], color=color, ls=":", alpha=0.6)
axes[0].set(xlabel="step", ylabel="cross-entropy (nats)")
axes[1].set(xlabel="step", ylabel="validation NDCG@10 (dotted: best step)")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The metric table
# Test HR, NDCG and MRR at 10 and 20 of the best validation step. `python -m
# experiments.recommendation_table` runs the three ML-100K presets over 3 seeds (resumable) and
# writes `runs/seeds/recommendation_table.md`; that table is shown when it exists, else the table of
# the runs above (one seed each).

# %%
root = pathlib.Path(recommendation_table.__file__).resolve().parents[1]
saved = root / recommendation_table.RUNS_DIR / "recommendation_table.md"
if saved.exists():
    print(f"from {saved.relative_to(root)}:")
    display(Markdown(saved.read_text()))
else:
    print(f"no {saved.relative_to(root)} yet; the runs of this notebook (one seed each):")
    display(Markdown(recommendation_table.markdown_table({n: [s] for n, (s, _) in runs.items()})))

# %% [markdown]
# ## Train-step time against the sequence length
# `python -m experiments.bench tim4rec` times one training step (forward, backward, Adam) of
# the ML-100K models at T = 50, 200, 1000 and 4000 with B x T = 4,000 positions per step on CPU
# (102,400, the paper's batch of 2,048 x 50, on a GPU or TPU), and reads XLA's memory estimate of
# each; rows whose estimate exceeds the free memory (host or device) are compiled but not run.
# Beside TiM4Rec, SSD4Rec and SASRec it times `tim4rec_nomlp`: TiM4Rec without the reference's
# two L x L position MLPs (`position_mlp=False`, not the reference), whose time branch is linear
# in T. The models of one length are timed side by side, one step of each per round in shuffled
# order, so the time branch's cost over SSD4Rec is a median of per-round ratios with a 95%
# bootstrap interval: a slow spell of the machine hits every model of a round alike.
# In smoke mode only T = 50 and 200 at batch 4, one timed call each: the shape of the curves, not
# figures to quote.

# %%
lengths_run = (50, 200) if SMOKE else tim4rec_bench.LENGTHS
models = tuple(f"{f}_{T}" for T in lengths_run for f in tim4rec_bench.FAMILIES)
args = BenchArgs(
    models=models,
    batch=4 if SMOKE else None,
    repeats=1 if SMOKE else None,
    warmup=0 if SMOKE else None,
    out=pathlib.Path(tempfile.mkdtemp()) / "tim4rec.jsonl",
)
results = list(tim4rec_bench.run(args))
tim4rec_bench.report(results, args)
for r in results:
    if not r.lower_only:
        print(f"{r.extra['model']:>14}: {r.median_ms:8.1f} ms, {r.memory.total_bytes / 2**20:7.1f} "
              "MiB (XLA estimate)")  # fmt: skip
display(tim4rec_bench.scaling_figure(results))

# %% [markdown]
# Saved benchmark results (`runs/bench/tim4rec.jsonl`, written by the command above) are
# plotted too when present, each figure labelled with its device.

# %%
saved_bench = root / "runs" / "bench" / "tim4rec.jsonl"
if saved_bench.exists():
    from efficient.bench import read_jsonl

    display(tim4rec_bench.scaling_figure(read_jsonl(saved_bench)))
else:
    print("no runs/bench/tim4rec.jsonl yet")
