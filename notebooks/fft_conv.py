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
# # FlashFFTConv: FFT convolutions as matrix multiplies, and a Hyena language model on them
#
# *FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores* (Fu, Kumbong,
# Nguyen, Ré, arXiv:2311.05908). Long convolutions `y = irfft(rfft(u) * rfft(k))` are the token
# mixer of Hyena, H3 and M2, but an FFT runs far below a GPU's matrix-unit peak and a PyTorch
# convolution moves u through memory several times. The paper writes the FFT as a Monarch
# decomposition (small DFT matrices and twiddles: matmuls), fuses FFT, pointwise product, inverse
# FFT, gating and padding into one kernel, and reports up to 7.93x over PyTorch's `torch.fft`
# convolution on an H100 and 4.4x end to end. Skipping blocks of the decomposition gives two
# cheaper variants: *partial* convolutions (a truncated filter) and *frequency-sparse* ones.
#
# This notebook checks `pallas_kernels.fft_conv.fft_conv` against a `jnp.fft` reference and a
# float64 numpy convolution, shows the gated, partial, frequency-sparse, causal and circular
# forms, plots the benchmark per FFT size, and trains the Hyena LM that uses the op.
# `SMOKE = True` (the default, and what CI runs) takes about a minute on 2 CPU cores: a quick
# CPU benchmark and `hyena/smoke`; `False` runs the full CPU benchmark and `hyena/kjv` (~35 min on
# 2 CPU cores; needs Debian's `bible-kjv`).

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

from efficient.train import read_metrics
from experiments.language_modeling import train_and_sample
from experiments.registry import presets
from pallas_kernels.fft_conv import (
    bench,
    fft_conv,
    fft_conv_reference,
    kept_frequency_mask,
    monarch_factors,
)
from pallas_kernels.fft_conv import vjp as fft_conv_vjp

print(jax.devices())

# %% [markdown]
# ## y equals the jnp.fft reference
# `fft_conv(u [B, H, L], k [H, Lk])` is causal by default: N is the next power of two
# >= L + Lk - 1 (here 1024 = 32 x 32, an order-2 Monarch plan). Three computations of the same
# convolution against `fft_conv_reference` (jnp.fft in float32, the specification) and an
# independent float64 `np.convolve`:
# - `fft_conv(...)` with the default `implementation="auto"`: on CPU that is the XLA path, which
#   runs jnp.fft there because it was measured faster than the Monarch matmuls on CPU;
# - the Monarch decomposition in jnp (`implementation="xla"` on TPU; on GPU too that runs jnp.fft,
#   measured faster there; reached here through `vjp.monarch_conv`, as the benchmark does);
# - the Pallas kernels in interpret mode (`implementation="interpret"`), forward and gradients.

# %%
rng = np.random.default_rng(0)
B, H, L = 2, 4, 300
u = jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
k = jnp.asarray(rng.standard_normal((H, L)) * np.exp(-np.arange(L) / 50), jnp.float32)
N = 1024
print("Monarch factors of N =", N, ":", monarch_factors(N))

reference = fft_conv_reference(u, k, fft_size=N)
u64, k64 = np.asarray(u, np.float64), np.asarray(k, np.float64)
exact = np.stack([[np.convolve(u64[b, h], k64[h])[:L] for h in range(H)] for b in range(B)])
scale = float(np.max(np.abs(exact)))
monarch_config = fft_conv_vjp.ConvConfig(fft_size=N, seq_len=L, filter_len=L)
outputs = {
    "jnp.fft reference (f32)": reference,
    "fft_conv, auto": fft_conv(u, k),
    "Monarch in jnp (XLA)": fft_conv_vjp.monarch_conv(monarch_config, u, k, None, None),
    "fft_conv, interpret (Pallas)": fft_conv(u, k, implementation="interpret"),
}
print(f"max |y| = {scale:.2f}")
for name, y in outputs.items():
    vs_ref = float(jnp.max(jnp.abs(y - reference)))
    vs_exact = float(np.max(np.abs(np.asarray(y, np.float64) - exact)))
    print(
        f"{name:>29}: max |y - ref| = {vs_ref:.2e}, max |y - float64 np.convolve| = {vs_exact:.2e}"
    )


def squared_output(conv):
    return lambda u, k: jnp.sum(conv(u, k) ** 2)


grads = jax.grad(squared_output(lambda u, k: fft_conv(u, k, implementation="interpret")), (0, 1))
ref_grads = jax.grad(squared_output(lambda u, k: fft_conv_reference(u, k, fft_size=N)), (0, 1))
for name, got, want in zip(("du", "dk"), grads(u, k), ref_grads(u, k), strict=True):
    error = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    print(f"interpret {name}: max relative error vs jax.grad of the reference = {error:.1e}")

# %% [markdown]
# ## Gating, fused
# Hyena/H3/M2 wrap every long convolution in elementwise gates:
# `y = postgate * conv(pregate * u, k)`. FlashFFTConv applies both inside the kernel (no extra
# pass over memory); `fft_conv` takes them as arguments.

# %%
pregate = jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
postgate = jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
by_hand = postgate * fft_conv_reference(pregate * u, k, fft_size=N)
for implementation in ("auto", "interpret"):
    gated = fft_conv(u, k, pregate=pregate, postgate=postgate, implementation=implementation)
    error = float(jnp.max(jnp.abs(gated - by_hand)))
    print(f"gated {implementation:>9}: max |y - postgate * conv(pregate * u)| = {error:.2e}")

# %% [markdown]
# ## Partial and frequency-sparse convolutions
# - `partial_taps=T` keeps only the first T taps of the filter; the default N shrinks with T
#   (here L + 64 - 1 = 363 gives N = 512 instead of 1024), and the filter transform skips the
#   zero blocks.
# - `kept_frequencies=P` keeps only the filter's rfft bins below P/2 (FlashFFTConv's definition:
#   frequencies f < P/2 and their conjugates N - f): in the Monarch layout these lie in whole
#   blocks of the last level, and the kernel skips the others (P must be a multiple of 2N / N_last;
#   64 at N = 1024). The result is a low-pass filtered convolution.

# %%
taps = 64
partial = fft_conv(u, k, partial_taps=taps, implementation="interpret")
partial_ref = np.stack(
    [[np.convolve(u64[b, h], k64[h, :taps])[:L] for h in range(H)] for b in range(B)]
)
error = float(np.max(np.abs(np.asarray(partial, np.float64) - partial_ref)))
print(f"partial_taps={taps}: max |y - np.convolve(u, k[:, :{taps}])| = {error:.2e}")

kept = 128
sparse = {
    implementation: fft_conv(u, k, fft_size=N, kept_frequencies=kept, implementation=implementation)
    for implementation in ("auto", "interpret")
}
sparse_ref = fft_conv_reference(u, k, fft_size=N, kept_frequencies=kept)
for implementation, y in sparse.items():
    error = float(jnp.max(jnp.abs(y - sparse_ref)))
    print(f"kept_frequencies={kept} {implementation:>9}: max |y - reference| = {error:.2e}")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
spectrum = np.abs(np.fft.fft(k64[0], N))
mask = kept_frequency_mask(N, kept)
axes[0].semilogy(
    np.fft.fftshift(np.fft.fftfreq(N, 1 / N)), np.fft.fftshift(spectrum), label="|DFT(k)|"
)
axes[0].semilogy(
    np.fft.fftshift(np.fft.fftfreq(N, 1 / N)),
    np.fft.fftshift(np.where(mask, spectrum, np.nan)),
    label=f"kept ({mask.sum()} of {N})",
)
axes[0].set_xlabel("frequency f")
axes[0].set_title("filter spectrum, head 0")
axes[0].legend()
axes[1].plot(np.asarray(reference[0, 0]), label="dense", lw=1)
axes[1].plot(np.asarray(sparse["interpret"][0, 0]), label=f"kept_frequencies={kept}", lw=1)
axes[1].plot(np.asarray(partial[0, 0]), label=f"partial_taps={taps}", lw=1, alpha=0.7)
axes[1].set_xlabel("t")
axes[1].set_title("y[0, 0]")
axes[1].legend()
plt.show()

# %% [markdown]
# ## Causal vs circular
# With N >= L + Lk - 1 (the default) the convolution is causal, `y[t] = sum_j k[j] u[t - j]`;
# `fft_size=L` gives the circular convolution, in which the filter's tail wraps around. Perturbing
# u at t0 = 100 changes the causal output only from t0 on, the circular one everywhere.

# %%
L2, t0 = 256, 100
u2 = jnp.asarray(rng.standard_normal((1, 1, L2)), jnp.float32)
k2 = jnp.asarray(rng.standard_normal((1, L2)), jnp.float32)
bump = jnp.zeros_like(u2).at[..., t0].set(1.0)
fig, ax = plt.subplots(figsize=(7, 3))
for label, fft_size in (("causal, N = 512 (default)", None), ("circular, N = L = 256", L2)):
    change = jnp.abs(
        fft_conv(u2 + bump, k2, fft_size=fft_size) - fft_conv(u2, k2, fft_size=fft_size)
    )
    first = int(jnp.argmax(change[0, 0] > 1e-4))
    print(f"{label}: first output that moves is t = {first}")
    ax.semilogy(np.asarray(change[0, 0]) + 1e-12, label=label)
circular64 = np.real(
    np.fft.ifft(
        np.fft.fft(np.asarray(u2[0, 0], np.float64)) * np.fft.fft(np.asarray(k2[0], np.float64))
    )
)
error = float(np.max(np.abs(np.asarray(fft_conv(u2, k2, fft_size=L2)[0, 0]) - circular64)))
print(f"circular: max |y - float64 circular convolution| = {error:.2e}")
ax.axvline(t0, color="gray", lw=0.8)
ax.set_xlabel("t")
ax.set_ylabel("|change in y|")
ax.legend()
plt.show()

# %% [markdown]
# ## Speed per FFT size
# `python -m pallas_kernels.fft_conv.bench` times, per N, the Monarch path (XLA; the Pallas
# kernels on a GPU) against jnp.fft (cuFFT on a GPU; ducc on CPU) and, on a GPU, the paper's
# PyTorch baseline, forward and forward+backward, and writes JSON with the device and commit.
# Here it runs in quick mode on this machine. The paper's claim is for fused GPU kernels; on a
# CPU the Monarch matmuls do 3.5-8x the FLOPs of an FFT and lose to jnp.fft (README.md has the
# figures); the quick run's times (3 repeats on a shared CPU) are noisy. Saved reports are
# plotted too, each labelled with its device: `fft_conv*.json` under `bench_results/` (local
# runs, not in git; `tools/gpu_bench.sh` writes `bench_results/gpu/`) and
# `pallas_kernels/fft_conv/results/*.json` (GPU/TPU runs kept in git).

# %%
quick = ["--quick", "--repeats", "3"] if SMOKE else []
results = []
for section in ("cpu", "sparse"):
    path = pathlib.Path(tempfile.mkdtemp()) / f"{section}.json"
    bench.main([*quick, "--section", section, "--out", str(path)])
    report = json.loads(path.read_text())
    results += report["results"]
this_run = {"env": report["env"], "results": results}

# %%
here = pathlib.Path(bench.__file__).resolve().parent  # pallas_kernels/fft_conv
root = here.parents[1]
saved = sorted((root / "bench_results").glob("**/fft_conv*.json"))
saved += sorted((here / "results").glob("*.json"))
reports = [("this run", this_run)]
for path in saved:
    try:
        report = json.loads(path.read_text())
        reports.append((str(path.relative_to(root)), report))
    except (OSError, ValueError) as error:
        print(f"skipped {path}: {error}")
print("saved reports:", [name for name, _ in reports[1:]] or "none found")


def describe(env):
    return f"{env.get('device_kind')} ({env.get('platform')}), commit {env.get('git_commit')}"


def plot_sizes(name, report):
    """Time per N (fwd, fwd+bwd) and the speed-up over jnp.fft, one line per implementation."""
    rows = [r for r in report["results"] if "median_ms" in r and r["section"] in ("cpu", "gpu")]
    if not rows:
        return
    series = {}
    for r in rows:
        key = (r["implementation"], r["gated"], r["mode"])
        series.setdefault(key, []).append((r["fft_size"], r["median_ms"]))
    baseline = {
        (r["fft_size"], r["gated"], r["mode"]): r["median_ms"]
        for r in rows
        if r["implementation"] == "jnp_fft"
    }
    implementations = sorted({r["implementation"] for r in rows})
    colors = {impl: f"C{i}" for i, impl in enumerate(implementations)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    for (implementation, gated, mode), points in sorted(series.items()):
        n, ms = zip(*sorted(points), strict=True)
        label = implementation + (" gated" if gated else "")
        style = dict(color=colors[implementation], linestyle="--" if gated else "-")
        axes[0 if mode == "fwd" else 1].plot(n, ms, marker="o", label=label, **style)
        if implementation != "jnp_fft":
            pairs = [(x, t) for x, t in zip(n, ms, strict=True) if (x, gated, mode) in baseline]
            if pairs:
                speedup = [baseline[x, gated, mode] / t for x, t in pairs]
                marker = "o" if mode == "fwd" else "^"
                axes[2].plot(
                    [x for x, _ in pairs], speedup, marker=marker, label=f"{label}, {mode}", **style
                )
    for ax, title in zip(
        axes, ("forward", "forward + backward", "speed-up over jnp.fft"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("FFT size N")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[1]:  # a panel may have no lines (no non-jnp.fft rows)
            ax.legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_ylabel("median ms")
    axes[2].axhline(1.0, color="gray", lw=0.8)
    axes[2].set_ylabel("jnp.fft time / time")
    shapes = sorted({(r["batch"], r["heads"], r["dtype"]) for r in rows})
    shape_text = ", ".join(f"B={b} H={h} {d}" for b, h, d in shapes)
    fig.suptitle(f"{name}: {describe(report['env'])}; {shape_text}")
    fig.tight_layout()
    plt.show()


for name, report in reports:
    plot_sizes(name, report)

# %% [markdown]
# ### Skipped blocks: fewer FLOPs, measured
# The `sparse` section runs the Monarch path at N = 4096 (16 x 16 x 16) with kept frequencies
# and partial taps: XLA's own FLOP count of the compiled forward and its time, relative to the
# dense convolution.

# %%
for name, report in reports:
    rows = [r for r in report["results"] if "median_ms" in r and r["section"] == "sparse"]
    dense = [r for r in rows if not (r["kept_frequencies"] or r["partial_taps"])]
    if not dense:
        continue
    labels, flops, times = [], [], []
    for r in rows:
        if r["kept_frequencies"]:
            labels.append(f"P={r['kept_frequencies']}")
        elif r["partial_taps"]:
            labels.append(f"taps={r['partial_taps']}")
        else:
            labels.append("dense")
        flops.append(r["flops"] / dense[0]["flops"])
        times.append(r["median_ms"] / dense[0]["median_ms"])
        print(f"{name} {labels[-1]:>9}: {r['flops'] / 1e9:.3f} GFLOP, {r['median_ms']:.2f} ms")
    fig, ax = plt.subplots(figsize=(7, 3))
    position = np.arange(len(labels))
    ax.bar(position - 0.2, flops, 0.4, label="XLA FLOPs")
    ax.bar(position + 0.2, times, 0.4, label="median time")
    ax.set_xticks(position, labels)
    ax.set_ylabel("relative to dense")
    ax.set_title(f"{name}: N = 4096, {describe(report['env'])}", fontsize=9)
    ax.legend()
    plt.show()

# %% [markdown]
# ## The Hyena LM on fft_conv
# Hyena (Poli et al., arXiv:2302.10866) is the paper's end-to-end model: attention replaced by an
# order-2 recurrence of gates and implicit long filters (a small MLP over positional features
# times an exponential decay), each step one gated `fft_conv`. `hyena/kjv` is the byte-level
# `transformer/kjv` recipe with this mixer (results in efficient/models/hyena/README.md). The
# same preset runs from the shell: `python -m experiments.run hyena/kjv`.

# %%
name = "hyena/smoke" if SMOKE else "hyena/kjv"
preset = presets()[name]
workdir = pathlib.Path(tempfile.mkdtemp()) / "run"
config = dataclasses.replace(
    preset.config, train=dataclasses.replace(preset.config.train, progress=not SMOKE)
)
result, model = train_and_sample(config, workdir)
print(f"{result.summary['num_params']:,} parameters (formula {config.model.num_params():,})")
print("final eval:", result.summary["final_eval"])

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
# The trained model is causal: changing the token at position 40 leaves the logits before it
# unchanged up to float32 rounding (the long convolutions run at the causal FFT size; the FFT
# spreads rounding error, not information, over all positions).

# %%
tokens = jax.random.randint(jax.random.key(0), (1, 64), 0, 256, dtype=jnp.int32)
changed = tokens.at[0, 40].set((tokens[0, 40] + 1) % 256)
params = jax.device_get(result.state.params)
difference = jnp.abs(
    model.apply({"params": params}, changed) - model.apply({"params": params}, tokens)
).max(axis=-1)[0]
print("max |logit change| before t = 40:", float(difference[:40].max()))
print("max |logit change| from t = 40:", float(difference[40:].max()))
