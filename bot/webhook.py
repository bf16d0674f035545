"""Webhook mode (TWIN_BOT_WEBHOOK_URL): Telegram posts updates to an aiohttp server instead of long polling.

The path holds no token (access logs would show it); Telegram proves itself with the secret header: the
configured TWIN_BOT_WEBHOOK_SECRET, else a random one made for this run and given only to setWebhook. A request
without it gets 401 and never reaches the Dispatcher (owner ids are no secret: anyone could post as the owner).
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from bot.secrets import hide_in_logs
from core.errors import UserError
from core.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram"
# Random bytes of a secret made per run: 32 give 43 URL-safe characters (Telegram takes 1-256 of A-Za-z0-9_-).
SECRET_BYTES = 32


def listen_address(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.bot_webhook_listen.rpartition(":")
    if not port.isdigit():
        raise UserError(f"TWIN_BOT_WEBHOOK_LISTEN={settings.bot_webhook_listen!r}: use host:port, e.g. 0.0.0.0:8080")
    return host or "0.0.0.0", int(port)


def webhook_secret(settings: Settings) -> str:
    """TWIN_BOT_WEBHOOK_SECRET, or a fresh random one (setWebhook replaces the old one on every start);
    either way kept out of the logs."""
    configured = settings.bot_webhook_secret.get_secret_value() if settings.bot_webhook_secret else ""
    secret = configured or secrets.token_urlsafe(SECRET_BYTES)
    hide_in_logs(secret)
    return secret


async def run_webhook(dp: Dispatcher, bot: Bot, settings: Settings, stop: asyncio.Event) -> None:
    secret = webhook_secret(settings)
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path=WEBHOOK_PATH)
    setup_application(app, dp, bot=bot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = listen_address(settings)
    await web.TCPSite(runner, host, port).start()
    url = settings.bot_webhook_url.rstrip("/") + WEBHOOK_PATH
    await bot.set_webhook(url, secret_token=secret, allowed_updates=dp.resolve_used_update_types())
    log.info("webhook server on %s:%d, Telegram posts to %s", host, port, url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
