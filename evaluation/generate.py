"""Replies for the report, generated through the engine interface with the bot's own prompts.

Two kinds: held-out contexts (the persona's real reply is known, for the style statistics) and opener
dialogues (a seed project's protocol: "hey" / "what's up?" and their translations, the model playing both
speakers for a few turns, both ways round). Every reply is `engine.reply(turns, persona, partner, adapter)`,
exactly what the bot calls, so the report judges what a chat would get.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

from core.format import NO_MEMORY, ChatTurn, MemoryBlock, Recalled
from core.settings import Settings
from engine.base import AdapterRef, Engine
from engine.chat import DEFAULT_PARTNER
from trainer.dataset import TrainingSession

log = logging.getLogger(__name__)

# "hey" and "what's up?" in the language most chats in a script are written in.
OPENERS: dict[str, tuple[str, ...]] = {
    "Latin": ("hey", "what's up?"),
    "Cyrillic": ("привет", "как дела?"),
    "Han": ("你好", "最近怎么样？"),
    "Kana": ("やあ", "元気？"),
    "Hangul": ("안녕", "잘 지내?"),
    "Arabic": ("مرحبا", "كيف حالك؟"),
    "Hebrew": ("היי", "מה קורה?"),
    "Greek": ("γεια", "τι κάνεις;"),
    "Devanagari": ("नमस्ते", "क्या हाल है?"),
    "Thai": ("สวัสดี", "เป็นไงบ้าง"),
    "Georgian": ("გამარჯობა", "როგორ ხარ?"),
    "Armenian": ("բարև", "ինչ կա՞"),
}


@dataclass(frozen=True)
class Probe:
    """A held-out point where `persona` spoke: the turns before it and what they really said."""

    session_id: str
    persona: str
    partner: str
    context: tuple[ChatTurn, ...]
    real: tuple[str, ...]
    recalled: tuple[Recalled, ...] = ()  # what the bot would recall here (with_probe_memory)
    time: str = ""  # the real reply's time mark (time marks on): the pause before it, as training saw it


def probes_for(
    sessions: Sequence[TrainingSession], persona: str, limit: int, context_turns: int, seed: int = 0
) -> list[Probe]:
    """Up to `limit` turns of `persona` (not a session's first), sampled by `seed`, each with the
    `context_turns` turns before it (as many as the bot puts into a prompt)."""
    spots = [(s, t) for s in sessions for t in range(1, len(s.turns)) if s.turns[t].speaker == persona]
    chosen = random.Random(f"{seed}:{persona}").sample(spots, min(limit, len(spots)))
    return [
        Probe(
            s.id,
            persona,
            s.turns[t - 1].speaker,
            tuple(s.turns[max(0, t - context_turns) : t]),
            tuple(s.turns[t].messages),
            time=s.turns[t].time,
        )
        for s, t in sorted(chosen, key=lambda st: (st[0].id, st[1]))
    ]


class Gated:
    """An engine with at most `limit` replies in flight; the others wait their turn. Engines batch what is
    in flight, so everything can be asked at once without flooding the engine's queue."""

    def __init__(self, engine: Engine, limit: int):
        self.engine, self._gate = engine, asyncio.Semaphore(limit)

    async def reply(
        self,
        turns: Sequence[ChatTurn],
        persona: str,
        partner: str,
        adapter: AdapterRef | None,
        memory: MemoryBlock = NO_MEMORY,
        time: str = "",
    ) -> list[str]:
        async with self._gate:
            return await self.engine.reply(turns, persona, partner, adapter, memory, time)

    def memory_block(self, recalled: Sequence[Recalled], budget: int) -> MemoryBlock:
        return self.engine.memory_block(recalled, budget)


def with_probe_memory(
    probes: Sequence[Probe], sessions: Sequence[TrainingSession], recall: Callable[..., list[Recalled]]
) -> list[Probe]:
    """Each probe with what the bot would recall before that reply: `recall(session, turns, persona)`."""
    by_id = {s.id: s for s in sessions}
    return [dataclasses.replace(p, recalled=tuple(recall(by_id[p.session_id], p.context, p.persona))) for p in probes]


async def answer_probes(
    engine: Engine | Gated,
    probes: Sequence[Probe],
    adapter: AdapterRef | None,
    on_reply: Callable[[], None] = lambda: None,
    memory_tokens: int = 0,
) -> list[list[str]]:
    """The engine's reply to every probe (an empty list where it dropped a degenerate reply), shown the
    probe's memory within `memory_tokens`; `on_reply` is called as each one comes back."""

    async def answer(p: Probe) -> list[str]:
        memory = engine.memory_block(p.recalled, memory_tokens) if p.recalled and memory_tokens else NO_MEMORY
        reply = list(await engine.reply(list(p.context), p.persona, p.partner, adapter, memory, p.time))
        on_reply()
        return reply

    return list(await asyncio.gather(*(answer(p) for p in probes)))


def openers_for(script: str | None) -> list[str]:
    """The English openers, then their translations in `script`'s language when it is not Latin."""
    extra = OPENERS.get(script or "", ()) if script != "Latin" else ()
    return [*OPENERS["Latin"], *extra]


def opener_pairs(owner: str | None, personas: Sequence[str]) -> list[tuple[str, str]]:
    """(who opens, who answers): each top persona with the owner, both ways; the owner with a new friend
    when there is nobody else."""
    owner = owner or (personas[0] if personas else None)
    friends = [p for p in personas if p != owner]
    if owner is None:
        return []
    if not friends:
        return [(DEFAULT_PARTNER, owner)]
    return [pair for f in friends for pair in ((f, owner), (owner, f))]


async def play_dialogue(
    engine: Engine | Gated, adapter: AdapterRef | None, first: str, second: str, opener: str, replies: int
) -> list[tuple[str, list[str]]]:
    """`first` says `opener`; then the model plays `second` and `first` in turn for `replies` replies. A
    dropped (degenerate) reply ends the dialogue, shown as an empty burst."""
    turns = [ChatTurn(first, (opener,))]
    for i in range(replies):
        persona, partner = (second, first) if i % 2 == 0 else (first, second)
        reply = await engine.reply(turns, persona, partner, adapter)
        turns.append(ChatTurn(persona, tuple(reply)))
        if not reply:
            break
    return [(t.speaker, list(t.messages)) for t in turns]


def opener_plays(pairs: Sequence[tuple[str, str]], scripts: dict[str, str | None]) -> list[tuple[str, str, str]]:
    """(who opens, who answers, the opener): every pair × its openers, in the answering persona's script."""
    return [(first, second, opener) for first, second in pairs for opener in openers_for(scripts.get(second))]


async def opener_dialogues(
    engine: Engine | Gated,
    adapter: AdapterRef | None,
    plays: Sequence[tuple[str, str, str]],
    replies: int,
    on_dialogue: Callable[[], None] = lambda: None,
) -> list[dict]:
    """Every play of `opener_plays`, played concurrently; `on_dialogue` is called as each one ends."""

    async def play(first: str, second: str, opener: str) -> list[tuple[str, list[str]]]:
        dialogue = await play_dialogue(engine, adapter, first, second, opener, replies)
        on_dialogue()
        return dialogue

    dialogues = await asyncio.gather(*(play(*p) for p in plays))
    return [{"first": f, "second": s, "opener": o, "turns": d} for (f, s, o), d in zip(plays, dialogues, strict=True)]


@contextlib.contextmanager
def quiet_engine_log(level: int = logging.ERROR) -> Iterator[None]:
    """Dropped replies are expected of a base model and counted in the report: not a warning each."""
    engine_log = logging.getLogger("engine.base")
    before = engine_log.level
    engine_log.setLevel(max(level, before))
    try:
        yield
    finally:
        engine_log.setLevel(before)


@contextlib.asynccontextmanager
async def started_engine(settings: Settings, kind: str | None, adapters: Sequence[AdapterRef]) -> AsyncIterator[Engine]:
    """An engine of `kind` (None: TWIN_ENGINE) started for the report and closed after it."""
    from engine.build import build_engine

    engine = build_engine(settings if kind is None else settings.model_copy(update={"engine": kind}), adapters)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
