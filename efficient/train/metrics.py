"""Metric records: metrics.jsonl (one object per record), TensorBoard events, and PNG plots."""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping


def write_text_atomic(path: str | pathlib.Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so that a kill leaves the
    old file or the new one, never a truncated one."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it (mkstemp's is owner-only)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


class MetricsWriter:
    """Appends records to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tb/`.

    Each record is `{"step": int, "split": "train"|"eval", **metrics}`. On resume, records past
    the restored step are dropped first, so the file never holds steps from a lost future.
    With `enabled=False` nothing is written (the other processes of a multi-process run, whose
    metrics are the same global values).
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        resume_step: int | None = None,
        tensorboard=True,
        enabled: bool = True,
    ):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            # Through a rename: a kill here must not lose the run's log.
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        else:  # a new run, or a resumed one whose log is gone
            write_text_atomic(self.path, "")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tb"), flush_secs=30)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> dict:
        record = {"step": int(step), "split": split}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        if not self.enabled:
            return record
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"{split}/{name}", value, step)
        return record

    def close(self):
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _jsonable(value):
    value = float(value) if not isinstance(value, int | str | bool) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    return value


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """Records of a metrics.jsonl file (a truncated last line, from a kill, is ignored)."""
    records = []
    for line in pathlib.Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_metrics(path: str | pathlib.Path, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """One PNG per metric name, train and eval curves against step. Returns the files written."""
    # A bare Figure needs neither pyplot nor a backend: selecting one (matplotlib.use("Agg")) would
    # switch a notebook's inline backend off for every figure after the first training run.
    from matplotlib.figure import Figure

    records = read_metrics(path)
    names = sorted(
        {k for r in records for k, v in r.items() if k not in ("step", "split")}
        & {k for r in records for k, v in r.items() if isinstance(v, int | float)}
    )
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        for split, style in (("train", "-"), ("eval", "o-")):
            points = [
                (r["step"], r[name])
                for r in records
                if r.get("split") == split and isinstance(r.get(name), int | float)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=split, markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(name)
        fig.tight_layout()
        file = out_dir / f"{name}.png"
        fig.savefig(file)
        written.append(file)
    return written
