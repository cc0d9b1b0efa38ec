"""Training progress: tqdm's bar where it can redraw itself (a terminal, a notebook), and the
same status as plain lines everywhere else (a log file, a pipe, CI).

tqdm redraws its bar with carriage returns, so a log that is not a terminal collects every
redraw on one ever-growing line. `LineProgress` prints tqdm's own status text (`format_meter`)
as a new line every `interval` seconds and once at the end.
"""

from __future__ import annotations

import io
import sys
import time

from tqdm.auto import tqdm

# Seconds between two lines of `LineProgress` (a 30-minute run logs about 60 of them).
LINE_INTERVAL_S = 30.0


class LineProgress:
    """The subset of tqdm's interface that `train` uses, printing lines instead of redraws."""

    def __init__(
        self,
        *,
        total: int,
        initial: int = 0,
        desc: str = "",
        unit: str = "step",
        interval: float = LINE_INTERVAL_S,
        file: io.TextIOBase | None = None,
    ):
        self.total, self.n, self.initial = total, initial, initial
        self.desc, self.unit, self.interval = desc, unit, interval
        self.file = file if file is not None else sys.stderr
        self.postfix: str | None = None
        self._start = self._printed_at = time.perf_counter()
        self._printed_n, self._printed = initial, False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self._printed_at >= self.interval:
            self._print(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, flush=True)  # where tqdm.write prints: standard output

    def close(self) -> None:
        if self.n != self._printed_n or not self._printed:  # a session without steps: one line
            self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        prefix = f"{self.desc}: " if self.desc else ""
        # From the second line on, the rate since the line before (the average since the start
        # would count compiling in); the remaining time follows from it.
        elapsed = now - self._printed_at
        rate = (self.n - self._printed_n) / elapsed if elapsed > 0 and self._printed else None
        line = tqdm.format_meter(
            self.n, self.total, now - self._start, prefix=prefix, unit=self.unit,
            postfix=self.postfix, initial=self.initial, ascii=True, rate=rate,
        )  # fmt: skip
        print(line, file=self.file, flush=True)
        self._printed_at, self._printed_n, self._printed = now, self.n, True


def redraws(stream: io.TextIOBase) -> bool:
    """Whether a bar written to `stream` is redrawn in place: a terminal, or a Jupyter/Colab
    output (whose stream is not a TTY but renders carriage returns)."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return True
    return type(stream).__module__.split(".")[0] == "ipykernel"


def progress_bar(
    *, total: int, initial: int = 0, desc: str = "", enabled: bool = True
) -> tqdm | LineProgress:
    """tqdm's bar on stderr where it redraws, `LineProgress` lines where it would not; a
    disabled tqdm (its `write` still prints) when `enabled` is False."""
    if enabled and not redraws(sys.stderr):
        return LineProgress(total=total, initial=initial, desc=desc)
    return tqdm(
        total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled,
        desc=desc,
    )  # fmt: skip
