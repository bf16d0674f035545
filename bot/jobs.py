"""Background work of `twin serve`: syncs (collector) and training rounds (trainer, in a subprocess).

One of each kind at a time. The scheduler and the owner's /sync and /retrain start the same jobs; a
job's result or failure goes to the owner's chat and never into the process (the bot keeps running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from bot.reporting import OwnerReports, Progress
from collector.sync_lock import SyncGuard
from collector.telethon_client import connected_client
from collector.telethon_sync import sync as sync_dialogs
from core.errors import UserError
from core.settings import Settings
from engine.base import AdapterRef, Engine
from evaluation.round import MODULE as ROUND_WITH_REPORT
from storage import Storage
from trainer.rounds import RoundOptions, training_needed
from trainer.runner import run_training_subprocess

log = logging.getLogger(__name__)


class TrainingFailed(UserError):
    """The trainer reported a failed round (its message says why)."""


def describe_training(outcome: Any) -> str:
    """For the owner: the new version, its eval loss, promoted or not (and why), then the round's warnings."""
    reason = outcome.final.get("reason") or ""
    if outcome.version is None:
        return f"Training finished without a new adapter: {reason or outcome.status}."
    loss = f"eval loss {outcome.eval_loss:.4f}" if outcome.eval_loss is not None else "no eval loss"
    verdict = "promoted: I answer with it from now on" if outcome.promoted else "not promoted"
    line = f"Adapter {outcome.version:04d}: {loss}, {verdict}" + (f" ({reason})." if reason else ".")
    # What the round noticed (an eval leak, a report that failed, ...) reaches the owner, not just the log.
    return "\n".join([line, *(f"Warning: {w}" for w in outcome.final.get("warnings") or [])])


def describe_progress(event: dict) -> str | None:
    """A training event as one progress line (None for events not worth showing)."""
    kind = event.get("event")
    if kind == "plan":
        return (
            f"Training: {event.get('reason', 'new round')}; {event.get('train_sessions')} sessions, "
            f"{event.get('steps')} steps"
        )
    if kind == "step":
        return f"Training: step {event['step']}/{event['of']}, loss {event['loss']:.4f}"
    if kind == "eval" and event.get("eval_loss") is not None:
        return f"Evaluating: eval loss {event['eval_loss']:.4f}"
    return None


class Jobs:
    """Starts and tracks the background jobs. `sync_client` opens a logged-in Telethon client and
    `train` runs one training round (defaults: collector's connected_client, trainer's subprocess with
    evaluation's report)."""

    def __init__(
        self,
        settings: Settings,
        store: Storage,
        reports: OwnerReports,
        engine: Engine | None = None,
        *,
        sync_client: Callable | None = None,
        train: Callable | None = None,
    ):
        self.settings, self.store, self.reports, self.engine = settings, store, reports, engine
        self._sync_client = sync_client
        self._train = train
        self._guard = SyncGuard(settings.data_dir)
        self._tasks: dict[str, asyncio.Task] = {}
        self._last_failure: dict[str, str] = {}
        self._full_after = False  # a full round is due once the running one ends (see retrain_full)

    # -- bookkeeping ------------------------------------------------------------------------------------
    def running(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    def _start(self, name: str, coro) -> bool:
        if name in self.running():
            coro.close()
            return False
        self._tasks[name] = asyncio.create_task(coro, name=f"twin-{name}")
        log.info("%s started", name)
        return True

    async def cancel_training(self) -> bool:
        """Stop the running round (its subprocess is terminated, nothing of it is kept); False if none ran."""
        task = self._tasks.get("training")
        if task is None or task.done():
            return False
        self._full_after = False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    async def close(self) -> None:
        """Stop what is running (a training subprocess is terminated by its runner on cancel)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _report_failure(self, name: str, exc: BaseException, scheduled: bool) -> None:
        text = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__} (the log has details)"
        if not isinstance(exc, UserError):
            log.error("%s failed", name, exc_info=exc)
        # A scheduled job that keeps failing the same way is reported once, not every period.
        if scheduled and self._last_failure.get(name) == text:
            return
        self._last_failure[name] = text
        await self.reports.say(f"{name.capitalize()} failed: {text}")

    # -- sync -------------------------------------------------------------------------------------------
    def start_sync(self, scheduled: bool = False) -> bool:
        """Start a sync now; False when one is running already."""
        return self._start("sync", self._sync_job(scheduled))

    async def sync(self):
        """One sync with the owner's Telethon client; returns the collector's SyncSummary."""
        connect = self._sync_client or connected_client
        async with connect(self.settings) as client:
            return await sync_dialogs(
                client,
                self.store,
                self.settings,
                refresh_days=self.settings.sync_refresh_days,
                progress=False,
                guard=self._guard,
            )

    async def _sync_job(self, scheduled: bool) -> None:
        try:
            summary = await self.sync()
        except Exception as exc:
            await self._report_failure("sync", exc, scheduled)
            return
        self._last_failure.pop("sync", None)
        if not scheduled or summary.new_messages:
            await self.reports.say("Sync done.\n" + summary.describe())

    # -- training ---------------------------------------------------------------------------------------
    def start_training(self, full: bool = False, scheduled: bool = False) -> bool:
        """Start a training round now; False when one is running already."""
        return self._start("training", self._training_job(full, scheduled))

    async def train(self, opts: RoundOptions, progress: Progress | None = None):
        """One round with its report in a subprocess (`python -m evaluation.round`, given `opts`); returns the
        trainer's TrainingOutcome. A round that failed comes back as an outcome with status "error", raised
        here as TrainingFailed."""

        async def on_progress(event: dict) -> None:
            if progress is not None and (text := describe_progress(event)):
                await progress.update(text)

        train = self._train or partial(run_training_subprocess, module=ROUND_WITH_REPORT)
        outcome = await train(self.settings, opts, on_progress)
        if outcome.status == "error":
            log.error("training round failed: %s\n%s", outcome.error, outcome.stderr_tail)
            raise TrainingFailed(outcome.error or "the training round failed")
        return outcome

    async def scheduled_training(self) -> None:
        """The scheduler's tick: a round when the trainer's rule says enough new sessions wait."""
        needed, n, threshold = await asyncio.to_thread(training_needed, self.settings)
        if not needed:
            log.info("scheduled training skipped: %d new closed sessions (< %d)", n, threshold)
            return
        self.start_training(scheduled=True)

    def retrain_full(self) -> None:
        """A full round from the base model: now, or right after the running one (which may have read
        data that is gone since, e.g. after /forget)."""
        if not self.start_training(full=True):
            self._full_after = True

    async def _training_job(self, full: bool, scheduled: bool) -> None:
        while True:
            await self._training_round(full, scheduled)
            if not self._full_after:
                return
            self._full_after, full, scheduled = False, True, False

    async def _training_round(self, full: bool, scheduled: bool) -> None:
        progress = None if scheduled else self.reports.progress()
        try:
            result = await self.train(RoundOptions(full=full), progress)
        except Exception as exc:
            await self._report_failure("training", exc, scheduled)
            return
        self._last_failure.pop("training", None)
        await self._load_promoted(result)
        if not scheduled or result.version is not None:
            await self.reports.say(describe_training(result))

    async def _load_promoted(self, result: Any) -> None:
        """Load a promoted adapter into the engine now, so its smoke check runs before the next reply."""
        if not (self.engine and result.promoted and result.version):
            return
        row = await asyncio.to_thread(self.store.adapter, result.version)
        if row and not await self.engine.load(AdapterRef.from_row(row, self.settings.data_dir)):
            reason = self.engine.rejected.get(result.version, "failed the smoke check")
            await self.reports.say(f"Adapter {result.version:04d} is not served: {reason}")
