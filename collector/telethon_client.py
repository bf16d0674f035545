"""The owner's Telethon client: built from settings, logged in once by hand, then reused unattended.

Secrets (the API hash, the session) go into the client and nowhere else: no error or log line here
formats them.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from telethon import TelegramClient
from telethon.sessions import StringSession

from core.errors import UserError
from core.settings import Settings

log = logging.getLogger(__name__)

SESSION_FILE = "owner.session"
# Flood waits up to this many seconds are slept through by Telethon itself; a longer one raises and
# stops the sync with its progress saved. 2 min: a scheduled sync can afford it, an hour it cannot.
FLOOD_SLEEP_THRESHOLD = 120


class NotLoggedIn(UserError):
    """The collector has no usable Telegram session (missing, revoked or expired)."""


LOGIN_HINT = "run `twin login` once in a terminal (or set TWIN_SESSION to a session string from it)"


class CountingTelegramClient(TelegramClient):
    """A TelegramClient that counts the API requests it sends, by request type.

    Flood waits Telethon sleeps through are retries inside one call: one request here. A takeout
    wrapper is unwrapped so history pages count as `GetHistoryRequest` either way.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.request_counts: Counter[str] = Counter()

    async def __call__(self, request, ordered=False, flood_sleep_threshold=None):
        for r in request if isinstance(request, list | tuple) else (request,):
            self.request_counts[type(getattr(r, "query", r)).__name__] += 1
        return await super().__call__(request, ordered=ordered, flood_sleep_threshold=flood_sleep_threshold)


def session_path(settings: Settings) -> Path:
    return settings.data_dir / SESSION_FILE


def _private_file(path: Path) -> None:
    """Create `path` readable by the owner only (0600) before Telethon's SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


def _session(settings: Settings) -> StringSession | str:
    """TWIN_SESSION if set, else the session file; a missing one is NotLoggedIn at once, never a prompt."""
    if settings.session is not None and settings.session.get_secret_value().strip():
        try:
            return StringSession(settings.session.get_secret_value().strip())
        except (ValueError, struct.error, binascii.Error):
            # Never echo the string: it is a full login to the owner's account.
            raise NotLoggedIn(f"TWIN_SESSION is not a valid Telethon session string: {LOGIN_HINT}") from None
    path = session_path(settings)
    if not path.exists():
        raise NotLoggedIn(f"not logged in to Telegram ({path} does not exist): {LOGIN_HINT}")
    return _session_file(settings)


def _session_file(settings: Settings) -> str:
    settings.ensure_data_dir()
    _private_file(session_path(settings))
    return str(session_path(settings))


def build_client(settings: Settings) -> CountingTelegramClient:
    """The owner's client from TWIN_API_ID / TWIN_API_HASH and TWIN_SESSION or data_dir/owner.session."""
    api_id = settings.require("api_id")
    api_hash = settings.require("api_hash").get_secret_value()
    return CountingTelegramClient(_session(settings), api_id, api_hash, flood_sleep_threshold=FLOOD_SLEEP_THRESHOLD)


async def ensure_authorized(client) -> None:
    """Connect and check the session still logs in; a revoked one is NotLoggedIn, never a prompt."""
    try:
        await client.connect()
    except OSError as exc:
        raise UserError(f"cannot reach Telegram ({type(exc).__name__}): check the network and retry") from None
    if not await client.is_user_authorized():
        await client.disconnect()
        raise NotLoggedIn(f"the Telegram session is not logged in (revoked or expired): {LOGIN_HINT}")


@contextlib.asynccontextmanager
async def connected_client(settings: Settings) -> AsyncIterator[CountingTelegramClient]:
    """A logged-in client for unattended use (`twin collect`, the bot's scheduled sync)."""
    client = build_client(settings)
    await ensure_authorized(client)
    try:
        yield client
    finally:
        await client.disconnect()


def shared_client(client) -> Callable:
    """A `connected_client` stand-in that hands out an already connected client and leaves it connected: with
    drafts on, the bot's syncs reuse the drafts' client (two clients on one session would clash)."""

    @contextlib.asynccontextmanager
    async def connect(settings: Settings) -> AsyncIterator:
        yield client

    return connect


async def login(
    settings: Settings,
    *,
    as_string: bool,
    phone: Callable[[], str],
    code: Callable[[], str],
    password: Callable[[], str],
) -> tuple[str, str | None]:
    """Interactive login (phone → code → 2FA password). Returns (who, session string or None).

    The session goes to data_dir/owner.session (0600), or with `as_string` only into the returned
    string, which the caller shows once for `.env` (TWIN_SESSION).
    """
    api_id = settings.require("api_id")
    api_hash = settings.require("api_hash").get_secret_value()
    session = StringSession() if as_string else _session_file(settings)
    client = CountingTelegramClient(session, api_id, api_hash, flood_sleep_threshold=FLOOD_SLEEP_THRESHOLD)
    try:
        await client.start(phone=phone, code_callback=code, password=password)
        me = await client.get_me()
        string = client.session.save() if as_string else None
    finally:
        await client.disconnect()
    if not as_string:
        os.chmod(session_path(settings), 0o600)
    who = " ".join(x for x in (me.first_name, me.last_name) if x) or str(me.id)
    return f"{who} (id {me.id})", string
