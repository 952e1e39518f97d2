"""Progress display for long stages: counts, rate and ETA on a terminal, periodic lines in a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# soft_wrap: in logs and CI a long line stays one line instead of wrapping at 80 columns.
# markup off: messages carry user data ("config [curate] changed", captions); styled lines opt in
# with markup=True and escape what they interpolate.
# emoji off: "llm:m:" is a model's name, not Ⓜ.
console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
# Results (a status table, search hits, evaluation tables, a config) go to stdout, so that
# `kgclip status W > f` and `$(kgclip --version)` get them; progress and logs stay on stderr.
results = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)

Sink = Callable[[str, int, "int | None"], None]
_sinks: list[Sink] = []
SINK_EVERY_S = 2.0


@contextmanager
def report_progress(sink: Sink) -> Iterator[None]:
    """Send every meter's counts to `sink` (at most every SINK_EVERY_S, and at each meter's end) while
    the block runs: the runner keeps them in the manifest, so `status` shows how far a stopped stage got."""
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.remove(sink)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class Meter:
    """Advance-only counter the stages call; rendering is not their business."""

    def __init__(self, progress: Progress | None, task: int | None, label: str, total: int | None) -> None:
        self._progress = progress
        self._task = task
        self.label = label
        self.total = total
        self.done = 0
        self._start = time.monotonic()
        self._last_line = self._start
        self._last_sink = self._start
        self.report()

    def report(self) -> None:
        for sink in _sinks:
            sink(self.label, self.done, self.total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if _sinks and now - self._last_sink >= SINK_EVERY_S:
            self._last_sink = now
            self.report()
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)
            return
        if now - self._last_line >= 10:
            self._last_line = now
            console.print(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {self.done:,}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f"/{self.total:,} ({rate:,.1f}/s, ETA {eta:,.0f}s)"
        else:
            text += f" ({rate:,.1f}/s)"
        return text


@contextmanager
def meter(label: str, total: int | None) -> Iterator[Meter]:
    """A progress bar on a terminal; without one (CI, logs) a line every 10 s and one at the end."""
    if console.is_terminal and sys.stderr.isatty():
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(label, total=total)
            m = Meter(progress, task, label, total)
            try:
                yield m
            finally:
                m.report()  # also when interrupted: what was done is what `status` shows
        return
    m = Meter(None, None, label, total)
    try:
        yield m
    finally:
        m.report()
    if m.done:
        console.print(m.line())
