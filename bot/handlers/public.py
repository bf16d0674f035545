"""Commands anyone allowed may use: /start, /help, /persona, /personas; unknown commands get a hint.

Each answer is put together on a worker thread (asyncio.to_thread): the persona list counts every message,
and the event loop must go on serving every other chat meanwhile.
"""

from __future__ import annotations

import asyncio

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot.menu import help_text
from bot.personas import chat_persona, choices, may_play, owner_slug
from core.settings import Settings
from storage import Storage


async def start(message: Message, store: Storage, settings: Settings, is_owner: bool) -> None:
    persona = await asyncio.to_thread(chat_persona, store, message.chat.id, message.from_user.id, settings.owner_id)
    await message.answer(
        f"Hi! Here I'm {persona}. Just write to me. /persona switches who I play, /help lists what I can do."
    )


async def help_(message: Message, is_owner: bool) -> None:
    await message.answer(help_text(is_owner))


def _listing(rows: list[dict], current: str, own: str) -> str:
    lines = []
    for p in rows:
        marks = [m for m, on in (("here now", p["slug"] == current), ("default", p["slug"] == own)) if on]
        extra = f" ({', '.join(marks)})" if marks else ""
        lines.append(f"{p['slug']} — {p['messages']} messages{extra}")
    return "\n".join(lines)


async def persona(message: Message, command: CommandObject, store: Storage, settings: Settings) -> None:
    wanted = (command.args or "").strip().lstrip("@").lower()
    args = (store, message.chat.id, message.from_user.id, settings.owner_id, wanted)
    await message.answer(await asyncio.to_thread(persona_answer, *args))


def persona_answer(store: Storage, chat_id: int, user_id: int, owner_id: int, wanted: str) -> str:
    """/persona: who the twin plays here and the choices, or the switch to `wanted` (stored)."""
    if not wanted:
        current = chat_persona(store, chat_id, user_id, owner_id)
        names = ", ".join(p["slug"] for p in choices(store, user_id, owner_id))
        return f"Here I'm {current}. You can pick: {names}\nSwitch with /persona NAME."
    if not may_play(store, wanted, user_id, owner_id):
        return f"There is no persona {wanted!r} for you: /personas lists the ones you can pick."
    store.set_chat_persona(chat_id, wanted)
    return f"From now on I'm {wanted} in this chat."


async def personas(message: Message, store: Storage, settings: Settings) -> None:
    args = (store, message.chat.id, message.from_user.id, settings.owner_id)
    await message.answer(await asyncio.to_thread(personas_answer, *args))


def personas_answer(store: Storage, chat_id: int, user_id: int, owner_id: int) -> str:
    rows = choices(store, user_id, owner_id)
    current = chat_persona(store, chat_id, user_id, owner_id)
    return _listing(rows, current, owner_slug(store, owner_id)) + "\n\nSwitch with /persona NAME."


async def unknown_command(message: Message) -> None:
    await message.answer("I don't know that command: /help lists the ones I know.")


def router() -> Router:
    r = Router(name="public")
    r.message.register(start, CommandStart())
    r.message.register(help_, Command("help"))
    r.message.register(persona, Command("persona"))
    r.message.register(personas, Command("personas"))
    r.message.register(unknown_command, F.text.startswith("/"), F.chat.type == "private")
    return r
