"""Training with the bot's memory: each session is shown what the bot would have recalled at its start.

The memory comes from what was said before the session began (never the session itself, never a later
one) and never from a held-out session, so neither the adapter nor the held-out figures see evaluation
text through it. Held-out sessions get their memory the same way, so their figures measure what a user
gets. Scope, size and budget are the bot's (TWIN_MEMORY_*): the trainer shows what the bot will show.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from core.format import ChatTurn, Recalled
from core.memory import memory_on
from core.recall import QUERY_TURNS, MemoryRequest, recall
from core.scrub import Scrubber
from core.settings import Settings
from storage import Storage
from trainer.dataset import TrainingSession


def held_out(store: Storage) -> Callable[[dict[str, Any]], bool]:
    """Whether a stored message belongs to a held-out (eval) session."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for s in store.sessions(split="eval"):
        spans.setdefault(s["dialog_id"], []).append((s["start"], s["end"]))
    for ranges in spans.values():
        ranges.sort()

    def skip(message: dict[str, Any]) -> bool:
        ranges = spans.get(message["dialog_id"], [])
        i = bisect_right(ranges, (message["date"], float("inf"))) - 1
        return i >= 0 and ranges[i][0] <= message["date"] <= ranges[i][1]

    return skip


class SessionMemory:
    """What the bot would recall inside a stored session: from before the session, held-out text never."""

    def __init__(self, store: Storage, settings: Settings, owner_id: int):
        self.store, self.settings, self.owner_id = store, settings, owner_id
        self._skip, self._scrub = held_out(store), Scrubber(settings.scrub_words).scrub
        # A dialog's person is its `person_id` (Storage.person_dialog finds the dialog back the same way);
        # a dialog that is not a one-to-one chat is a group, where the bot recalls nothing.
        self._dialogs = {d["id"]: d for d in store.dialogs()}

    def recall(
        self, session: TrainingSession, turns: Sequence[ChatTurn], persona_id: int | None = None
    ) -> list[Recalled]:
        """The exchanges recalled for `turns` of `session` (the twin playing `persona_id`, default the
        owner, in the session's dialog)."""
        persona_id = self.owner_id if persona_id is None else persona_id
        dialog = self._dialogs.get(session.dialog_id) or {}
        group = dialog.get("type") != "personal_chat"
        partner = dialog.get("person_id") if persona_id == self.owner_id else self.owner_id
        request = MemoryRequest.by_settings(
            self.settings, self.owner_id, persona_id, partner, group=group, before=session.start, skip=self._skip
        )
        return recall(self.store, request, turns, self._scrub)

    def recall_as(self, session: TrainingSession, turns: Sequence[ChatTurn], persona: str) -> list[Recalled]:
        """`recall` with the persona named by slug (an unknown slug: the twin plays nobody's memory)."""
        person = self.store.person(persona)
        return self.recall(session, turns, person["id"]) if person else []

    def at_start(self, sessions: Sequence[TrainingSession]) -> list[TrainingSession]:
        """The sessions, each with what the bot playing the owner would have recalled when it began (the
        query: the session's opening turns)."""
        return [dataclasses.replace(s, recalled=tuple(self.recall(s, s.turns[:QUERY_TURNS]))) for s in sessions]


def with_memory(
    store: Storage, settings: Settings, owner_id: int, sessions: Sequence[TrainingSession]
) -> list[TrainingSession]:
    """`sessions` with their memory at start (unchanged when memory is off)."""
    if not memory_on(settings):
        return list(sessions)
    return SessionMemory(store, settings, owner_id).at_start(sessions)


def memory_meta(settings: Settings) -> dict[str, Any]:
    """The memory settings a round trained with (its adapter's meta.json; the report evaluates with them)."""
    return {
        "memory_scope": settings.memory_scope,
        "memory_excerpts": settings.memory_excerpts,
        "memory_tokens": settings.memory_tokens,
    }


def adapter_memory(settings: Settings, meta: dict[str, Any]) -> Settings:
    """`settings` with the memory its adapter trained with (off for an adapter trained without)."""
    return settings.model_copy(update=meta.get("memory") or {"memory_scope": "off"})


def adapter_session_memory(store: Storage, settings: Settings, meta: dict[str, Any]) -> SessionMemory | None:
    """The memory an adapter trained with, to evaluate it as it will serve; None: it trained without."""
    memory = adapter_memory(settings, meta)
    owner_id = store.owner_id(settings.owner_id)
    if not memory_on(memory) or owner_id is None:
        return None
    return SessionMemory(store, memory, owner_id)
