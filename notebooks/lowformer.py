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
# # LowFormer: hardware-efficient conv + attention backbone
#
# *LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones*
# (Nottebaum et al., WACV 2025, arXiv:2409.03460).
#
# This notebook builds the paper's B0-B3 models from `efficient`, checks their parameter counts
# against the paper, folds BatchNorm for inference, and trains the Fashion-MNIST adaptation of
# B0 with the suite's one training loop. `SMOKE = True` (the default, and what CI runs) trains
# the tiny smoke preset for a few seconds; set it to `False` for the real run (~25 min on 2 CPU
# cores, seconds on a GPU).

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
import numpy as np

from efficient.models.lowformer import LowFormer, LowFormerConfig, fold_batch_norm
from efficient.train import read_metrics
from experiments.registry import presets

print(jax.devices())

# %% [markdown]
# ## The paper's models: parameter counts at 224 px, 1000 classes
# `jax.eval_shape` gives the parameter shapes without allocating any weights.

# %%
paper_params = {"b0": 14.1, "b1": 17.9, "b15": 33.9, "b3": 57.1}  # README table, millions
for name, expected in paper_params.items():
    model = LowFormer(getattr(LowFormerConfig, name)())
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x, train=False), images)
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
    print(f"{name}: {count / 1e6:.3f}M parameters (paper {expected}M)")

# %% [markdown]
# ## BatchNorm folding: the inference form computes the same function

# %%
config = LowFormerConfig.smoke()
model = LowFormer(config)
images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
variables = model.init(jax.random.key(0), images, train=False)
_, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
variables = {"params": variables["params"], **updated}  # non-trivial running statistics
folded_model = LowFormer(dataclasses.replace(config, fold_bn=True))
reference = model.apply(variables, images, train=False)
folded = folded_model.apply(fold_batch_norm(variables), images, train=False)
print("max |folded - unfolded| =", float(jnp.max(jnp.abs(folded - reference))))

# %% [markdown]
# ## Train on Fashion-MNIST with the suite's training loop
# The same preset runs from the shell: `python -m experiments.run lowformer/fashion_mnist`.

# %%
name = "lowformer/smoke" if SMOKE else "lowformer/fashion_mnist"
preset = presets()[name]
workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
train_config = dataclasses.replace(preset.config.train, progress=not SMOKE)
summary = preset.run(dataclasses.replace(preset.config, train=train_config), workdir)
print(summary["final_eval"])

# %%
records = read_metrics(workdir / "metrics.jsonl")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for split, style in (("train", "-"), ("eval", "o-")):
    rows = [r for r in records if r["split"] == split]
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], style, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend()
fig.suptitle(name)
plt.show()
