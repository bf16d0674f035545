"""The remote engine's HTTP client against a real local HTTP server: a connection the server drops as a request
goes out (a keep-alive closing under load) costs that request one more try, not the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from core.settings import Settings
from engine.remote import RemoteEngine

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def engine_against(completions: Handler) -> AsyncIterator[RemoteEngine]:
    """A RemoteEngine's HTTP session pointed at a local server whose /v1/completions is `completions`."""
    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    engine = RemoteEngine(Settings(_env_file=None, engine_url=f"http://127.0.0.1:{port}"))
    engine.open_session()
    try:
        yield engine
    finally:
        await engine.close()
        await runner.cleanup()


def dropped(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # the connection goes, no answer on it
    return web.Response()


async def test_a_request_on_a_connection_the_server_drops_is_sent_once_more():
    seen: list[dict] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        if len(seen) == 1:
            return dropped(request)
        return web.json_response({"choices": [{"text": "привет 你好", "finish_reason": "stop"}]})

    async with engine_against(completions) as engine:
        status, data = await engine._post("/v1/completions", {"prompt": [1, 2, 3]})
    assert status == 200
    assert data["choices"][0]["text"] == "привет 你好"
    assert seen == [{"prompt": [1, 2, 3]}, {"prompt": [1, 2, 3]}]


async def test_a_server_that_drops_every_try_is_an_error_after_the_second():
    tries = 0

    async def completions(request: web.Request) -> web.StreamResponse:
        nonlocal tries
        tries += 1
        return dropped(request)

    async with engine_against(completions) as engine:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await engine._post("/v1/completions", {"prompt": [1]})
    assert tries == 2
