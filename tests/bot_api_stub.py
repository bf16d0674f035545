"""A small stand-in for the Telegram Bot API on 127.0.0.1, for end-to-end tests of `twin serve`.

It serves what the bot calls (getMe, getUpdates as a real long poll, sendMessage, sendChatAction,
sendPhoto, editMessageText, answerCallbackQuery, setMyCommands, deleteWebhook, ...), records every
request with its parameters, and lets a test queue incoming messages. Point TWIN_BOT_API_URL at `url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# Fields that are text as sent; every other form field is JSON (numbers, objects, lists).
TEXT_FIELDS = {"text", "caption", "action", "parse_mode", "callback_query_id", "description", "secret_token", "url"}
BOT = {"id": 42, "is_bot": True, "first_name": "Twin", "username": "twin_e2e_bot"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]


class BotApiStub:
    def __init__(self, token: str):
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # -- what a test does -----------------------------------------------------------------------------
    async def push_text(
        self, user_id: int, text: str, first_name: str = "User", chat_id: int | None = None, username: str | None = None
    ) -> None:
        """An incoming private message from `user_id`, delivered by the next getUpdates."""
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id or user_id, "type": "private", "first_name": first_name},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name,
                **({"username": username} if username else {}),
            },
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        async with self._changed:
            self.updates.append({"update_id": next(self._update_ids), "message": message})
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait until `predicate()` is truthy (re-checked on every request the bot makes)."""

        async def until() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(until(), timeout)

    def of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)]

    def texts(self, chat_id: int) -> list[str]:
        return [c.params["text"] for c in self.of("sendMessage", chat_id)]

    # -- the API --------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = {k: v if k in TEXT_FIELDS else _value(v) for k, v in (await request.post()).items()}
        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        async with self._changed:
            self.calls.append(Call(method, params))
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": self._result(method, params)})

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset, timeout = int(params.get("offset") or 0), float(params.get("timeout") or 0)
        async with self._changed:
            self.calls.append(Call("getUpdates", params))
            self._changed.notify_all()
            self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed ones go
            if not self.updates and timeout:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.updates)), timeout)
            return list(self.updates)

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT
        if method in ("sendMessage", "sendPhoto", "editMessageText", "sendDocument"):
            chat_id = params.get("chat_id")
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "text": params.get("text"),
                "chat": {"id": chat_id, "type": "private"},
                "from": BOT,
            }
        return True


def _value(raw: Any) -> Any:
    """Form fields are strings (JSON for numbers and objects); files stay file fields."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
