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
# # NoLoCo vs DiLoCo: training without an all-reduce
#
# DiLoCo (Douillard et al., arXiv:2311.08105) lets R replicas take H inner AdamW steps on their
# own data, then averages their progress over all replicas (an all-reduce) and takes an outer
# Nesterov step. NoLoCo (Kolehmainen et al., arXiv:2506.10911) replaces that all-reduce with an
# average inside random pairs, so one sync is one exchange with one peer whatever R is. Here:
# the algorithm on a toy (replicas that each see a different quadratic), the random pairings,
# and the KJV transformer trained by data parallelism, DiLoCo and NoLoCo at equal tokens, with
# validation loss against the bytes each device sends (read from the compiled step).
#
# `SMOKE = True` (the default, and what CI runs) trains a tiny transformer on synthetic text for
# a few steps per method; `False` reads (or trains, ~20-40 min each on 2 CPU cores)
# `runs/noloco_kjv/{dataparallel,diloco,noloco}`.

# %%
# Install (Colab / a fresh TPU VM): the repository root holds pyproject.toml.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("efficient") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", ".."])
# 8 simulated CPU devices for the 8 replicas (set before jax starts; a real accelerator mesh
# needs nothing).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

SMOKE = True

# %%
import dataclasses
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from IPython.display import Image, Markdown, display

from efficient.models.transformer import TransformerConfig
from efficient.optim import diloco, noloco
from efficient.optim.pairing import pairings
from experiments import language_modeling, noloco_report
from experiments import noloco as noloco_experiment

print(jax.devices())

# %% [markdown]
# ## The algorithm on a toy
#
# Replica i minimises its own f_i(θ) = ½‖θ - c_i‖² with SGD; the consensus optimum is the mean
# of the c_i. Every H = 5 inner steps the outer step runs: DiLoCo averages over all 8 replicas,
# NoLoCo over random pairs. `jax.vmap(..., axis_name="replica")` stands in for the devices
# (the training loop uses `jax.shard_map` over the mesh's `replica` axis; the optimizer code is
# the same).

# %%
R, DIM, H, SYNCS = 8, 2, 5, 30
centres = jax.random.normal(jax.random.key(0), (R, DIM)) * 3.0
optimum = centres.mean(0)


def run_toy(tx):
    params = jnp.zeros((R, DIM))
    state = jax.vmap(tx.init)(params)
    update = jax.jit(jax.vmap(tx.update, axis_name="replica"))
    spread, error = [], []
    for _ in range(H * SYNCS):
        grads = params - centres  # each replica's own gradient
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        spread.append(float(jnp.linalg.norm(params - params.mean(0), axis=1).mean()))
        error.append(float(jnp.linalg.norm(params.mean(0) - optimum)))
    return np.asarray(spread), np.asarray(error)


methods = {
    "DiLoCo (all-reduce)": diloco(
        optax.sgd(0.1), sync_period=H, outer_learning_rate=0.7, outer_momentum=0.9
    ),
    "NoLoCo (random pairs)": noloco(
        optax.sgd(0.1), sync_period=H, outer_learning_rate=0.7, outer_momentum=0.5
    ),
}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, tx in methods.items():
    spread, error = run_toy(tx)
    axes[0].plot(spread, label=name)
    axes[1].semilogy(error + 1e-12, label=name)
axes[0].set(xlabel="inner step", ylabel="mean distance to the replica mean",
            title="replicas drift on their own data, syncs pull them together")  # fmt: skip
axes[1].set(xlabel="inner step", ylabel="‖mean θ - consensus optimum‖",
            title="the replica mean converges either way")  # fmt: skip
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# NoLoCo's pairs: the t-th sync uses the official code's `default_rng((t + 1) H).permutation(R)`
# dealt into groups of 2, so every replica knows every pairing without talking. Over a few syncs
# the pairs connect everyone, which is why gossip still mixes the replicas.

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for t, ax in enumerate(axes):
    groups = pairings(R, 2, (t + 1) * H)
    matrix = np.zeros((R, R))
    for a, b in groups:
        matrix[a, b] = matrix[b, a] = 1
    ax.imshow(matrix, cmap="Greys")
    ax.set_title(f"sync {t}: " + " ".join(f"{a}-{b}" for a, b in groups), fontsize=8)
    ax.set_xticks(range(R))
    ax.set_yticks(range(R))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The KJV transformer on 8 replicas: loss against bytes sent
#
# The three presets share `transformer/kjv`'s model, data and recipe; only the optimizer across
# replicas differs. Each run's summary holds what one device sends per step, counted from the
# collectives of its compiled train step (an all-reduce of the gradients every step; DiLoCo's
# all-reduce of the weights every H steps; NoLoCo's collective-permutes every H steps).

# %%
runs_dir = pathlib.Path("../runs/noloco_kjv")
if SMOKE:
    runs_dir = pathlib.Path(tempfile.mkdtemp()) / "noloco_kjv"
    smoke = language_modeling.smoke(TransformerConfig.smoke())
    for method in noloco_experiment.METHODS:
        config = noloco_experiment.kjv_replicas(method)
        outer = config.train.outer and dataclasses.replace(config.train.outer, sync_period=5)
        train = dataclasses.replace(config.train, steps=20, log_every=5, eval_every=5,
                                    checkpoint_every=20, outer=outer, progress=False)  # fmt: skip
        config = dataclasses.replace(
            config, model=smoke.model, data=dataclasses.replace(smoke.data, batch_size=16),
            train=train, sample=dataclasses.replace(smoke.sample, max_new_tokens=0),
        )  # fmt: skip
        language_modeling.run(config, runs_dir / method)
else:
    for method in noloco_experiment.METHODS:
        if not (runs_dir / method / "summary.json").exists():
            config = noloco_experiment.kjv_replicas(method)
            language_modeling.run(config, runs_dir / method, resume=(runs_dir / method).exists())

noloco_report.main(["--runs-dir", str(runs_dir)])
display(Markdown((runs_dir / "noloco_report.md").read_text()))
for name in ("loss_vs_step", "loss_vs_bytes", "sync_time"):
    display(Image(filename=str(runs_dir / f"{name}.png")))
