"""`twin chat`: a terminal conversation with the twin through the same engine and format as the bot."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from core.errors import UserError
from core.format import NO_MEMORY, ChatTurn, MemoryBlock, Recalled
from core.settings import Settings
from core.timemarks import Clock, pause_mark, start_mark

from .base import AdapterRef, Engine

# Who you are when you do not say (--as): a name no persona is trained to be, like a new contact.
DEFAULT_PARTNER = "friend"
# What `--show-memory` prints before each reply, one line per line of the memory block.
MEMORY_PREFIX = "[memory]"

# The earlier exchanges recalled for the conversation so far (core.recall.recall with the chat's request).
Recall = Callable[[Sequence[ChatTurn]], list[Recalled]]


@dataclass(frozen=True)
class ChatRoles:
    persona: str  # whom the twin plays
    partner: str  # who you are in the conversation
    adapter: AdapterRef | None  # None: the base model
    clock: Clock | None = None  # time marks on (TWIN_TIME_MARKS): the owner's zone


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
    clock = Clock(settings.zone) if settings.time_marks else None
    return ChatRoles(persona, partner, AdapterRef.from_row(row, settings.data_dir) if row else None, clock)


async def chat(
    engine: Engine,
    roles: ChatRoles,
    read_line: Callable[[], str],
    write: Callable[[str], None],
    recall: Recall | None = None,
    memory_tokens: int = 0,
    show_memory: Callable[[MemoryBlock], None] | None = None,
) -> list[ChatTurn]:
    """Read the partner's lines until EOF; after each, the twin's burst is written one message per call.

    The conversation's turns are kept across lines (the engine drops the oldest when they no longer fit).
    Before each reply `recall` finds what the twin remembers, as the bot does, and `show_memory` (if
    given) sees the memory block that reply is shown.
    """
    turns: list[ChatTurn] = []
    last = 0.0  # when the last turn was said (time marks)
    while True:
        line = await asyncio.to_thread(read_line)  # never block the engine's event loop on the terminal
        if not line:
            return turns
        text = line.strip()
        if not text:
            continue
        now = time.time()
        mark = (
            "" if roles.clock is None else pause_mark(now - last) if turns else start_mark(int(now), roles.clock.zone)
        )
        turns.append(ChatTurn(roles.partner, (text,), mark))
        recalled = await asyncio.to_thread(recall, turns) if recall else []
        memory = engine.memory_block(recalled, memory_tokens) if recalled else NO_MEMORY
        if show_memory:
            show_memory(memory)
        messages = await engine.reply(turns, roles.persona, roles.partner, roles.adapter, memory)
        for message in messages:
            write(message)
        if messages:
            turns.append(ChatTurn(roles.persona, tuple(messages)))
        last = time.time()


def memory_lines(memory: MemoryBlock) -> list[str]:
    """The memory block as `--show-memory` prints it: each line prefixed, or one line saying there is none."""
    if not memory.recalled:
        return [f"{MEMORY_PREFIX} none"]
    return [f"{MEMORY_PREFIX} {line}".rstrip() for line in memory.text.splitlines()]


def print_memory(memory: MemoryBlock, stream: TextIO | None = None) -> None:
    """`--show-memory`: the block to stderr, so stdout keeps only the twin's messages when scripted."""
    print("\n".join(memory_lines(memory)), file=stream or sys.stderr, flush=True)


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
