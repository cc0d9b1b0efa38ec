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
# # KAT and FlashKAT: group-rational activations in place of the ViT's MLP
#
# *Kolmogorov-Arnold Transformer* (KAT, Yang & Wang, arXiv:2409.10594) replaces each MLP of a
# ViT with a GR-KAN block: KAN layers whose learnable edge functions are rational functions
# P(x) / Q(x) (cheap on GPUs, unlike B-splines), shared by groups of channels (G = 8: a few dozen
# coefficients per layer instead of a function per edge), initialised to fit a classic activation
# and with variance-preserving weights. KAT-T/S/B reach 74.6/81.2/82.3% ImageNet-1k top-1 from
# scratch (the authors' README), above DeiT-Ti/S/B of the same sizes (72.2/79.8/81.8%, DeiT
# Table 1). *FlashKAT* (arXiv:2505.13813) finds that KAT trains
# about 123x slower than a ViT of similar FLOPs, because the backward pass accumulates the
# coefficient gradients with contended atomic adds; summing per tile first makes training up to
# 86.5x faster. The op here, `pallas_kernels.rational.group_rational`, uses no atomics at all:
# per-tile partial sums reduced in a fixed order, so the gradients are bitwise reproducible.
#
# This notebook evaluates the function and its init presets, the variance-preserving gains, the
# deterministic gradients, trains KAT next to a ViT of the same size, and plots the op's timing.
# `SMOKE = True` (the default, and what CI runs) trains `kat/smoke` and `vit/smoke` for a few
# seconds each and runs a quick CPU benchmark; `False` trains `kat/fashion_mnist` and
# `vit/fashion_mnist` (hours on 2 CPU cores; meant for an accelerator) and the full benchmark.

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
import json
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from efficient.models.kat import KAT, KATConfig
from efficient.models.vit import ViT, ViTConfig
from efficient.nn import GRKAN
from efficient.train import read_metrics
from experiments.registry import presets
from pallas_kernels.rational import (
    PRESETS,
    VARIANCE_GAINS,
    BlockSizes,
    bench,
    group_rational,
    group_rational_reference,
    init_coefficients,
    variance_gain,
)

print(jax.devices())

# %% [markdown]
# ## The function
#
# $$F(x) = \frac{\sum_{i=0}^{5} a_i x^i}{1 + \sum_{j=1}^{4} |b_j|\,|x|^j}$$
#
# This is the form of KAT's released CUDA/Triton kernels (the paper's fitting code uses the
# "safe PAU" denominator 1 + |b_1 x + ... + b_4 x^4| instead; see the op's README). Channel c of
# the last axis (width D) is in group c // (D / G); KAT shares one numerator across the groups and
# gives each group its own denominator. Below: the jnp reference, the XLA path (the CPU default)
# and the Pallas kernel in interpret mode against the formula in float64 numpy, with G = 4 groups
# of random coefficients.

# %%
rng = np.random.default_rng(0)
G, D = 4, 64
x = jnp.asarray(rng.standard_normal((32, D)) * 2, jnp.float32)
numerator = jnp.asarray(rng.standard_normal((1, 6)) * 0.5, jnp.float32)  # shared, as KAT
denominator = jnp.asarray(rng.standard_normal((G, 4)) * 0.5, jnp.float32)  # one row per group

x64, a, b = np.asarray(x, np.float64), np.asarray(numerator, np.float64)[0], np.asarray(denominator)
group = np.arange(D) // (D // G)  # [D]
p = sum(a[i] * x64**i for i in range(6))
q = 1 + sum(np.abs(b[group, j - 1]) * np.abs(x64) ** j for j in range(1, 5))
exact = p / q
print(f"max |F| = {np.max(np.abs(exact)):.2f}")
candidates = {
    "reference (jnp)": group_rational_reference(x, numerator, denominator),
    "group_rational, xla": group_rational(x, numerator, denominator, implementation="xla"),
    "group_rational, interpret": group_rational(
        x, numerator, denominator, implementation="interpret"
    ),
}
for name, y in candidates.items():
    print(
        f"{name:>26}: max |F - float64| = {np.max(np.abs(np.asarray(y, np.float64) - exact)):.1e}"
    )

# %% [markdown]
# ## Init presets against their targets
# Each preset is a least-squares fit of a classic activation on [-3, 3] (identity: exact, on
# [-20, 20]), with the values of the authors' `init.json`. The max error is measured here under
# the kernel form with `group_rational` in float32. Note "gelu": its coefficients were fitted for
# the safe-PAU form and are far from a GELU under the kernels' form; "gelu_old" is the usable GELU.
# KAT's blocks use "identity" (before fc1) and "swish" (before fc2).

# %%
targets = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "leaky_relu_0.1": lambda x: jax.nn.leaky_relu(x, 0.1),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_old": lambda x: jax.nn.gelu(x, approximate=False),
    "swish": jax.nn.silu,
}
fig, axes = plt.subplots(3, 3, figsize=(12, 9))
print(f"{'preset':>15} {'interval':>12} {'fitted for':>10} {'stated max err':>15} {'measured':>9}")
for ax, (name, target) in zip(axes.flat, targets.items(), strict=True):
    preset = PRESETS[name]
    num, den = init_coefficients(name, 1)
    grid = jnp.linspace(*preset.interval, 6001, dtype=jnp.float32)
    fitted = group_rational(grid[:, None], num, den)[:, 0]
    error = float(jnp.max(jnp.abs(fitted - target(grid))))
    print(
        f"{name:>15} {str(preset.interval):>12} {preset.fit_form:>10} "
        f"{preset.max_fit_error:>15.2g} {error:>9.2g}"
    )
    ax.plot(grid, target(grid), color="gray", lw=3, alpha=0.5, label="target")
    ax.plot(grid, fitted, color="C0", lw=1, label="rational")
    ax.set_title(f"{name}: max err {error:.2g}", fontsize=10)
axes[0, 0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Variance-preserving gains
# KAT §4.3: initialise the layer after an activation F with variance gain / fan_in, where
# gain = sigma^2 / E[F(x)^2] for x ~ N(0, sigma^2), so activations keep unit scale through depth.
# The authors computed the gains by Monte Carlo (`VARIANCE_GAINS`, for swish and GELU);
# `variance_gain` computes them by deterministic quadrature under the kernel form; a Monte Carlo
# estimate through `group_rational` agrees to within 1%.

# %%
samples = jax.random.normal(jax.random.key(0), (1_000_000, 8))
# The authors' GELU gain was computed with their "gelu" fit under the safe-PAU form, where it is a
# GELU; under the kernel form the GELU preset is "gelu_old".
for name, authors in (("identity", None), ("swish", "swish"), ("gelu_old", "gelu")):
    num, den = init_coefficients(name, 8)
    monte_carlo = 1.0 / float(jnp.mean(group_rational(samples, num, den) ** 2))
    stated = f"{VARIANCE_GAINS[authors]:.4f} ({authors})" if authors else "1 (linear)"
    print(
        f"{name:>9}: authors' gain {stated}, quadrature {variance_gain(name):.4f}, "
        f"Monte Carlo through group_rational {monte_carlo:.4f}"
    )

# %% [markdown]
# The effect on a stack of GR-KAN blocks (`efficient.nn.GRKAN`: identity rational -> fc1 ->
# swish rational -> fc2, D = 192, F = 768, no residual connections): with
# `fc_init="variance_preserving"` the second moment of the activations stays near 1 through the
# stack; with the trunc_normal(0.02) init that the authors' code ends up using (see
# efficient/models/kat/README.md) it shrinks by two orders of magnitude per block. In the
# transformer the residual stream and LayerNorm mask this, which is why the released models train.

# %%
inputs = jax.random.normal(jax.random.key(1), (1024, 192))
fig, ax = plt.subplots(figsize=(6, 3.5))
for fc_init in ("variance_preserving", "trunc_normal"):
    block = GRKAN(mlp_dim=768, fc_init=fc_init)
    h, moments = inputs, [float(jnp.mean(inputs**2))]
    for layer in range(6):
        params = block.init(jax.random.key(10 + layer), h)
        h = block.apply(params, h)
        moments.append(float(jnp.mean(h**2)))
    print(f"{fc_init:>19}: E[h^2] per block", " ".join(f"{m:.2g}" for m in moments))
    ax.semilogy(moments, "o-", label=fc_init)
ax.set_xlabel("GR-KAN blocks")
ax.set_ylabel("E[h^2]")
ax.legend()
plt.show()

# %% [markdown]
# ## Deterministic coefficient gradients (FlashKAT's backward, without atomics)
# Each program of the backward kernel writes dx for its tile and the ten per-column partial sums
# of its tile; the wrapper reduces them in a fixed tree order. Two runs of the jitted gradient
# (with the compilation cache cleared in between) are bitwise equal; the XLA path agrees to
# float32 rounding.

# %%
x = jax.random.normal(jax.random.key(2), (64, 64))
cotangent = jax.random.normal(jax.random.key(3), (64, 64))
numerator, denominator = init_coefficients("swish", 8)


def gradients(implementation):
    blocks = BlockSizes(block_rows=16, block_d=64) if implementation == "interpret" else None

    @jax.jit
    def run(x, numerator, denominator, cotangent):
        def op(x, numerator, denominator):
            return group_rational(
                x, numerator, denominator, implementation=implementation, block_sizes=blocks
            )

        return jax.vjp(op, x, numerator, denominator)[1](cotangent)

    return run(x, numerator, denominator, cotangent)


first = gradients("interpret")
jax.clear_caches()
second = gradients("interpret")
xla = gradients("xla")
for name, g1, g2, g3 in zip(("dx", "da", "db"), first, second, xla, strict=True):
    relative = float(jnp.max(jnp.abs(g1 - g3)) / jnp.max(jnp.abs(g3)))
    print(
        f"{name}: run 1 == run 2 bitwise: {bool(jnp.array_equal(g1, g2))}; "
        f"max relative difference to the XLA path {relative:.1e}"
    )

# %% [markdown]
# ## KAT vs ViT
# KAT is the ViT with GR-KAN blocks as MLPs; the rationals add 2 x (6 + 4 G) coefficients per
# block, 912 in a 12-block model. Parameter counts of the paper's sizes (224 px, 1000 classes),
# from `jax.eval_shape` (no weights allocated):

# %%
images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


def count(model):
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))


pairs = (
    ("KAT-T", KATConfig.tiny(), ViTConfig.deit_tiny(), 5.7),
    ("KAT-S", KATConfig.small(), ViTConfig.deit_small(), 22.1),
)
for name, kat_config, vit_config, paper in pairs:
    kat_params, vit_params = count(KAT(kat_config)), count(ViT(vit_config))
    print(
        f"{name}: {kat_params:,} parameters (paper {paper}M); the ViT of its size "
        f"{vit_params:,}; difference {kat_params - vit_params}"
    )

# %% [markdown]
# Both models trained with the same recipe (the KAT presets are built from the ViT ones, so only
# the MLPs differ). In smoke mode (30 steps on synthetic images) the two curves nearly coincide:
# at initialisation a GR-KAN block is a swish MLP, close to the ViT's GELU MLP. The comparison
# that tests the paper's claim is `SMOKE = False` (Fashion-MNIST, DeiT-Ti size). The same presets
# run from the shell: `python -m experiments.run kat/fashion_mnist` and `vit/fashion_mnist`.

# %%
runs = {}
for model_name in ("kat", "vit"):
    name = f"{model_name}/smoke" if SMOKE else f"{model_name}/fashion_mnist"
    preset = presets()[name]
    workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
    train_config = dataclasses.replace(preset.config.train, progress=not SMOKE)
    summary = preset.run(dataclasses.replace(preset.config, train=train_config), workdir)
    runs[name] = (summary, read_metrics(workdir / "metrics.jsonl"))

step_time = {}
for name, (summary, records) in runs.items():
    # The first logged interval includes compilation: time per step from the later ones.
    rates = [r["steps_per_s"] for r in records if r["split"] == "train"][1:]
    step_time[name] = 1e3 / float(np.median(rates))
    print(
        f"{name:>20}: {summary['num_params']:,} parameters, final eval {summary['final_eval']}, "
        f"{step_time[name]:.1f} ms / train step"
    )
kat_name, vit_name = runs
print(f"train-step time KAT / ViT: {step_time[kat_name] / step_time[vit_name]:.2f}x")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for (name, (_, records)), color in zip(runs.items(), ("C0", "C1"), strict=True):
    for split, style in (("train", "-"), ("eval", "o--")):
        rows = [r for r in records if r["split"] == split]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            steps, values = [r["step"] for r in rows], [r[key] for r in rows]
            ax.plot(steps, values, style, color=color, label=f"{name} {split}")
for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Timing: the rational against GELU
# `python -m pallas_kernels.rational.bench` times the op at KAT's MLP shapes (B = 128, T = 197,
# D = 192 ... 3072, G = 8) against `jax.nn.gelu` on the same tensor, forward and forward+backward
# (the backward includes the ten coefficient-gradient reductions); on a GPU also the Pallas
# kernel, a copy (the bandwidth yardstick) and a PyTorch autograd version. Here it runs in quick
# mode (B = 8). Saved reports are plotted too, each labelled with its device: `rational*.json`
# under `bench_results/` (local runs, not in git; `tools/gpu_bench.sh` writes
# `bench_results/gpu/`) and `pallas_kernels/rational/results/*.json` (GPU/TPU runs kept in git).

# %%
path = pathlib.Path(tempfile.mkdtemp()) / "rational.json"
bench.main([*(["--quick", "--repeats", "3"] if SMOKE else []), "--out", str(path)])
reports = [("this run", json.loads(path.read_text()))]
here = pathlib.Path(bench.__file__).resolve().parent  # pallas_kernels/rational
root = here.parents[1]
for saved in sorted((root / "bench_results").glob("**/rational*.json")) + sorted(
    (here / "results").glob("*.json")
):
    try:
        reports.append((str(saved.relative_to(root)), json.loads(saved.read_text())))
    except (OSError, ValueError) as error:
        print(f"skipped {saved}: {error}")
print("saved reports:", [name for name, _ in reports[1:]] or "none found")

# %%
for name, report in reports:
    rows = [r for r in report["results"] if "median_ms" in r]
    if not rows:
        continue
    env = report["env"]
    cases = sorted({(r["width"], r["dtype"]) for r in rows})
    implementations = list(dict.fromkeys(r["implementation"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    for ax, mode in zip(axes, ("fwd", "fwd_bwd"), strict=True):
        times = {}
        for r in rows:
            if r["mode"] == mode:
                times[r["width"], r["dtype"], r["implementation"]] = r["median_ms"]
        width = 0.8 / len(implementations)
        gelu = np.array([times.get((*case, "gelu"), np.nan) for case in cases])
        for i, implementation in enumerate(implementations):
            values = np.array([times.get((*case, implementation), np.nan) for case in cases])
            position = np.arange(len(cases)) + (i - (len(implementations) - 1) / 2) * width
            ax.bar(position, values, width, label=implementation)
            for x, ms, ratio in zip(position, values, values / gelu, strict=True):
                if implementation != "gelu" and np.isfinite(ratio):
                    ax.annotate(f"{ratio:.1f}x", (x, ms), fontsize=7, ha="center", va="bottom")
        ax.set_xticks(np.arange(len(cases)), [f"D={w}\n{d}" for w, d in cases])
        ax.set_ylabel("median ms (above the bars: time / gelu's)")
        ax.set_title("forward" if mode == "fwd" else "forward + backward")
        ax.legend(fontsize=8)
    batch = ", ".join(str(b) for b in sorted({r["batch"] for r in rows}))
    fig.suptitle(
        f"{name}: {env.get('device_kind')} ({env.get('platform')}), commit "
        f"{env.get('git_commit')}; B={batch}, T=197, G=8"
    )
    fig.tight_layout()
    plt.show()
