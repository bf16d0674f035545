"""What a sync did (SyncSummary) and how it shows progress while it runs (a rich bar per dialog)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class SyncSummary:
    dialogs_seen: int = 0  # every dialog listed, groups and channels included
    skipped: Counter[str] = field(default_factory=Counter)  # reason → dialogs that are not a person
    excluded: int = 0  # the owner's `twin exclude`, or a person forgotten with /forget
    unchanged: int = 0  # newest message not above the watermark: no history request
    synced: int = 0  # dialogs whose history was read
    new_messages: int = 0
    refreshed_messages: int = 0  # re-read by --refresh-days (edits applied)
    deleted_messages: int = 0  # found deleted on Telegram by --refresh-days, so deleted here too
    requests: Counter[str] = field(default_factory=Counter)  # API requests by type, when the client counts
    seconds: float = 0.0
    flood_wait: int | None = None  # a long flood wait stopped the sync: Telegram's wait in seconds
    flood_dialog: str | None = None
    dialogs_left: int = 0  # dialogs that still had news when the sync stopped
    failed: dict[int, str] = field(default_factory=dict)  # dialog id → error name (the sync went on)
    warnings: list[str] = field(default_factory=list)

    @property
    def history_requests(self) -> int:
        return self.requests["GetHistoryRequest"]

    @property
    def dialog_requests(self) -> int:
        return self.requests["GetDialogsRequest"]

    @property
    def stopped(self) -> bool:
        return self.flood_wait is not None

    def describe(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        lines = [
            f"dialogs: {self.dialogs_seen} listed, {sum(self.skipped.values())} not a person"
            + (f" ({skipped})" if skipped else "")
            + f", {self.excluded} excluded, {self.unchanged} unchanged, {self.synced} synced",
            f"messages: {self.new_messages} new"
            + (f", {self.refreshed_messages} re-read for edits" if self.refreshed_messages else "")
            + (f", {self.deleted_messages} deleted on Telegram (deleted here too)" if self.deleted_messages else ""),
        ]
        if self.requests:
            total = sum(self.requests.values())
            other = total - self.dialog_requests - self.history_requests
            lines.append(
                f"requests: {total} ({self.dialog_requests} dialog list, {self.history_requests} history, "
                f"{other} other) in {self.seconds:.1f} s"
            )
        else:
            lines.append(f"time: {self.seconds:.1f} s")
        if self.stopped:
            where = f" while reading {self.flood_dialog}" if self.flood_dialog else " while listing dialogs"
            lines.append(
                f"stopped: Telegram asked to wait {self.flood_wait} s{where}; everything fetched so far is "
                f"saved. Run `twin collect` again after the wait ({self.dialogs_left} dialogs left)."
            )
        for dialog_id, error in self.failed.items():
            lines.append(f"failed: dialog {dialog_id}: {error} (skipped; the next sync retries it)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class SyncProgress:
    """An overall bar over the dialogs to sync and one bar for the dialog being read.

    The dialog bar runs over message ids from the watermark to the dialog's newest id, so it fills
    exactly when the newest message is stored. Disabled (`enabled=False`) it does nothing: the bot's
    scheduled sync has no terminal.
    """

    def __init__(self, enabled: bool, dialogs: int, console: Console | None = None):
        self._bar = None
        if enabled:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console or Console(stderr=True),
                transient=True,
            )
            self._overall = self._bar.add_task("dialogs", total=dialogs, detail="")
        self._task = None
        self._start = 0
        self._count = 0

    def __enter__(self) -> SyncProgress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.stop()

    def begin(self, name: str, from_id: int, to_id: int) -> None:
        self._start, self._count = from_id, 0
        if self._bar:
            self._task = self._bar.add_task(name[:32], total=max(to_id - from_id, 1), detail="0 messages")

    def saved(self, last_id: int, n: int) -> None:
        self._count += n
        if self._bar and self._task is not None:
            self._bar.update(self._task, completed=max(last_id - self._start, 0), detail=f"{self._count} messages")

    def end(self) -> None:
        if self._bar:
            if self._task is not None:
                self._bar.remove_task(self._task)
                self._task = None
            self._bar.advance(self._overall)
