"""`twin chat`: a terminal conversation with the twin through the same engine and format as the bot."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from core.errors import UserError
from core.format import ChatTurn
from core.settings import Settings

from .base import AdapterRef, Engine

# Who you are when you do not say (--as): a name no persona is trained to be, like a new contact.
DEFAULT_PARTNER = "friend"


@dataclass(frozen=True)
class ChatRoles:
    persona: str  # whom the twin plays
    partner: str  # who you are in the conversation
    adapter: AdapterRef | None  # None: the base model


def chat_roles(store, settings: Settings, persona: str | None, partner: str | None, adapter: int | None) -> ChatRoles:
    """Resolve `twin chat`'s options: persona (default the owner), partner, adapter (default active)."""
    owner = store.owner_slug(settings.owner_id)
    persona = persona or owner
    if persona is None:
        raise UserError(
            "whom should the twin play? Pass --persona SLUG (`twin personas` lists them) or set "
            "TWIN_OWNER_ID to play yourself"
        )
    if store.people():  # with people imported, a persona must be one of them (a typo is not a new persona)
        store.require_person(persona)
    if partner is None:
        partner = owner if owner and persona != owner else DEFAULT_PARTNER
    if adapter is not None:
        row = store.adapter(adapter)
        if row is None or row["status"] == "deleted":
            raise UserError(f"no adapter {adapter}: `twin adapters` lists them")
    else:
        row = store.active_adapter()
    return ChatRoles(persona, partner, AdapterRef.from_row(row, settings.data_dir) if row else None)


async def chat(
    engine: Engine, roles: ChatRoles, read_line: Callable[[], str], write: Callable[[str], None]
) -> list[ChatTurn]:
    """Read the partner's lines until EOF; after each, the twin's burst is written one message per call.

    The conversation's turns are kept across lines (the engine drops the oldest when they no longer fit).
    """
    turns: list[ChatTurn] = []
    while True:
        line = await asyncio.to_thread(read_line)  # never block the engine's event loop on the terminal
        if not line:
            return turns
        text = line.strip()
        if not text:
            continue
        turns.append(ChatTurn(roles.partner, (text,)))
        messages = await engine.reply(turns, roles.persona, roles.partner, roles.adapter)
        for message in messages:
            write(message)
        if messages:
            turns.append(ChatTurn(roles.persona, tuple(messages)))


def terminal_io(roles: ChatRoles, stdin: TextIO | None = None, stdout: TextIO | None = None):
    """read_line/write for `chat`: a prompt and speaker names on a terminal, bare lines when scripted."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    tty = stdin.isatty()

    def read_line() -> str:
        if tty:
            print(f"{roles.partner}> ", end="", file=sys.stderr, flush=True)
        return stdin.readline()

    def write(message: str) -> None:
        print(f"{roles.persona}: {message}" if tty else message, file=stdout, flush=True)

    return read_line, write
