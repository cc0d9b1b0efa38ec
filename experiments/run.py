"""`python -m experiments.run NAME [--workdir DIR] [--resume] [--section.field VALUE ...]`.

`--list` prints every preset with a one-line description. Any field of the preset's config can be
overridden with its dotted path (e.g. `--train.steps 200 --data.batch_size 64`). Unknown names
and bad overrides print one line with the close matches and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import difflib
import io
import json
import pathlib
import sys
from typing import Any

from experiments.registry import Preset, presets

RUNS_DIR = pathlib.Path("runs")


class UsageError(Exception):
    """A user mistake on the command line: printed as one line, exit status 2."""


def field_paths(config: Any, prefix: str = "") -> list[str]:
    """Every overridable dotted field path of a config dataclass tree."""
    paths = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            paths += field_paths(value, f"{prefix}{f.name}.")
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def _close(word: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(word, choices, n=4, cutoff=0.5)
    return f"; close matches: {', '.join(matches)}" if matches else ""


def find_preset(name: str) -> Preset:
    """The registered preset `name`; a UsageError for an unknown name (or one not a string)."""
    table = presets()
    if not isinstance(name, str) or name not in table:
        hint = _close(name, list(table)) if isinstance(name, str) else ""
        raise UsageError(
            f"unknown experiment {name!r}{hint} (see python -m experiments.run --list)"
        )
    return table[name]


def apply_overrides(config: Any, args: list[str]) -> Any:
    """Parse `--a.b VALUE` overrides into a new config (tyro does the typed parsing)."""
    import tyro

    valid = field_paths(config)
    for arg in args:
        if arg.startswith("--"):
            path = arg[2:].split("=", 1)[0].replace("-", "_")
            if path not in valid:
                raise UsageError(f"unknown override --{path}{_close(path, valid)}")
        elif not args or args.index(arg) == 0:
            raise UsageError(f"unexpected argument {arg!r}; overrides look like --train.steps 100")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            return tyro.cli(
                type(config), default=config, args=args, config=(tyro.conf.FlagConversionOff,)
            )
    except SystemExit as exit_:
        if exit_.code in (0, None):
            print(err.getvalue())
            raise
        raise UsageError(f"bad override: {_one_line(err.getvalue())}") from None
    except (ValueError, TypeError) as e:  # a config's own validation (__post_init__)
        raise UsageError(f"bad override: {e}") from None


def _one_line(text: str) -> str:
    """The message of tyro's first error panel, joined into one line."""
    body = []
    for raw in text.splitlines()[1:]:  # the first line is the panel's title bar
        line = raw.strip().strip("│").strip()
        if not line or set(line) <= set("─-╰╯"):
            if body:
                break
            continue
        body.append(line)
    return " ".join(body) or "could not parse the overrides"


def resolve_workdir(name: str, workdir: str | None, resume: bool) -> pathlib.Path:
    if workdir is not None:
        return pathlib.Path(workdir)
    base = RUNS_DIR / name
    if resume:
        runs = sorted(p for p in base.glob("*") if (p / "checkpoints").is_dir())
        if not runs:
            raise UsageError(f"--resume: no earlier run with checkpoints under {base}/")
        return runs[-1]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return base / stamp


def print_list() -> None:
    table = presets()
    width = max(len(n) for n in table)
    for name, preset in table.items():
        print(f"{name:<{width}}  {preset.description}")


def _print_summary(summary: dict, workdir: pathlib.Path) -> None:
    print(f"\n== {summary['status']} at step {summary.get('step')} / {summary['steps']} ==")
    if summary.get("early_stopped"):
        print(summary["stop_reason"])
    for key in ("final_train", "final_eval", "best_eval", "test"):
        if summary.get(key):
            values = ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in summary[key].items()
            )
            print(f"{key:<12} {values}")
    print(f"params       {summary['num_params']:,}")
    print(f"wall time    {summary['wall_time_s']:.1f} s on {summary.get('device_kind', '?')}")
    print(f"run dir      {workdir}  (metrics.jsonl, summary.json, plots/*.png, tb/)")


def _initialize_distributed() -> None:
    """`jax.distributed.initialize()`, taking the process count and id from the environment.

    JAX detects all three on SLURM, Open MPI, Kubernetes and Cloud TPU, and reads
    `JAX_COORDINATOR_ADDRESS` itself, but not a process count or id: elsewhere (a plain
    multi-node GPU job, two CPU processes) `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` give them.
    """
    import os

    import jax

    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
        # CPU processes exchange collectives over gloo (TCP); the default has none across hosts.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None, process_id=int(index) if index else None
    )


def _process_0s(path: pathlib.Path) -> pathlib.Path:
    """Process 0's `path` on every process of a multi-process run.

    The processes of a run must share its directory, and the default one is named after the
    start time, which can differ by a second between processes.
    """
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return path
    data = np.frombuffer(str(path).encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    buffer = np.zeros(size, np.uint8)
    buffer[: min(size, data.size)] = data[:size]
    return pathlib.Path(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())


def _check_mesh(config) -> None:
    """A mesh that does not fit this host's devices is a usage error, before anything runs."""
    mesh = getattr(getattr(config, "train", None), "mesh", None)
    if mesh is None:
        return
    import jax

    try:
        mesh.shape(jax.device_count())
    except ValueError as e:
        hint = ""
        if jax.default_backend() == "cpu":
            hint = (
                " (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices)"
            )
        raise UsageError(f"--train.mesh: {e}{hint}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Run a registered experiment preset.",
        epilog="Override any config field: --train.steps 100 --data.batch_size 64 ...",
    )
    parser.add_argument("name", nargs="?", help="preset name, e.g. lowformer/fashion_mnist")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--workdir", help="run directory (default runs/NAME/<utc time>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the preset's config (with overrides) and exit; sizes a run takes from its "
        "data (e.g. the recommenders' num_items) are resolved later, in the run's config.json",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-process: TPU pods, SLURM, or the "
        "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables)",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.distributed:
        _initialize_distributed()
    try:
        if args.list:
            print_list()
            return 0
        if args.name is None:
            raise UsageError("name an experiment (python -m experiments.run --list shows them)")
        preset = find_preset(args.name)
        config = apply_overrides(preset.config, overrides)
        if args.print_config:
            from experiments.image_classification import to_json

            print(json.dumps(to_json(config), indent=2))
            return 0
        if preset.check is not None:
            try:
                preset.check(config)
            except ValueError as e:
                raise UsageError(str(e)) from None
        _check_mesh(config)
        workdir = resolve_workdir(args.name, args.workdir, args.resume)
        if args.distributed:
            workdir = _process_0s(workdir)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from efficient.train import NonFiniteLossError, ResumeError

    print(f"{preset.name}: {preset.description}\nrun dir: {workdir}")
    try:
        summary = preset.run(config, workdir, resume=args.resume)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ResumeError) as e:
        # a missing data package, a used workdir, a workdir of another config or a damaged step
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, workdir)
    return 130 if summary["status"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
