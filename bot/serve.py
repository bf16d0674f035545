"""`twin serve` as a recipe: settings → storage → engine → bot + dispatcher → scheduler → run → clean up.

Runs until SIGTERM or SIGINT, then shuts down gracefully: stop taking updates, let the replies in flight
finish, stop the scheduler and the jobs, close the engine, the Bot API session and storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiogram import Bot, Dispatcher

from bot.chats import Conversations
from bot.delivery import build_bot
from bot.dispatcher import build_dispatcher
from bot.jobs import Jobs
from bot.menu import set_menu
from bot.reporting import OwnerReports
from bot.schedule import build_scheduler
from bot.secrets import hide_in_logs
from bot.webhook import run_webhook
from core.settings import Settings
from engine.base import Engine
from storage import Storage

log = logging.getLogger(__name__)

# At shutdown, replies still being written get this long to go out.
DRAIN_SECONDS = 30.0
# Long-polling wait per getUpdates: shorter means a quicker stop, longer fewer requests when idle.
POLLING_TIMEOUT = 10


async def serve(settings: Settings) -> None:
    owner_id = settings.require("owner_id")
    hide_in_logs(settings.require("bot_token").get_secret_value())
    stop = stop_on_signals()  # first: a SIGTERM while the engine loads still shuts down cleanly
    store = open_storage(settings)
    engine = await start_engine(settings, store)
    bot = build_bot(settings)
    reports = OwnerReports(bot, owner_id)
    jobs = Jobs(settings, store, reports, engine)
    conversations = Conversations(settings, store, engine, bot)
    dp = build_dispatcher(settings, store, conversations, jobs, engine)
    scheduler = build_scheduler(settings, jobs)
    try:
        await set_menu(bot, owner_id)
        scheduler.start()
        await run_until_stopped(dp, bot, settings, stop)
    finally:
        await conversations.drain(DRAIN_SECONDS)
        scheduler.shutdown(wait=False)
        await jobs.close()
        await engine.close()
        await bot.session.close()
        store.close()
        log.info("stopped")


def open_storage(settings: Settings) -> Storage:
    settings.ensure_data_dir()
    return Storage(settings.db_path)


async def start_engine(settings: Settings, store: Storage) -> Engine:
    from engine.build import build_engine, stored_adapters

    engine = build_engine(settings, stored_adapters(store, settings))
    log.info("starting the %s engine on %s", settings.engine, settings.require("base_model"))
    await engine.start()
    return engine


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (the first one; a second SIGINT still interrupts)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: (log.info("%s: shutting down", s.name), stop.set()))
    return stop


async def run_until_stopped(dp: Dispatcher, bot: Bot, settings: Settings, stop: asyncio.Event) -> None:
    """Long polling (or the webhook server, when TWIN_BOT_WEBHOOK_URL is set) until `stop` is set."""
    if stop.is_set():
        return
    if settings.bot_webhook_url:
        await run_webhook(dp, bot, settings, stop)
        return
    await bot.delete_webhook(drop_pending_updates=False)
    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=POLLING_TIMEOUT, handle_signals=False, close_bot_session=False)
    )
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({polling, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not polling.done():
        try:
            await dp.stop_polling()
        except RuntimeError:  # stopped before polling even began
            polling.cancel()
    stopped.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await polling  # re-raises what ended polling, if it was not the stop signal


def main() -> None:
    """`python -m bot`: the same as `twin serve`, with settings from the environment and .env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(Settings()))
