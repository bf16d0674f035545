"""The periodic jobs of `twin serve` on an apscheduler AsyncIOScheduler: sync (collector) and training.

The scheduler only starts jobs (bot.jobs.Jobs); a job still running when its next turn comes is skipped.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.jobs import Jobs
from core.settings import Settings

log = logging.getLogger(__name__)

# The first scheduled sync waits this long after start: the bot answers first, then the collector runs.
FIRST_SYNC_DELAY = dt.timedelta(minutes=1)
# A round that could not start on time (bot asleep, previous round running) still runs within this window.
MISFIRE_GRACE_S = 3600


def build_scheduler(settings: Settings, jobs: Jobs) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    add_sync_job(scheduler, settings, jobs)
    add_training_job(scheduler, settings, jobs)
    return scheduler


def training_trigger(settings: Settings):
    """CronTrigger from settings.train_cron, else an IntervalTrigger of train_interval_hours; None = off."""
    if settings.train_cron:
        return CronTrigger.from_crontab(settings.train_cron)
    if settings.train_interval_hours > 0:
        return IntervalTrigger(hours=settings.train_interval_hours)
    return None


def add_sync_job(scheduler: AsyncIOScheduler, settings: Settings, jobs: Jobs) -> None:
    if not settings.sync_interval_minutes:
        log.info("scheduled sync is off (TWIN_SYNC_INTERVAL_MINUTES=0)")
        return
    if settings.api_id is None or settings.api_hash is None:
        log.info("no scheduled sync: TWIN_API_ID / TWIN_API_HASH are not set (see `twin login --help`)")
        return
    scheduler.add_job(
        jobs.start_sync,
        "interval",
        minutes=settings.sync_interval_minutes,
        kwargs={"scheduled": True},
        id="sync",
        next_run_time=dt.datetime.now() + FIRST_SYNC_DELAY,
        coalesce=True,
        max_instances=1,
    )


def add_training_job(scheduler: AsyncIOScheduler, settings: Settings, jobs: Jobs) -> None:
    """The trainer's trigger (TWIN_TRAIN_CRON or TWIN_TRAIN_INTERVAL_HOURS) and its rule (at least
    TWIN_TRAIN_MIN_NEW_SESSIONS new closed sessions), run through Jobs like /retrain."""
    trigger = training_trigger(settings)
    if trigger is None:
        log.info("scheduled training is off (TWIN_TRAIN_INTERVAL_HOURS=0, no TWIN_TRAIN_CRON)")
        return
    scheduler.add_job(
        jobs.scheduled_training,
        trigger,
        id="training",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=MISFIRE_GRACE_S,
    )
