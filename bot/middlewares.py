"""Dispatcher middlewares: one chat's updates in arrival order, and who may talk to the twin at all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, User

from storage import Storage

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
# Strangers remembered as already told off; past this many the memory starts over (a flood cannot grow it).
MAX_STRANGERS_REMEMBERED = 10_000


class ChatOrder(BaseMiddleware):
    """Handles one chat's updates one at a time, in the order they arrived (an outer update middleware).

    Polling starts a task per update in arrival order and this runs before any handler can yield, so the
    FIFO lock is taken in arrival order: `/persona bob` then "hi" always answers "hi" as bob. Other chats
    are not held up. Handlers only queue work, so the lock is held for milliseconds.
    """

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._holders: dict[int, int] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        chat: Chat | None = data.get("event_chat")
        if chat is None:
            return await handler(event, data)
        lock = self._locks.setdefault(chat.id, asyncio.Lock())
        self._holders[chat.id] = self._holders.get(chat.id, 0) + 1
        try:
            async with lock:
                return await handler(event, data)
        finally:
            self._holders[chat.id] -= 1
            if not self._holders[chat.id]:  # forget idle chats: memory stays bounded by busy ones
                del self._holders[chat.id], self._locks[chat.id]


class Access(BaseMiddleware):
    """The owner always; others only when allowed; group chats only when the group is allowed.

    A stranger in a private chat gets `stranger_reply` once (nothing when it is empty) and never reaches
    a handler, so no command of theirs has any effect and no model output is ever made for them.
    Sets `is_owner` for handlers.
    """

    def __init__(self, store: Storage, owner_id: int, stranger_reply: str = ""):
        self.store, self.owner_id, self.stranger_reply = store, owner_id, stranger_reply
        self._told: set[int] = set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        if user is None or user.is_bot:
            return None
        data["is_owner"] = user.id == self.owner_id
        if data["is_owner"] or await asyncio.to_thread(self.allowed, user, chat):  # storage off the loop
            return await handler(event, data)
        if chat is not None and chat.type == ChatType.PRIVATE:
            await self.turn_away(event, user)
        return None

    def allowed(self, user: User, chat: Chat | None) -> bool:
        if chat is not None and chat.type != ChatType.PRIVATE:
            return self.store.is_allowed(chat.id)
        return self.store.is_allowed(user.id, user.username)

    async def turn_away(self, event: TelegramObject, user: User) -> None:
        if isinstance(event, CallbackQuery):
            await event.answer()
            return
        if not self.stranger_reply or user.id in self._told or not isinstance(event, Message):
            return
        if len(self._told) >= MAX_STRANGERS_REMEMBERED:
            self._told.clear()
        self._told.add(user.id)
        log.info("turned away user %d", user.id)
        await event.answer(self.stranger_reply)
