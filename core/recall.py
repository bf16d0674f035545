"""Recall: the earlier exchanges a reply is shown, found by what the conversation just said.

The bot, `twin chat`, the trainer, the report and the bench build a `MemoryRequest` (whose memory, for whom,
up to when) and call `recall` with any store that can search (storage.memory reads the index). What may be
recalled is core.memory.may_recall's answer; this module picks the words, ranks the hits and cuts excerpts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.format import ChatTurn, Recalled
from core.memory import MEMORY_SCOPES, MemoryScope, Recallable, may_recall, memory_on
from core.sessions import merge_bursts, to_chat_turns

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["MEMORY_SCOPES", "MemoryRequest", "MemoryScope", "MemorySource", "recall"]

# A shorter word finds too much to mean anything (and the trigram index needs 3 characters).
MIN_TERM_CHARS = 3
# Words searched for per recall: more find more, each costs a pass over its part of the index.
MAX_TERMS = 8
# Turns of the conversation a recall looks at: the question just asked and what it answers.
QUERY_TURNS = 2
# Words that say nothing about a topic (English and Russian, the chats we test on), never searched for.
STOP_WORDS = frozenset(
    """
    the and you your yours are was were has have had for not but all any can could would should will just
    that this these those there their they them then than what when where which who whom why how with
    from into about out our ours his her hers its it's i'm im you're dont don't didnt didn't cant can't
    yes yeah yep nope okay lol haha hahaha hey hello thanks thank too also very really much more most
    some get got going gonna wanna like know think well good great nice sure fine did does doing done
    one two been being here now see say said tell told let lets let's maybe still even only over again
    что это как так все всё она они оно мне меня тебя тебе мой моя твой там тут где когда кто чем для
    или нет да ага уже еще ещё был была было были будет есть если вот вас нас них его ее её ну ты
    """.split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def query_terms(turns: Sequence[ChatTurn], last: int = QUERY_TURNS) -> list[str]:
    """The content words of the last `last` turns, newest first, at most MAX_TERMS. Runs of CJK (written
    without spaces) give their 3-character pieces."""
    terms: list[str] = []
    for turn in reversed(turns[-last:]):
        for message in reversed(turn.messages):
            for word in _WORD.findall(message.lower()):
                pieces = [word[i : i + 3] for i in range(len(word) - 2)] if _CJK.search(word) else [word]
                for term in pieces:
                    if len(term) >= MIN_TERM_CHARS and term not in STOP_WORDS and term not in terms:
                        terms.append(term)
                        if len(terms) == MAX_TERMS:
                            return terms
    return terms


def rank_hits(hits: Sequence[dict[str, Any]], terms: Sequence[str]) -> list[dict[str, Any]]:
    """Best first: a hit scores the weights of the terms it contains (a term in fewer of the hits weighs
    more, as in bm25's idf); the most recent first on a tie."""
    texts = [h["text"].lower() for h in hits]
    weight = {t: math.log(1 + len(hits) / (1 + sum(t in x for x in texts))) for t in terms}
    scored = [(sum(w for t, w in weight.items() if t in x), h) for x, h in zip(texts, hits, strict=True)]
    return [h for _, h in sorted(scored, key=lambda sh: (-sh[0], -sh[1]["date"], -sh[1]["id"]))]


class MemorySource(Protocol):
    """What recall reads (storage.Storage is one): a person's dialog, the messages with any of some words, the
    messages around a hit, and persona slugs."""

    def person_dialog(self, person_id: int) -> dict[str, Any] | None: ...

    def memory_hits(
        self,
        terms: Sequence[str],
        *,
        dialog_id: int | None = None,
        sender_id: int | None = None,
        not_dialog: int | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def memory_around(
        self, hit: dict[str, Any], gap_seconds: float, before: int | None, sender_id: int | None = None
    ) -> list[dict[str, Any]]: ...

    def slugs(self, ids: Collection[int]) -> dict[int, str]: ...


@dataclass(frozen=True)
class MemoryRequest:
    """Whose memory, for whom, up to when."""

    owner_id: int
    persona_id: int | None  # whom the twin plays
    partner_id: int | None  # whom it talks to
    scope: MemoryScope
    k: int  # exchanges recalled at most
    gap_seconds: float  # a hit's context stays within its session
    before: int | None = None  # only what was said before this time (a training session's start)
    skip: Callable[[dict[str, Any]], bool] | None = None  # hits never shown (the trainer: eval sessions)
    group: bool = False  # a group chat: nothing is recalled (core.memory.may_recall)

    @classmethod
    def by_settings(
        cls,
        settings: Settings,
        owner_id: int,
        persona_id: int | None,
        partner_id: int | None,
        *,
        group: bool,
        **when: Any,
    ) -> MemoryRequest:
        """The request TWIN_MEMORY_* ask for (`when`: `before`, `skip`); the bot, `twin chat` and the trainer
        all build theirs here (memory not on: scope off)."""
        return cls(
            owner_id=owner_id,
            persona_id=persona_id,
            partner_id=partner_id,
            scope=settings.memory_scope if memory_on(settings) else "off",
            group=group,
            k=settings.memory_excerpts,
            gap_seconds=settings.session_gap_seconds,
            **when,
        )

    @property
    def allowed(self) -> Recallable:
        """What this request may recall: the privacy rule's answer (core.memory.may_recall)."""
        return may_recall(self.scope, self.owner_id, self.persona_id, self.partner_id, group=self.group)


def recall(
    store: MemorySource,
    request: MemoryRequest,
    turns: Sequence[ChatTurn],
    scrub: Callable[[str], str] | None = None,
) -> list[Recalled]:
    """The earlier exchanges most relevant to the end of `turns` that `request` may show, best first."""
    allowed, terms = request.allowed, query_terms(turns)
    if not allowed or request.k <= 0 or not terms:
        return []
    only: dict[tuple[int, int], int] = {}  # hits of which only this sender's words may be shown around
    hits: list[dict[str, Any]] = []
    pair = store.person_dialog(allowed.pair_person) if allowed.pair_person is not None else None
    if pair is not None and not pair["excluded"]:
        hits += store.memory_hits(terms, dialog_id=pair["id"], before=request.before)
    if allowed.owner_elsewhere:
        not_pair = pair["id"] if pair else None
        others = store.memory_hits(terms, sender_id=request.owner_id, not_dialog=not_pair, before=request.before)
        only.update({(h["dialog_id"], h["id"]): request.owner_id for h in others})
        hits += others
    excerpts: list[tuple[list[dict[str, Any]], int]] = []
    shown: set[tuple[int, int]] = set()
    for hit in rank_hits(hits, terms):
        key = (hit["dialog_id"], hit["id"])
        if key in shown or (request.skip and request.skip(hit)):
            continue
        rows = store.memory_around(hit, request.gap_seconds, request.before, sender_id=only.get(key))
        rows = [r for r in rows if not (request.skip and request.skip(r))]
        shown.update((r["dialog_id"], r["id"]) for r in rows)
        excerpts.append((rows, hit["date"]))
        if len(excerpts) == request.k:
            break
    slug_of = store.slugs({r["sender_id"] for rows, _ in excerpts for r in rows})
    recalled = ((to_chat_turns(merge_bursts(rows), slug_of, scrub), date) for rows, date in excerpts)
    return [Recalled(tuple(turns), date) for turns, date in recalled if turns]
