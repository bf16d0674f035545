"""Talking to the Bot API: the Bot object, Telegram's message size limit, flood waits and typing pauses."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.utils.token import TokenValidationError

from core.errors import UserError
from core.settings import Settings

log = logging.getLogger(__name__)

# Telegram's limit for one text message, in UTF-16 code units (an emoji outside the BMP counts twice).
MAX_MESSAGE_UTF16 = 4096
# A flood wait up to this long is slept through and the request retried; a longer one is an error.
MAX_RETRY_AFTER = 60
RETRY_ATTEMPTS = 3
# The typing pause grows with the message up to this many characters, then stays at the full delay.
FULL_DELAY_CHARS = 100


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_MESSAGE_UTF16) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, cut at the last newline or space of each piece when one
    lies in its second half (else mid-word), never inside a surrogate pair."""
    pieces: list[str] = []
    while _utf16_len(text) > limit:
        end, units = 0, 0
        while end < len(text) and units + _utf16_len(text[end]) <= limit:
            units += _utf16_len(text[end])
            end += 1
        cut = max(text.rfind("\n", 0, end), text.rfind(" ", 0, end))
        if cut > end // 2:
            end = cut
        pieces.append(text[:end].rstrip())
        text = text[end:].lstrip()
    if text.strip():
        pieces.append(text)
    return pieces


def typing_pause(text: str, full_delay: float) -> float:
    """Seconds of "typing…" before a message: short messages come quicker, like a person's."""
    return full_delay * min(1.0, 0.3 + len(text) / FULL_DELAY_CHARS)


class HonourRetryAfter(BaseRequestMiddleware):
    """Sleeps through Telegram's flood waits (TelegramRetryAfter) and retries the request."""

    async def __call__(self, make_request: NextRequestMiddlewareType, bot: Bot, method: TelegramMethod) -> Response:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if exc.retry_after > MAX_RETRY_AFTER or attempt == RETRY_ATTEMPTS:
                    raise
                log.warning("%s: flood wait of %d s, retrying", method.__api_method__, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
        raise AssertionError("unreachable")


def build_bot(settings: Settings, session: BaseSession | None = None) -> Bot:
    """The Bot for TWIN_BOT_TOKEN, on TWIN_BOT_API_URL when set (a self-hosted Bot API server).

    `session` replaces the HTTP session (tests pass a fake one); flood waits are honoured either way.
    """
    token = settings.require("bot_token").get_secret_value()
    if session is None:
        api = TelegramAPIServer.from_base(settings.bot_api_url) if settings.bot_api_url else None
        session = AiohttpSession(api=api) if api else AiohttpSession()
    session.middleware(HonourRetryAfter())
    try:
        return Bot(token=token, session=session)
    except TokenValidationError:
        raise UserError(
            "TWIN_BOT_TOKEN does not look like a bot token (123456789:AAE...): copy it again from @BotFather into .env"
        ) from None


async def send_text(bot: Bot, chat_id: int, text: str, pause: float = 0.0) -> None:
    """One logical message: a typing pause (when `pause` > 0), then as many pieces as its length needs."""
    if pause > 0:
        await bot.send_chat_action(chat_id, ChatAction.TYPING)
        await asyncio.sleep(pause)
    for piece in split_text(text):
        await bot.send_message(chat_id, piece)
