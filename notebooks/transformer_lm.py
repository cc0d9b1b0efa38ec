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
# # The reference transformer: a byte-level language model on the King James Bible
#
# The decoder that the suite's language-model papers (LaCT, Slow-Fast, the FFT-conv LM, NoLoCo)
# build on: Llama / Qwen2 layout (RMSNorm, grouped-query attention with RoPE, SwiGLU), a
# fixed-size KV cache and jitted generation. This notebook inspects the full-size presets without
# allocating them, checks that cached decoding reproduces the full forward, trains a byte-level
# model with the suite's training loop, and samples text from it. `SMOKE = True` (the default,
# and what CI runs) trains the tiny preset on synthetic text for a few seconds; `False` trains
# `transformer/kjv` (~30 min on 2 CPU cores, seconds on a GPU; needs Debian's `bible-kjv`).

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from efficient.models.transformer import Transformer, TransformerConfig, init_cache
from efficient.train import read_metrics
from experiments.language_modeling import SampleConfig, sample_text, train_and_sample
from experiments.registry import presets

print(jax.devices())

# %% [markdown]
# ## Full-size presets, inspected by shape only
# `jax.eval_shape` traces `init` on abstract values: a 7.6B-parameter model costs no memory.

# %%
for name in ("qwen2_7b", "llama_style_100m", "cpu_10m", "smoke"):
    config = getattr(TransformerConfig, name)()
    tokens = jax.ShapeDtypeStruct((1, 16), jnp.int32)
    shapes = jax.eval_shape(lambda t, c=config: Transformer(c).init(jax.random.key(0), t), tokens)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))
    print(f"{name:>17}: {count:>13,} parameters (formula {config.num_params():,})")

# %% [markdown]
# ## Cached decoding computes the same logits as the full forward
# Prefill 8 tokens into a 16-slot cache, then feed the rest one token at a time.

# %%
config = TransformerConfig.smoke(sliding_window=6)
model = Transformer(config)
tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 256, dtype=jnp.int32)
params = nn.unbox(model.init(jax.random.key(1), tokens)["params"])
full = model.apply({"params": params}, tokens)
cache, pieces = init_cache(model, 2, 16), []
for lo, hi in [(0, 8), *[(t, t + 1) for t in range(8, 16)]]:
    logits, mutated = model.apply(
        {"params": params, "cache": cache}, tokens[:, lo:hi], decode=True, mutable=["cache"]
    )
    cache = mutated["cache"]
    pieces.append(logits)
print("max |cached - full| =", float(jnp.max(jnp.abs(jnp.concatenate(pieces, 1) - full))))

# %% [markdown]
# ## Train with the suite's training loop
# The same preset runs from the shell: `python -m experiments.run transformer/kjv`.

# %%
name = "transformer/smoke" if SMOKE else "transformer/kjv"
preset = presets()[name]
workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
config = dataclasses.replace(
    preset.config, train=dataclasses.replace(preset.config.train, progress=not SMOKE)
)
result, trained = train_and_sample(config, workdir)
print(result.summary["final_eval"])

# %%
records = read_metrics(workdir / "metrics.jsonl")
fig, ax = plt.subplots(figsize=(6, 3.5))
for split, style in (("train", "-"), ("eval", "o-")):
    rows = [r for r in records if r["split"] == split]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], style, label=split)
ax.set_xlabel("step")
ax.set_ylabel("loss (nats / byte)")
ax.set_title(name)
ax.legend()
plt.show()

# %% [markdown]
# ## Sample from the trained model
# Greedy decoding and temperature / top-k sampling, jitted with a fixed-size cache.

# %%
prompt = "the " if SMOKE else "And the LORD said"
for temperature in (0.0, 0.8):
    sample = SampleConfig(prompts=(prompt,), max_new_tokens=120, temperature=temperature)
    print(f"temperature {temperature}:", repr(sample_text(trained, result.state.params, sample)[0]))
