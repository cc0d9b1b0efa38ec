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
# # LaCT: large-chunk test-time training
#
# *Test-Time Training Done Right* (Zhang et al. 2025, arXiv:2505.23884). A LaCT layer keeps, per
# head, a small SwiGLU network f_W(x) = W1 [SiLU(W0 x) ⊙ (W2 x)] as its state ("fast weights")
# and trains it **while reading the sequence**: once per chunk of tokens it takes a gradient step
# on the dot-product loss -f_W(k)ᵀv of the chunk's keys and values (optionally with momentum and
# Muon), and the next chunk's queries read the updated network. Updating once per *large* chunk
# (thousands of tokens) instead of per token turns the update into big matmuls, which is the
# paper's point. This notebook
#
# 1. shows the fast weights learning within a sequence (key-value recall, `efficient.nn.lact`);
# 2. measures the core's hardware utilisation against chunk size (`python -m experiments.bench
#    lact`);
# 3. plots per-position validation loss of the LaCT LM next to a full-attention and a
#    sliding-window transformer (the paper's Figure 5 form).
#
# `SMOKE = True` (the default, and what CI runs) uses tiny shapes and smoke runs (a few minutes
# on 2 CPU cores); `False` runs the full utilisation bench and, where `runs/` has no results
# yet, the three 30-minute KJV presets.

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
import jax.numpy as jnp
import matplotlib.pyplot as plt
from IPython.display import display

from efficient.bench import read_jsonl
from efficient.nn.lact import FastWeights, lact
from experiments import bench
from experiments.benches import lact as lact_bench
from experiments.language_modeling import (
    SampleConfig,
    format_per_position,
    latest_per_position,
    plot_per_position,
    train_and_sample,
)
from experiments.registry import presets

ROOT = pathlib.Path(bench.__file__).resolve().parents[1]  # the repository (runs/ lives there)
print(jax.devices())

# %% [markdown]
# ## 1. The layer on a toy: key-value recall within one sequence
# A sequence of 2N tokens: the first chunk *writes* N random key-value pairs (keys k_i and
# values v_i are random unit vectors in d = 64 dimensions, queries unused), the second chunk
# *reads*: its queries are the same keys in shuffled order. With apply-then-update (the causal
# order), chunk 2 is read by the weights after one update on chunk 1, so the fast network should
# return v_i for query k_i. We score recall as the fraction of queries whose output is closest
# (dot product) to the right value among the N values. The initial fast weights are random, so
# before the update (or when the whole sequence is one chunk: nothing is updated before it is
# read) recall is at chance, 1/N.


# %%
def recall(n_pairs, *, lr, muon=False, chunk=None, d=64, seed=0):
    """Fraction of the N reads whose output is nearest to the value written with their key."""
    keys = jax.random.split(jax.random.key(seed), 6)

    def unit(key):
        x = jax.random.normal(key, (n_pairs, d))
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    k_write, v_write = unit(keys[0]), unit(keys[1])
    order = jax.random.permutation(keys[2], n_pairs)
    zeros = jnp.zeros((n_pairs, d))
    q = jnp.concatenate([zeros, k_write[order]])  # [2N, d]: reads in the second chunk
    k = jnp.concatenate([k_write, zeros])  # writes in the first chunk
    v = jnp.concatenate([v_write, zeros])
    w0 = FastWeights(*(jax.random.normal(key, (d, d)) / d**0.5 for key in keys[3:]))
    eta = jnp.full((2 * n_pairs, 3), lr)
    out = lact(q, k, v, eta, w0, chunk_size=chunk or n_pairs, muon=muon)[n_pairs:]  # [N, d]
    return float(jnp.mean(jnp.argmax(out @ v_write.T, -1) == order))


sizes = [4, 8, 16, 32, 64, 128] if SMOKE else [4, 8, 16, 32, 64, 128, 256, 512]
curves = {
    "gradient step (η = 10)": [recall(n, lr=10.0) for n in sizes],
    "gradient step + Muon (η = 1)": [recall(n, lr=1.0, muon=True) for n in sizes],
    "one chunk of 2N (no update before the reads)": [
        recall(n, lr=10.0, chunk=2 * n) for n in sizes
    ],
}
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for label, accuracy in curves.items():
    ax.plot(sizes, accuracy, "o-", label=label)
ax.plot(sizes, [1 / n for n in sizes], ":", color="gray", label="chance, 1/N")
ax.set(xscale="log", xlabel="pairs written in the first chunk (N)", ylabel="recall accuracy",
       title="fast weights (d = 64) after one update")  # fmt: skip
ax.set_xticks(sizes, [str(n) for n in sizes])
ax.set_xticks([], minor=True)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# One gradient step stores the pairs: recall is perfect for small N and falls as N approaches
# and passes d, where the keys' hidden features interfere. Muon replaces the raw (momentum)
# update by its orthogonal polar factor (Newton-Schulz), which equalises the update's singular
# values, and degrades later: the paper's reason for using it as the online optimizer. Queries
# in the same chunk as the writes see none of them (apply-then-update), so that curve sits at
# chance.

# %% [markdown]
# ## 2. Utilisation against chunk size
# The bench times the forward of the fast-weight core (apply + update per chunk, momentum and
# weight norm on) over the same tokens at each chunk size and divides its achieved FLOP/s (the
# paper's count, 18·n·d² per token, and XLA's) by that of one large `jnp.dot` timed right before
# it. `SMOKE` runs tiny quick entries (d = 32: far from the paper's shapes); `False` runs chunk
# 1 .. 4096 at d = 384 (the 760M LM's TTT head), a few minutes on 2 CPU cores.

# %%
out = pathlib.Path(tempfile.mkdtemp()) / "lact.jsonl"
util_models = ["quick_c16", "quick_c64"] if SMOKE else [f"util_c{c}" for c in lact_bench.CHUNKS]
args = ["lact", "--models", ",".join(util_models), "--out", str(out)]
bench.main(args + (["--repeats", "2", "--warmup", "1"] if SMOKE else []))
display(lact_bench.utilisation_figure(read_jsonl(out)))

# %% [markdown]
# Results saved by earlier full runs (`python -m experiments.bench lact`, appended to
# `runs/bench/lact.jsonl`), if any:

# %%
saved = ROOT / "runs" / "bench" / "lact.jsonl"
if saved.exists():
    display(lact_bench.utilisation_figure(read_jsonl(saved)))
else:
    print(f"no {saved.relative_to(ROOT)} yet: run `python -m experiments.bench lact`")

# %% [markdown]
# ## 3. Per-position validation loss: does LaCT use context beyond its window?
# `lact/kjv` trains the LaCT LM (3.47M parameters, attention window = chunk = 64) on byte-level
# KJV at T = 512, next to `transformer/kjv_long` (full attention) and `transformer/kjv_swa`
# (attention window 64), all with the same parameter count, data and steps. Each run ends by
# scoring the validation split per 64-position bucket. A curve that keeps falling with position
# uses the earlier context; a sliding-window model's attention alone reaches 63 positions back
# per layer (252 through 4 layers).
#
# Curves come from `runs/` when those presets have completed runs there; otherwise `SMOKE` trains
# tiny stand-ins on synthetic text (T = 64, window 8, chunk 16; a few seconds each: a check that
# the pipeline works, not evidence) and `False` trains the real presets (~30 min each).


# %%
def label(model):
    """A legend entry naming the model's window (and chunk)."""
    window = model.sliding_window
    if hasattr(model, "chunk_size"):
        return f"LaCT (window {window}, chunk {model.chunk_size})"
    return "transformer, full attention" if window is None else f"transformer, window {window}"


trio = ("lact/kjv", "transformer/kjv_long", "transformer/kjv_swa")
table = presets()
found = {name: latest_per_position(name, ROOT / "runs") for name in trio}
if all(found.values()):
    print("per-position curves from runs/")
    models = {name: table[name].config.model for name in trio}
    position_curves = {label(models[name]): curve for name, curve in found.items()}
    windows = {label(m): m.sliding_window for m in models.values() if m.sliding_window}
else:
    smoke_models = {
        "lact/kjv": table["lact/smoke"].config.model,
        "transformer/kjv_long": table["transformer/smoke"].config.model,
        "transformer/kjv_swa": dataclasses.replace(
            table["transformer/smoke"].config.model, sliding_window=8
        ),
    }
    position_curves, windows = {}, {}
    for name in trio:
        config = table[name].config
        if SMOKE:  # lact/smoke's recipe (T = 64, buckets of 16) with each stand-in model
            config = dataclasses.replace(
                table["lact/smoke"].config,
                model=smoke_models[name],
                sample=SampleConfig(max_new_tokens=0),
            )
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, progress=not SMOKE)
        )
        workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
        result, _ = train_and_sample(config, workdir)
        position_curves[label(config.model)] = result.summary["per_position_eval"]
        if config.model.sliding_window:
            windows[label(config.model)] = config.model.sliding_window
for name, curve in position_curves.items():
    print(f"{name}: {format_per_position(curve)}")
fig, ax = plt.subplots(figsize=(7, 4))
plot_per_position(position_curves, ax=ax, windows=windows)
plt.show()
