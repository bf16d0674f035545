"""The Dispatcher: middlewares, then routers in the order they get a look at each update.

    ChatOrder (one chat's updates in order) → Access (owner, allowlist, allowed groups) →
    owner routers (filtered once: the owner's private chat) → refusal of owner commands →
    public commands → chat messages;  errors → one short line.

Services reach handlers as Dispatcher keyword data (`store`, `settings`, `jobs`, `conversations`, `engine`).
"""

from __future__ import annotations

from aiogram import Dispatcher, F, Router

from bot.chats import Conversations
from bot.handlers import admin, chat, errors, forget, guard, model, public
from bot.jobs import Jobs
from bot.middlewares import Access, ChatOrder
from core.settings import Settings
from engine.base import Engine
from storage import Storage


def owner_router(owner_id: int) -> Router:
    """Every owner command, behind one filter: the owner's own private chat with the bot."""
    r = Router(name="owner")
    r.message.filter(F.chat.id == owner_id, F.from_user.id == owner_id)
    r.callback_query.filter(F.from_user.id == owner_id, F.message.chat.id == owner_id)
    r.include_routers(admin.router(), model.router(), forget.router())
    return r


def build_dispatcher(
    settings: Settings, store: Storage, conversations: Conversations, jobs: Jobs, engine: Engine
) -> Dispatcher:
    owner_id: int = settings.require("owner_id")
    dp = Dispatcher(store=store, settings=settings, conversations=conversations, jobs=jobs, engine=engine)
    dp.update.outer_middleware(ChatOrder())
    access = Access(store, owner_id, settings.bot_stranger_reply)
    dp.message.outer_middleware(access)
    dp.callback_query.outer_middleware(access)
    dp.include_routers(owner_router(owner_id), guard.router(), public.router(), chat.router(), errors.router())
    return dp
