"""Errors in handlers: a UserError is the user's one-line answer; anything else is logged, and the
user gets one short line. The bot keeps going either way."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent

from core.errors import UserError

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on my side; the log has the details."


async def _answer(event: ErrorEvent, text: str) -> None:
    update = event.update
    if update.message:
        await update.message.answer(text)
    elif update.callback_query:
        await update.callback_query.answer(text[:200], show_alert=True)


async def user_error(event: ErrorEvent) -> None:
    await _answer(event, str(event.exception))


async def unexpected(event: ErrorEvent) -> None:
    log.error("update %d failed", event.update.update_id, exc_info=event.exception)
    await _answer(event, UNEXPECTED)


def router() -> Router:
    r = Router(name="errors")
    r.errors.register(user_error, ExceptionTypeFilter(UserError))
    r.errors.register(unexpected)
    return r
