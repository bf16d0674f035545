"""Owner commands from anyone else: one refusal line, and nothing else happens."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot.menu import OWNER_COMMANDS

REFUSAL = "Only the owner can do that, in a private chat with me."


async def refuse(message: Message) -> None:
    await message.answer(REFUSAL)


async def refuse_button(query: CallbackQuery) -> None:
    await query.answer(REFUSAL, show_alert=True)


def router() -> Router:
    """Placed right after the owner's router: whatever it did not take of the owner's commands lands here."""
    r = Router(name="refuse-owner-commands")
    r.message.register(refuse, Command(*OWNER_COMMANDS))
    r.callback_query.register(refuse_button)
    return r
