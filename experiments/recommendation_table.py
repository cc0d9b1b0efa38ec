"""`python -m experiments.recommendation_table [PRESET ...] [--seeds N] [--a.b VALUE ...]`.

Runs sequential-recommendation presets x seeds one after another, each into
`runs/seeds/<preset>/seed<k>/` (a finished run is skipped, an interrupted one resumed), then
prints and saves a markdown table (`runs/seeds/recommendation_table.md`; per-run values in
`.json`) of the test metrics of the best validation step's parameters, as mean ± sample standard
deviation over the seeds, with the epochs and the wall time.

Seed k sets `train.seed` (initialisation, dropout) and, except for synthetic data (where the
seed would change the data themselves), `data.seed` (the order of the training examples).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from efficient.train import NonFiniteLossError, ResumeError
from efficient.train.loop import config_differences
from experiments.run import UsageError, apply_overrides, find_preset


class RunStopped(Exception):
    """A run ended before its last step (a signal, or `--train.stop_after`); its checkpoint is
    saved, and the same command resumes it."""


RUNS_DIR = pathlib.Path("runs/seeds")
DEFAULT_PRESETS = ("tim4rec/ml100k", "ssd4rec/ml100k", "sasrec/ml100k")
# (summary["test"] key, column title).
COLUMNS = (
    ("hit@10", "HR@10"),
    ("ndcg@10", "NDCG@10"),
    ("mrr@10", "MRR@10"),
    ("hit@20", "HR@20"),
    ("ndcg@20", "NDCG@20"),
)


def seeded(config, seed: int):
    """The preset's config for one seed (see the module docstring)."""
    train = dataclasses.replace(config.train, seed=seed)
    data = config.data
    if data.source != "synthetic":
        data = dataclasses.replace(data, seed=seed)
    return dataclasses.replace(config, train=train, data=data)


def run_dir(runs_dir: pathlib.Path, preset: str, seed: int) -> pathlib.Path:
    return pathlib.Path(runs_dir) / preset / f"seed{seed}"


def finished(workdir: pathlib.Path) -> dict | None:
    """The summary of a run that completed (and was tested), else None."""
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return summary if summary.get("status") == "completed" and summary.get("test") else None


def _check_same_config(workdir: pathlib.Path, config) -> None:
    from experiments.image_classification import to_json
    from experiments.sequential_recommendation import with_data_sizes

    path = workdir / "config.json"
    if not path.exists():
        return
    ours = json.loads(json.dumps(to_json(with_data_sizes(config)), default=str))
    # The run's own resume check, before any run starts (session fields aside).
    differences = config_differences(json.loads(path.read_text()), ours)
    if differences:
        raise UsageError(
            f"{workdir} holds a run of a different config ({'; '.join(differences[:3])}); "
            "remove it or choose another --runs-dir"
        )


def run_all(
    presets: Sequence[str],
    seeds: Sequence[int],
    *,
    runs_dir: pathlib.Path,
    overrides: Sequence[str] = (),
) -> dict[str, list[dict]]:
    """Run (or resume, or reuse) every preset x seed; returns the summaries by preset.

    Raises:
      UsageError: an unknown preset, a bad override, or a run directory holding another config.
    """
    from experiments.sequential_recommendation import SequentialRecommendation

    chosen = []
    for name in presets:
        preset = find_preset(name)
        if not isinstance(preset.config, SequentialRecommendation):
            raise UsageError(f"{name} is not a sequential-recommendation preset")
        config = apply_overrides(preset.config, list(overrides))
        if preset.check is not None:
            try:
                preset.check(config)
            except ValueError as e:
                raise UsageError(f"{name}: {e}") from None
        chosen.append((preset, config))
    out: dict[str, list[dict]] = {}
    for preset, config in chosen:
        for seed in seeds:
            workdir = run_dir(runs_dir, preset.name, seed)
            config_k = seeded(config, seed)
            _check_same_config(workdir, config_k)
            summary = finished(workdir)
            if summary is not None:
                print(f"{preset.name} seed {seed}: finished earlier ({workdir})")
            else:
                resume = (workdir / "checkpoints").is_dir()
                print(f"{preset.name} seed {seed}: {'resuming' if resume else 'running'} "
                      f"in {workdir}", flush=True)  # fmt: skip
                summary = preset.run(config_k, workdir, resume=resume)
                if summary.get("status") != "completed":
                    raise RunStopped(
                        f"{preset.name} seed {seed}: {summary.get('status')} "
                        f"({summary.get('stop_reason')})"
                    )
            out.setdefault(preset.name, []).append(summary)
    return out


def _mean_std(values: Sequence[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def markdown_table(results: dict[str, list[dict]]) -> str:
    """Test metrics (mean ± sample std over seeds), epochs and wall time, one row per preset."""
    head = ["preset", "seeds", *(title for _, title in COLUMNS), "best epoch", "epochs",
            "wall min / run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    devices = set()
    for name, summaries in results.items():
        metrics = [_mean_std([s["test"].get(key) for s in summaries]) for key, _ in COLUMNS]
        epochs = [s.get("epochs") or {} for s in summaries]
        row = [
            name,
            str(len(summaries)),
            *metrics,
            _mean_std([e.get("best_step") for e in epochs], 1),
            _mean_std([e.get("step") for e in epochs], 1),
            _mean_std([s["wall_time_s"] / 60 for s in summaries], 1),
        ]
        lines.append("| " + " | ".join(row) + " |")
        devices |= {f"{s.get('device_kind')} (commit {s.get('git_commit')})" for s in summaries}
    caption = (
        "Test metrics of the best validation NDCG@10 step, full ranking over all items "
        "(leave-one-out); mean ± sample standard deviation over seeds. Wall time per run, "
        f"training and evaluation included, on {', '.join(sorted(devices))}."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.recommendation_table",
        description="Run recommendation presets x seeds (resumable) and tabulate test metrics.",
        epilog="Overrides apply to every preset: --train.steps 100 --data.batch_size 64 ...",
    )
    parser.add_argument("presets", nargs="*", default=list(DEFAULT_PRESETS),
                        help=f"preset names (default: {' '.join(DEFAULT_PRESETS)})")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    # Not runs/<preset>/: `experiments.run --resume` takes the last directory there.
    parser.add_argument("--runs-dir", type=pathlib.Path, default=RUNS_DIR,
                        help=f"where the runs and the table go (default {RUNS_DIR})")  # fmt: skip
    parser.add_argument(
        "--out", type=pathlib.Path, help="markdown file (default RUNS_DIR/recommendation_table.md)"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.seeds < 1:
        print(f"error: --seeds {args.seeds}: expected >= 1", file=sys.stderr)
        return 2
    try:
        results = run_all(
            args.presets, range(args.seeds), runs_dir=args.runs_dir, overrides=overrides
        )
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"{e}: run the same command again to resume.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a run's loop (its own handler saves a checkpoint)
        print("interrupted: run the same command again to resume.", file=sys.stderr)
        return 130
    except (FileNotFoundError, ResumeError) as e:  # a missing data package, a damaged step
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = markdown_table(results)
    out = args.out or args.runs_dir / "recommendation_table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    raw = {name: [{k: s.get(k) for k in ("test", "best_eval", "epochs", "wall_time_s",
                                          "stop_reason")} for s in summaries]
           for name, summaries in results.items()}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2))
    print("\n" + table + f"\nsaved to {out} (per-run values in {out.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
