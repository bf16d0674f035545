"""Periodic training rounds for the bot's APScheduler (3.x): a trigger from settings and one job.

    scheduler = AsyncIOScheduler()
    add_training_job(scheduler, settings, on_progress=..., on_result=...)
    scheduler.start()

Every interval (or cron time) the job counts new closed sessions; with at least
settings.train_min_new_sessions it runs a round in a child process (`python -m trainer train --if-needed`).
`twin train --if-needed` applies the same rule from the system's cron.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from core.settings import Settings
from trainer.rounds import training_needed
from trainer.runner import Progress, TrainingOutcome, run_training_subprocess

log = logging.getLogger(__name__)
JOB_ID = "twin-train"
# A round that could not start on time (bot asleep, previous round running) still runs within this window.
MISFIRE_GRACE_S = 3600


def training_trigger(settings: Settings):
    """CronTrigger from settings.train_cron, else an IntervalTrigger of train_interval_hours; None = off."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if settings.train_cron:
        return CronTrigger.from_crontab(settings.train_cron)
    if settings.train_interval_hours > 0:
        return IntervalTrigger(hours=settings.train_interval_hours)
    return None


async def training_job(
    settings: Settings,
    on_progress: Progress | None = None,
    on_result: Callable[[TrainingOutcome], None | Awaitable[None]] | None = None,
) -> TrainingOutcome | None:
    """One scheduled tick: a round in a child process if enough new sessions wait, else nothing (None)."""
    needed, n, threshold = await asyncio.to_thread(training_needed, settings)
    if not needed:
        log.info("training skipped: %d new closed sessions (< %d)", n, threshold)
        return None
    log.info("training: %d new closed sessions", n)
    outcome = await run_training_subprocess(settings, ["train", "--if-needed"], on_progress)
    if on_result is not None:
        result = on_result(outcome)
        if inspect.isawaitable(result):
            await result
    return outcome


def add_training_job(scheduler, settings: Settings, on_progress: Progress | None = None, on_result=None):
    """Add (or replace) the training job on an APScheduler 3.x scheduler; returns the Job, or None when
    scheduled training is off (TWIN_TRAIN_INTERVAL_HOURS=0 and no TWIN_TRAIN_CRON)."""
    trigger = training_trigger(settings)
    if trigger is None:
        return None
    return scheduler.add_job(
        training_job,
        trigger,
        kwargs={"settings": settings, "on_progress": on_progress, "on_result": on_result},
        id=JOB_ID,
        name="training round",
        replace_existing=True,
        max_instances=1,  # never two rounds at once (the storage lock would refuse the second anyway)
        coalesce=True,  # missed ticks collapse into one round
        misfire_grace_time=MISFIRE_GRACE_S,
    )
