"""`twin serve` as a recipe: settings → storage → engine → bot + dispatcher → scheduler → run → clean up.

Runs until SIGTERM or SIGINT, then shuts down gracefully: stop taking updates, let the replies in flight
finish, stop the scheduler and the jobs, close the engine, the Bot API session and storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError

from bot.chats import Conversations
from bot.delivery import build_bot
from bot.dispatcher import build_dispatcher
from bot.jobs import Jobs
from bot.menu import set_menu
from bot.reporting import OwnerReports
from bot.schedule import build_scheduler
from bot.secrets import hide_in_logs
from bot.webhook import run_webhook
from collector.drafts import run_drafts
from collector.telethon_client import connected_client, shared_client
from core.errors import UserError
from core.settings import Settings
from engine.base import AdapterRef, Engine
from engine.base_model import base_model_path
from engine.build import build_engine, stored_adapters
from storage import Storage, open_storage

log = logging.getLogger(__name__)

# At shutdown, replies still being written get this long to go out.
DRAIN_SECONDS = 30.0
# Long-polling wait per getUpdates: shorter means a quicker stop, longer fewer requests when idle.
POLLING_TIMEOUT = 10


async def serve(settings: Settings) -> None:
    secrets = (settings.require("bot_token"), settings.api_hash, settings.session, settings.bot_webhook_secret)
    hide_in_logs(*(s.get_secret_value() for s in secrets if s is not None))
    if logging.getLogger().level > logging.DEBUG:  # one INFO line per update is noise over months (-v keeps it)
        logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    owner_id = settings.require("owner_id")
    stop = stop_on_signals()  # first: a SIGTERM while the engine loads still shuts down cleanly
    # Each part's clean-up is registered as soon as it exists; they run in reverse order, on errors too:
    # drain the replies in flight → stop the scheduler → stop the jobs → close the engine → session → storage.
    async with contextlib.AsyncExitStack() as cleanup:
        store = cleanup.enter_context(contextlib.closing(open_storage(settings)))
        bot = build_bot(settings)
        cleanup.push_async_callback(bot.session.close)
        await check_token(bot)  # a wrong token fails now, not after a minute of loading the model
        # A base model that cannot load stops here, in one line; a GGUF converts (once) off the event loop.
        model = await asyncio.to_thread(base_model_path, settings)
        engine = build_engine_for(settings, store)
        cleanup.push_async_callback(engine.close)  # also stops a half-started engine
        log.info("starting the %s engine on %s", settings.engine, model)
        await engine.start()
        await check_active_adapter(engine, store, settings)
        sync_client = None
        if settings.drafts:  # TWIN_DRAFTS=on: the owner's own client drafts replies in their chats
            client = await cleanup.enter_async_context(connected_client(settings))
            await run_drafts(client, store, settings, engine)
            sync_client = shared_client(client)  # one client per session: the scheduled syncs use it too
        jobs = Jobs(settings, store, OwnerReports(bot, owner_id), engine, sync_client=sync_client)
        cleanup.push_async_callback(jobs.close)
        conversations = Conversations(settings, store, engine, bot)
        dp = build_dispatcher(settings, store, conversations, jobs, engine)
        scheduler = build_scheduler(settings, jobs)
        gc.freeze()  # start-up's objects (model, aiogram types) live on: GC passes skip them, pauses stay short
        await set_menu(bot, owner_id)
        scheduler.start()
        cleanup.callback(scheduler.shutdown, wait=False)
        cleanup.push_async_callback(conversations.drain, DRAIN_SECONDS)
        await run_until_stopped(dp, bot, settings, stop)
    log.info("stopped")


async def check_active_adapter(engine: Engine, store: Storage, settings: Settings) -> None:
    """Smoke check at start-up: an active adapter that does not change the output is not served (vLLM
    silently serves base-model output when module names don't match); the engine falls back and says why."""
    row = store.active_adapter()
    if row and not await engine.load(AdapterRef.from_row(row, settings.data_dir)):
        reason = engine.rejected.get(row["version"], "failed the smoke check")
        log.error("the active adapter %04d is not served: %s", row["version"], reason)


def build_engine_for(settings: Settings, store: Storage) -> Engine:
    """The engine TWIN_ENGINE names, sized for the adapters in storage (vLLM's max_lora_rank)."""
    return build_engine(settings, stored_adapters(store, settings))


async def check_token(bot: Bot) -> None:
    """Telegram must accept the token; a network problem is only logged (polling retries by itself)."""
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        raise UserError(
            "Telegram refused TWIN_BOT_TOKEN (401 Unauthorized): copy the token again from "
            "@BotFather (/mybots → API Token) into .env"
        ) from None
    except TelegramNetworkError as exc:
        log.warning("cannot reach the Bot API yet (%s): polling will keep trying", type(exc).__name__)
        return
    log.info("bot @%s (id %d)", me.username, me.id)


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


def run(settings: Settings) -> int:
    """Run `serve` to the end; 1 after an unexpected error, logged through the token filter (a traceback
    printed by Python itself could show a request URL, and so the token)."""
    try:
        asyncio.run(serve(settings))
    except UserError:
        raise
    except Exception:
        log.exception("twin serve stopped on an unexpected error")
        return 1
    return 0


def main() -> None:
    """`python -m bot`: the same as `twin serve`, with settings from the environment and .env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run(Settings())
    except UserError as exc:
        log.error("%s", exc)
        code = 1
    raise SystemExit(code)
