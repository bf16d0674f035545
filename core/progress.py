"""Progress of long work on the command line: training steps, a report's replies.

    with ProgressDisplay(Console(stderr=True)) as progress:
        progress.update("train", "training", step, steps)   # any number of keys, each its own bar

On a terminal: a rich bar per key (description, bar, done/of, elapsed, time left); log lines print above the
bars instead of through them. Anywhere else (a pipe, a log file, CI): plain lines on stderr when a key starts,
about every tenth of it, and when it ends, each with done/of and an ETA, so a log says where the work is
without a line per step.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Plain lines per key: one per tenth done, so a thousand steps write a dozen lines, not a thousand.
PLAIN_LINES = 10


def duration(seconds: float) -> str:
    """45s, 3m12s, 1h04m: short enough for a progress line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class _PlainKey:
    """What the plain lines of one key remember: when it was first seen, at what count, the last tenth shown."""

    started: float
    first_done: int
    shown: int = -1


class ProgressDisplay:
    """Bars on a terminal, plain lines on stderr elsewhere. Use it as a context manager; `update` may be
    called before, inside or after the block (outside it, only plain lines are written)."""

    def __init__(self, console: Console):
        self.console = console
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._plain: dict[str, _PlainKey] = {}
        self._log_streams: list[tuple[logging.StreamHandler, object]] = []

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            stderr = sys.stderr
            self._bar.start()  # from here sys.stderr prints above the bars
            self._route_logging(stderr, sys.stderr)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            for handler, stream in self._log_streams:
                handler.setStream(stream)
            self._log_streams.clear()
            self._bar.stop()
            self._bar = None

    def update(self, key: str, description: str, done: int, total: int) -> None:
        """`done` of `total` for `key` (e.g. "train", "replies base/alice"); `description` labels it."""
        if self._bar is None:
            self._plain_line(key, description, done, total)
        elif key in self._tasks:
            self._bar.update(self._tasks[key], description=description, completed=done, total=total)
        else:
            self._tasks[key] = self._bar.add_task(description, total=total, completed=done)

    def _plain_line(self, key: str, description: str, done: int, total: int) -> None:
        state = self._plain.setdefault(key, _PlainKey(time.monotonic(), done))
        tenth = PLAIN_LINES if done >= total else done * PLAIN_LINES // total
        if tenth <= state.shown:
            return
        state.shown = tenth
        elapsed = time.monotonic() - state.started
        if done >= total:
            line = f"{description}: {done}/{total} done in {duration(elapsed)}"
        elif done > state.first_done:
            eta = elapsed / (done - state.first_done) * (total - done)
            line = f"{description}: {done}/{total}, eta {duration(eta)}"
        else:
            line = f"{description}: {done}/{total}"
        print(line, file=sys.stderr, flush=True)

    def _route_logging(self, before: object, proxy: object) -> None:
        """Root log handlers writing to stderr write through rich's proxy while the bars are live."""
        if proxy is before:
            return
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is before:
                self._log_streams.append((handler, handler.setStream(proxy)))


def show_report_progress(progress: ProgressDisplay, event: dict) -> bool:
    """Draw a `report_progress` event (from `twin eval`, or a round's report in `twin train`) on `progress`:
    one bar per stage, model and persona, e.g. "replies current/alice". False for any other event."""
    if event.get("event") != "report_progress":
        return False
    label = f"{event['stage']} {event['model']}" + (f"/{event['persona']}" if event.get("persona") else "")
    progress.update(label, label, event["done"], event["of"])
    return True
