"""Per-chat reply rounds: every chat has a queue and at most one worker, so replies keep the chat's order.

A message is queued at once (the handler returns); the chat's worker takes everything queued so far as
one round: it stores those messages, builds the prompt from the current conversation, asks the engine
(bounded wait, typing shown meanwhile) and sends the burst as separate messages with human-like pauses.
Messages that arrive during a round are answered by the next one, oldest first; none is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError
from aiogram.utils.chat_action import ChatActionSender

from bot.conversation import conversation_turns
from bot.delivery import send_text, typing_pause
from bot.personas import chat_persona, partner_name
from core.format import NO_MEMORY, ChatTurn, MemoryBlock, Recalled
from core.memory import memory_on
from core.recall import MemoryRequest, recall
from core.scrub import Scrubber
from core.settings import Settings
from engine.base import AdapterRef, Engine
from storage import Storage

log = logging.getLogger(__name__)

# What a user sees when the engine fails or times out; the chat goes on with the next message.
ENGINE_FAILED = "Sorry, I can't answer right now. Try again in a minute."
# Stored messages read per round: enough for `bot_context_turns` bursts of several messages each.
ROWS_PER_TURN = 4
# Telegram shows "typing…" for 5 s; renewing a little sooner keeps it on without a gap.
TYPING_RENEW = 4.5
# A reply round being forgotten gets the engine's wait plus this long to store and send what it made.
FORGET_ROUND_GRACE = 10.0


@dataclass(frozen=True)
class Incoming:
    """A user's message as the twin will remember it."""

    chat_id: int
    user_id: int
    speaker: str  # the user's persona slug (or a name from their first name)
    text: str
    addressed: bool = True  # in a group: the twin was mentioned or replied to; else only remembered


@dataclass(frozen=True)
class RoundInput:
    """What a reply round reads from storage: whom to play, the conversation, the adapter, the memory."""

    persona: str
    turns: list[ChatTurn]
    adapter: AdapterRef | None
    recalled: list[Recalled]


class Conversations:
    """The chats' queues and workers. Handlers `submit`; `drain` waits for in-flight rounds at shutdown."""

    def __init__(self, settings: Settings, store: Storage, engine: Engine, bot: Bot):
        self.settings, self.store, self.engine, self.bot = settings, store, engine, bot
        self.owner_id: int = settings.require("owner_id")
        self._queues: dict[int, list[Incoming]] = {}
        self._workers: dict[int, asyncio.Task] = {}
        self._adapters: dict[int, AdapterRef] = {}
        self._other_base: set[int] = set()  # active adapters of another base model, already logged
        self.last_memory: dict[int, MemoryBlock] = {}  # chat id → the memory its last reply was shown (/why)
        self._barred: set[int] = set()  # people being forgotten: their messages are not queued meanwhile
        self._scrub = Scrubber(settings.scrub_words).scrub

    def submit(self, message: Incoming) -> None:
        """Queue a message for its chat's next round (starting the chat's worker if it is idle)."""
        if message.user_id in self._barred or message.chat_id in self._barred:
            return
        self._queues.setdefault(message.chat_id, []).append(message)
        if message.chat_id not in self._workers:
            self._workers[message.chat_id] = asyncio.create_task(self._work(message.chat_id))

    @property
    def busy_chats(self) -> int:
        return len(self._workers)

    async def drain(self, timeout: float) -> None:
        """Let the rounds in flight finish (graceful shutdown); give up on them after `timeout` seconds."""
        if self._workers:
            log.info("waiting for replies in %d chat(s)", len(self._workers))
            await asyncio.wait(list(self._workers.values()), timeout=timeout)

    @contextlib.asynccontextmanager
    async def forgetting(self, person_id: int) -> AsyncIterator[None]:
        """Hold nothing of a person while storage forgets them, and after: their queued messages (in any chat)
        go and new ones are dropped, their chat's reply round in flight may finish first (bounded) so that it
        stores nothing afterwards, and /why's memory blocks go (any chat's may have recalled their words), as
        do the adapters looked up (some were trained on them)."""
        self._barred.add(person_id)
        try:
            for chat_id, queue in list(self._queues.items()):
                self._queues[chat_id] = [m for m in queue if person_id not in (m.user_id, m.chat_id)]
            if worker := self._workers.get(person_id):
                await asyncio.wait({worker}, timeout=self.settings.bot_reply_timeout + FORGET_ROUND_GRACE)
            yield
        finally:
            self._barred.discard(person_id)
            self.last_memory.clear()
            self._adapters.clear()

    async def _work(self, chat_id: int) -> None:
        try:
            while batch := self._queues.pop(chat_id, None):
                try:
                    await self.reply_round(chat_id, batch)
                except Exception:  # one broken round must not stall the chat
                    log.exception("reply round in chat %d failed", chat_id)
        finally:
            del self._workers[chat_id]

    async def reply_round(self, chat_id: int, batch: list[Incoming]) -> None:
        # Storage runs on a worker thread: a writer in another process (an import, a sync) may hold the
        # database for a moment, and the event loop must go on serving every other chat meanwhile.
        read = await asyncio.to_thread(self._remember_and_read, chat_id, batch)
        if read is None:
            return
        persona = read.persona
        partner = partner_name(batch[-1].speaker, persona)
        memory = self.engine.memory_block(read.recalled, self.settings.memory_tokens) if read.recalled else NO_MEMORY
        self.last_memory[chat_id] = memory
        replies = await self._generate(chat_id, read.turns, persona, partner, read.adapter, memory)
        if replies is None:
            await send_text(self.bot, chat_id, ENGINE_FAILED)
            return
        for i, text in enumerate(replies):
            pause = typing_pause(text, self.settings.bot_typing_delay) if i else 0.0
            await send_text(self.bot, chat_id, text, pause)
            await asyncio.to_thread(self.store.add_bot_message, chat_id, None, persona, text, from_twin=True)

    def _remember_and_read(self, chat_id: int, batch: list[Incoming]) -> RoundInput | None:
        """Store the batch; when it asks for a reply, also read what the reply needs. None: nothing to
        answer (a group talking among itself)."""
        # Stamped now, not with Telegram's date: a message written while the last reply was being made
        # comes after that reply in the conversation the twin saw, and the stored order must say so.
        for m in batch:
            self.store.add_bot_message(chat_id, m.user_id, m.speaker, m.text, from_twin=False)
        if not any(m.addressed for m in batch):
            return None
        persona = chat_persona(self.store, chat_id, batch[-1].user_id, self.owner_id)
        rows = self.store.recent_bot_messages(chat_id, since=0, limit=self.settings.bot_context_turns * ROWS_PER_TURN)
        s = self.settings
        turns = conversation_turns(rows, persona, s.session_gap_seconds, s.bot_context_turns, s.zone, s.time_marks)
        recalled = self.recall(chat_id, batch[-1].user_id, persona, turns)
        return RoundInput(persona, turns, self.active_adapter(), recalled)

    def recall(self, chat_id: int, user_id: int, persona: str, turns: list[ChatTurn]) -> list[Recalled]:
        """What the twin remembers for this reply. Only in a one-to-one chat: in a group, the others would
        hear what only two of its members share."""
        if not memory_on(self.settings):
            return []
        played = self.store.person(persona)
        played_id = played["id"] if played else None
        request = MemoryRequest.by_settings(self.settings, self.owner_id, played_id, user_id, group=chat_id != user_id)
        return recall(self.store, request, turns, self._scrub)

    async def _generate(self, chat_id, turns, persona, partner, adapter, memory: MemoryBlock) -> list[str] | None:
        """The engine's reply within the bounded wait, or None when it failed or took too long."""
        started = time.monotonic()
        # "typing…" at once, then renewed while the engine works; a lost indicator is no reason to stop.
        with contextlib.suppress(TelegramAPIError):
            await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
        try:
            async with ChatActionSender.typing(
                bot=self.bot, chat_id=chat_id, interval=TYPING_RENEW, initial_sleep=TYPING_RENEW
            ):
                replies = await asyncio.wait_for(
                    self.engine.reply(turns, persona, partner, adapter, memory), self.settings.bot_reply_timeout
                )
        except TimeoutError:
            log.error("engine timed out after %.0f s in chat %d", self.settings.bot_reply_timeout, chat_id)
            return None
        except Exception as exc:
            log.error("engine failed in chat %d: %s", chat_id, type(exc).__name__, exc_info=True)
            return None
        log.info(
            "chat %d: %d message(s) as %s with adapter %s in %.1f s (%d earlier exchange(s) recalled)",
            chat_id,
            len(replies),
            persona,
            self._adapter_label(adapter),
            time.monotonic() - started,
            len(memory.recalled),
        )
        return replies

    def _adapter_label(self, adapter: AdapterRef | None) -> str:
        if adapter is None:
            return "none (base model)"
        rejected = getattr(self.engine, "rejected", {}).get(adapter.version)
        return f"{adapter.version} (rejected by the engine: {rejected})" if rejected else str(adapter.version)

    def active_adapter(self) -> AdapterRef | None:
        """Read per round: a promotion or /rollback takes effect from the next reply on."""
        row = self.store.active_adapter()
        if row is None:
            return None
        if not self.settings.fits_base_model(row["base_model"]):
            if row["version"] not in self._other_base:  # said once per adapter, not once per reply
                self._other_base.add(row["version"])
                log.error(
                    "the active adapter %04d was trained on %s, not on TWIN_BASE_MODEL: the base model "
                    "answers until a round on the new one (/retrain)",
                    row["version"],
                    row["base_model"],
                )
            return None
        if row["version"] not in self._adapters:
            self._adapters[row["version"]] = AdapterRef.from_row(row, self.settings.data_dir)
        return self._adapters[row["version"]]
