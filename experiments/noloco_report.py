"""`python -m experiments.noloco_report [--runs-dir runs/noloco_kjv]`: NoLoCo vs DiLoCo vs DP.

Reads the runs of `dataparallel/kjv`, `diloco/kjv` and `noloco/kjv` (each in `RUNS_DIR/<method>/`,
e.g. `python -m experiments.run noloco/kjv --workdir runs/noloco_kjv/noloco`) and writes, next to
them:

- `loss_vs_step.png` and `loss_vs_bytes.png`: validation loss (replica-mean parameters) against
  the step, and against the bytes each device has sent (the step's collectives read from the
  compiled program, `summary["communication"]`);
- `sync_time.png`: the alpha-beta model of one sync of the model's bytes as the number of
  replicas N grows (`efficient.sharding.collectives.sync_time`): ring and tree all-reduce
  against NoLoCo's pairwise exchange — NoLoCo §3's argument that an all-reduce's latency grows
  with N (log N for a tree) while a pair exchange's does not;
- `noloco_report.md`: the table (final and best validation loss, bytes per device per step and in
  total, NoLoCo's final loss relative to DiLoCo's; issue goal: at most 2% above it).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from efficient.sharding.collectives import sync_time
from efficient.train import read_metrics
from experiments.noloco import METHODS

RUNS_DIR = pathlib.Path("runs/noloco_kjv")
LABELS = {"dataparallel": "data parallel (all-reduce every step)", "diloco": "DiLoCo",
          "noloco": "NoLoCo"}  # fmt: skip
# The sync-time model's network: 10 us per message, 25 GB/s per link (200 Gb/s), typical of
# an inter-node RDMA fabric; the shape of the curves, not the absolute times, is the point.
LATENCY_S = 1e-5
BANDWIDTH = 25e9
REPLICA_COUNTS = 2 ** np.arange(1, 13)


def load(runs_dir: pathlib.Path) -> dict[str, dict]:
    """{method: {"summary", "eval": [(step, loss)]}} for the methods whose run finished."""
    runs = {}
    for method in METHODS:
        directory = runs_dir / method
        try:
            summary = json.loads((directory / "summary.json").read_text())
        except FileNotFoundError:
            continue
        evals = [
            (r["step"], r["loss"])
            for r in read_metrics(directory / "metrics.jsonl")
            if r["split"] == "eval"
        ]
        runs[method] = {"summary": summary, "eval": evals}
    return runs


def table(runs: dict[str, dict]) -> str:
    rows = [
        "| method | final val. loss | best val. loss | bytes / device / step | bytes / device "
        "(run) | collectives in the compiled step (all branches) |",
        "|---|---|---|---|---|---|",
    ]
    for method, run in runs.items():
        s = run["summary"]
        comm = s.get("communication") or {}
        per_step = comm.get("bytes_per_device_per_step", 0.0)
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(comm.get("collective_ops", {}).items()))
        rows.append(
            f"| {method} | {s['final_eval']['loss']:.4f} | {s['best_eval']['loss']:.4f} | "
            f"{per_step / 1e6:.3f} MB | {per_step * s['step'] / 1e9:.2f} GB | {ops} |"
        )
    lines = ["\n".join(rows), ""]
    if {"noloco", "diloco"} <= runs.keys():
        a = runs["noloco"]["summary"]["final_eval"]["loss"]
        b = runs["diloco"]["summary"]["final_eval"]["loss"]
        verdict = "met" if a / b - 1 <= 0.02 else "not met"
        lines.append(
            f"NoLoCo / DiLoCo final validation loss: {a / b:.4f} ({100 * (a / b - 1):+.2f}%; "
            f"goal: at most 2% above DiLoCo's: {verdict})."
        )
    return "\n".join(lines)


def plot(runs: dict[str, dict], out: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, x_of in (
        ("loss_vs_step", lambda s, run: s),
        ("loss_vs_bytes", lambda s, run: s * _per_step(run) / 1e9),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, run in runs.items():
            steps, losses = zip(*run["eval"], strict=True)
            xs = [x_of(s, run) for s in steps]
            ax.plot(xs, losses, marker="o", ms=3, label=LABELS[method])
        ax.set_ylabel("validation loss (nats/byte)")
        if name == "loss_vs_step":
            ax.set_xlabel("step (equal tokens per step)")
        else:
            ax.set_xlabel("GB sent per device (compiled collectives)")
            ax.set_xscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    model_bytes = _model_bytes(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, label in (("ring", "ring all-reduce"), ("tree", "tree all-reduce"),
                        ("pair", "NoLoCo pair exchange")):  # fmt: skip
        times = [sync_time(kind, int(n), model_bytes, latency_s=LATENCY_S, bandwidth=BANDWIDTH)
                 for n in REPLICA_COUNTS]  # fmt: skip
        ax.plot(REPLICA_COUNTS, np.asarray(times) * 1e3, marker="o", ms=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("replicas N")
    ax.set_ylabel("one sync (ms)")
    ax.set_title(
        f"{model_bytes / 1e6:.1f} MB, {LATENCY_S * 1e6:.0f} us, {BANDWIDTH / 1e9:.0f} GB/s"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "sync_time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _model_bytes(runs: dict[str, dict]) -> float:
    """The float32 parameters' bytes: what one NoLoCo peer exchange sends."""
    return 4.0 * max(r["summary"]["num_params"] for r in runs.values())


def _per_step(run: dict) -> float:
    return (run["summary"].get("communication") or {}).get("bytes_per_device_per_step", 0.0)


def sync_table(model_bytes: float) -> str:
    rows = ["| N | ring all-reduce (ms) | tree all-reduce (ms) | pair (ms) |", "|---|---|---|---|"]
    for n in (8, 64, 512, 4096):
        t = [sync_time(k, n, model_bytes, latency_s=LATENCY_S, bandwidth=BANDWIDTH) * 1e3
             for k in ("ring", "tree", "pair")]  # fmt: skip
        rows.append(f"| {n} | {t[0]:.2f} | {t[1]:.2f} | {t[2]:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.noloco_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs-dir", type=pathlib.Path, default=RUNS_DIR)
    args = parser.parse_args(argv)
    runs = load(args.runs_dir)
    if not runs:
        print(f"no finished runs of {', '.join(METHODS)} under {args.runs_dir}", file=sys.stderr)
        return 1
    text = table(runs)
    text += "\n\nSync-time model, one sync of the model's float32 bytes:\n\n" + sync_table(
        _model_bytes(runs)
    )
    (args.runs_dir / "noloco_report.md").write_text(text + "\n")
    print(text)
    for path in plot(runs, args.runs_dir):
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
