"""Webhook mode (TWIN_BOT_WEBHOOK_URL): Telegram posts updates to an aiohttp server instead of long polling.

The path holds no token (access logs would show it); Telegram proves itself with the secret header.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

from core.errors import UserError
from core.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram"


def listen_address(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.bot_webhook_listen.rpartition(":")
    if not port.isdigit():
        raise UserError(f"TWIN_BOT_WEBHOOK_LISTEN={settings.bot_webhook_listen!r}: use host:port, e.g. 0.0.0.0:8080")
    return host or "0.0.0.0", int(port)


async def run_webhook(dp: Dispatcher, bot: Bot, settings: Settings, stop: asyncio.Event) -> None:
    secret = settings.bot_webhook_secret.get_secret_value() if settings.bot_webhook_secret else None
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
