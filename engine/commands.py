"""Engine commands: `twin chat`."""

from __future__ import annotations

import asyncio
import logging
import os

import typer
from rich.console import Console

from core.settings import Settings

from .base import AdapterRef
from .chat import ChatRoles, Recall, chat, chat_roles, print_memory, terminal_io

err = Console(stderr=True, soft_wrap=True)


async def run_chat(
    settings: Settings,
    roles: ChatRoles,
    adapters: list[AdapterRef],
    recall: Recall | None = None,
    show_memory: bool = False,
) -> None:
    """Start the engine, talk until stdin ends (recalling with `recall`), close the engine."""
    from .build import build_engine

    engine = build_engine(settings, adapters)
    await engine.start()
    try:
        if roles.adapter is not None and not await engine.load(roles.adapter):
            err.print(
                f"[red]adapter {roles.adapter.version} refused:[/red] {engine.rejected[roles.adapter.version]}"
                " — answering with the base model",
                highlight=False,
            )
        read_line, write = terminal_io(roles)
        show = print_memory if show_memory else None
        await chat(engine, roles, read_line, write, recall, settings.memory_tokens, show)
    finally:
        await engine.close()


def chat_cmd(
    ctx: typer.Context,
    persona: str = typer.Option(None, "--persona", help="Whom the twin plays (default: you, the owner)."),
    partner: str = typer.Option(None, "--as", help="Who you are (default: a new friend; you, for a friend)."),
    adapter: int = typer.Option(None, "--adapter", help="Adapter version (default: the active one)."),
    show_memory: bool = typer.Option(
        False, "--show-memory", help="Print the earlier exchanges each reply recalls (to stderr) before it."
    ),
) -> None:
    """Talk with your twin in the terminal, through the same engine and prompt format as the bot.

    Each line you type is a message; the twin answers with one or more messages, one per line. The
    conversation is kept until you end it (Ctrl-D). Not a terminal? Lines are read from stdin, so it can
    be scripted. The twin recalls earlier exchanges as the bot does (TWIN_MEMORY_SCOPE); --show-memory
    prints what each reply was shown.

    Example: echo "are you coming tonight?" | twin chat --as sasha --show-memory
    """
    from storage import open_storage

    from .base_model import base_model_path
    from .build import stored_adapters

    settings: Settings = ctx.obj
    base_model_path(settings)  # a model that cannot load stops here, with what to do
    store = open_storage(settings)
    roles = chat_roles(store, settings, persona, partner, adapter)
    if roles.adapter is None:
        err.print("no adapter is active yet: answering with the base model (`twin train` makes one)")
    if logging.getLogger().level > logging.DEBUG:  # vLLM's start-up log drowns a conversation
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    refs = stored_adapters(store, settings)
    if roles.adapter is not None and roles.adapter not in refs:
        refs.append(roles.adapter)
    asyncio.run(run_chat(settings, roles, refs, chat_recall(store, settings, roles), show_memory))


def chat_recall(store, settings: Settings, roles: ChatRoles) -> Recall | None:
    """What `twin chat` remembers before each reply, by the bot's rules: the twin plays `roles.persona` to
    `roles.partner` (a name storage does not know is a new contact: nothing of theirs to recall)."""
    from core.memory import memory_on
    from core.recall import MemoryRequest, recall
    from core.scrub import Scrubber

    owner_id = store.owner_id(settings.owner_id)
    if not memory_on(settings) or owner_id is None:
        return None
    played, partner = store.person(roles.persona), store.person(roles.partner)
    ids = (played["id"] if played else None, partner["id"] if partner else None)
    request = MemoryRequest.by_settings(settings, owner_id, *ids, group=False)
    scrub = Scrubber(settings.scrub_words).scrub
    return lambda turns: recall(store, request, turns, scrub)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat_cmd)
