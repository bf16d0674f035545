"""The bot under test with only its edges faked: the Bot API's HTTP session and (where a test says so) the
engine. The Dispatcher, routers, middlewares, storage and jobs are the real ones.

`FakeSession` follows aiogram's own tests/mocked_bot.py: a BaseSession subclass that records every request
and answers it with a canned result, passed through aiogram's real `check_response`, so errors such as a
flood wait reach the bot as the real exception (TelegramRetryAfter).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import TelegramMethod
from aiogram.types import Update

from bot.chats import Conversations
from bot.delivery import build_bot
from bot.dispatcher import build_dispatcher
from bot.jobs import Jobs
from bot.reporting import OwnerReports
from core.format import NO_MEMORY, ChatTurn, MemoryBlock
from core.settings import Settings
from storage import open_storage

BOT_ID, BOT_USERNAME = 42, "twin_test_bot"
TOKEN = f"{BOT_ID}:TEST-token-secret-part"
OWNER = 1000


@dataclass
class Sent:
    """One request the bot made: the API method name and its parameters."""

    method: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeSession(BaseSession):
    """Records requests; answers each with a plausible result, or with a planned error response."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []
        self._ids = itertools.count(1)
        self._errors: dict[str, list[dict[str, Any]]] = {}
        self.latency = 0.0  # seconds each request takes (a network stand-in)

    def fail(self, method: str, error_code: int, description: str, **parameters: Any) -> None:
        """The next `method` request gets this error response (e.g. 429 with retry_after)."""
        body = {"ok": False, "error_code": error_code, "description": description}
        if parameters:
            body["parameters"] = parameters
        self._errors.setdefault(method, []).append(body)

    async def close(self) -> None:
        pass

    async def make_request(self, bot: Bot, method: TelegramMethod, timeout: int | None = None) -> Any:
        name = method.__api_method__
        self.sent.append(Sent(name, method.model_dump(exclude_none=True)))
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._errors.get(name):
            body = self._errors[name].pop(0)
            self.check_response(bot, method, body["error_code"], json.dumps(body))
        result = self.result_for(name, method)
        return self.check_response(bot, method, 200, json.dumps({"ok": True, "result": result})).result

    def result_for(self, name: str, method: TelegramMethod) -> Any:
        if name == "getMe":
            return {"id": BOT_ID, "is_bot": True, "first_name": "Twin", "username": BOT_USERNAME}
        if name in ("sendMessage", "sendPhoto", "editMessageText"):
            chat_id = getattr(method, "chat_id", None) or OWNER
            return {
                "message_id": next(self._ids),
                "date": int(time.time()),
                "text": getattr(method, "text", None),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            }
        if name == "getUpdates":
            return []
        return True

    async def stream_content(self, *args, **kwargs) -> AsyncIterator[bytes]:  # pragma: no cover
        yield b""

    # -- what tests read ------------------------------------------------------------------------------
    def calls(self, method: str, chat_id: int | None = None) -> list[Sent]:
        return [s for s in self.sent if s.method == method and (chat_id is None or s.data.get("chat_id") == chat_id)]

    def texts(self, chat_id: int) -> list[str]:
        return [s.data["text"] for s in self.calls("sendMessage", chat_id)]


class EngineDouble:
    """Stands in for the engine in pure-bot tests: records each call, answers with `answer(turns, persona)`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.delay = 0.0
        self.error: BaseException | None = None
        self.rejected: dict[int, str] = {}
        self.answer: Callable[[list[ChatTurn], str], list[str]] = lambda turns, persona: [
            f"{persona} re: {turns[-1].messages[-1]}"
        ]

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def load(self, adapter) -> bool:
        return True

    async def drop(self, versions) -> None:
        self.rejected.update({v: "deleted" for v in versions})

    def memory_block(self, recalled, budget: int) -> MemoryBlock:
        """No tokenizer here: every recalled exchange fits, its ids left empty."""
        return MemoryBlock(tuple(recalled)) if budget else NO_MEMORY

    async def reply(
        self, turns, persona, partner, adapter, memory: MemoryBlock = NO_MEMORY, time: str = ""
    ) -> list[str]:
        self.calls.append(
            {"turns": list(turns), "persona": persona, "partner": partner, "adapter": adapter, "memory": memory}
            | {"time": time}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.answer(list(turns), persona)


def telegram_mentions(text: str) -> list[dict[str, Any]]:
    """The `mention` entities Telegram attaches to a text's @usernames (offsets in UTF-16 code units)."""
    utf16 = lambda s: len(s.encode("utf-16-le")) // 2  # noqa: E731
    return [
        {"type": "mention", "offset": utf16(text[: m.start()]), "length": utf16(m.group())}
        for m in re.finditer(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b", text)
    ]


class TwinUnderTest:
    """A whole bot wired as `twin serve` wires it, fed updates through the real Dispatcher.feed_update."""

    def __init__(
        self,
        data_dir: Path,
        *,
        train: Callable | None = None,
        sync_client: Callable | None = None,
        engine: Any = None,
        **settings: Any,
    ):
        # base_model "tiny": what the adapters the tests store say they were trained on (nothing loads it).
        values = {
            "data_dir": data_dir,
            "owner_id": OWNER,
            "bot_token": TOKEN,
            "bot_typing_delay": 0.0,
            "bot_reply_timeout": 5.0,
            "session_gap_minutes": 60,
            "base_model": "tiny",
            **settings,
        }
        self.settings = Settings(_env_file=None, **values)
        self.settings.ensure_data_dir()
        self.store = open_storage(self.settings)  # as the bot: the memory index as TWIN_MEMORY_SCOPE asks
        self.engine = engine if engine is not None else EngineDouble()  # a real one for load tests
        self.session = FakeSession()
        self.bot = build_bot(self.settings, session=self.session)
        self.jobs = Jobs(
            self.settings, self.store, OwnerReports(self.bot, OWNER), self.engine, sync_client=sync_client, train=train
        )
        self.conversations = Conversations(self.settings, self.store, self.engine, self.bot)
        self.dp = build_dispatcher(self.settings, self.store, self.conversations, self.jobs, self.engine)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    def update(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        first_name: str = "Sasha",
        username: str | None = None,
        chat_type: str = "private",
        when: float | None = None,
        **message: Any,
    ) -> Update:
        chat_id = chat_id if chat_id is not None else user_id
        chat = {"id": chat_id, "type": chat_type, **({"title": "group"} if chat_type != "private" else {})}
        user = {
            "id": user_id,
            "is_bot": False,
            "first_name": first_name,
            **({"username": username} if username else {}),
        }
        msg = {
            "message_id": next(self._message_ids),
            "date": int(when or time.time()),
            "chat": chat,
            "from": user,
            "text": text,
            **message,
        }
        if text.startswith("/"):
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        elif mentions := telegram_mentions(text):
            msg["entities"] = mentions
        return Update.model_validate({"update_id": next(self._update_ids), "message": msg}, context={"bot": self.bot})

    def button(self, user_id: int, data: str, chat_id: int | None = None) -> Update:
        chat_id = chat_id if chat_id is not None else user_id
        query = {
            "id": str(next(self._update_ids)),
            "chat_instance": "1",
            "data": data,
            "from": {"id": user_id, "is_bot": False, "first_name": "X"},
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": "?",
            },
        }
        return Update.model_validate(
            {"update_id": next(self._update_ids), "callback_query": query}, context={"bot": self.bot}
        )

    async def feed(self, update: Update) -> None:
        await self.dp.feed_update(self.bot, update)

    async def say(self, user_id: int, text: str, **kw: Any) -> None:
        """One message through the dispatcher, then wait until every reply and job it started is done."""
        await self.feed(self.update(user_id, text, **kw))
        await self.settle()

    async def settle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.conversations.busy_chats or self.jobs.running():
            if time.monotonic() > deadline:
                raise TimeoutError("the bot did not settle")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self.store.close()


def fake_sync_client(client) -> Callable:
    """A `sync_client` for Jobs that hands out a fake Telethon client (tests/fake_telegram.py)."""
    import contextlib

    @contextlib.asynccontextmanager
    async def connect(settings):
        yield client

    return connect


def unix(days_ago: float = 0.0) -> int:
    return int((dt.datetime.now() - dt.timedelta(days=days_ago)).timestamp())
