"""The twin's memory: the earlier exchanges a reply is shown, found by what they say (SQLite FTS5).

Who may be recalled to whom is decided here, once, for the bot, `twin chat`, the trainer and the bench:

* scope `pair` (the default): only what was said between the two people now talking, that is the owner's
  one-to-one dialog with the partner (the twin plays the owner) or with the persona (the owner talks to a
  friend's persona). Both of them already know it. Two friends talking have no shared dialog: no memory.
* scope `owner`: as `pair`, and when the twin plays the owner, the owner's own words in every other
  dialog too (never the other people's words there).
* `off`: no memory.

Excluded dialogs are never searched; a forgotten person's messages leave the index with their rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.format import ChatTurn, Recalled
from core.memory import MEMORY_SCOPES, MemoryScope, Recallable, may_recall, memory_on
from core.sessions import merge_bursts, to_chat_turns

from .db import Database
from .memory_schema import MEMORY_SLOT_SHIFT, MESSAGE_ROWID_MASK

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["MEMORY_SCOPES", "MemoryRequest", "MemoryScope", "MemoryStore", "recall"]

# A shorter word finds too much to mean anything (and the trigram index needs 3 characters).
MIN_TERM_CHARS = 3
# Words searched for per recall: more find more, each costs a pass over its part of the index.
MAX_TERMS = 8
# Turns of the conversation a recall looks at: the question just asked and what it answers.
QUERY_TURNS = 2
# Matches ranked per recall, the newest first: bounds a recall's time however long the history (an older
# match is found when fewer newer ones match). FTS5's own bm25 costs ~0.1 ms a match on trigram phrases, so
# `rank_hits` scores the candidates in Python instead.
CANDIDATES = 256
# How far back (in the dialog's indexed messages) each try of a dialog search looks, widening until ENOUGH
# match; then the whole dialog. Common words end the search in the first, narrow window; rare ones, whose
# lists are short, cost little over the whole dialog.
SEARCH_WINDOWS = (2_000, 20_000)
ENOUGH = 32
# Messages shown on each side of a hit: the question it answered, the reaction to it.
AROUND = 2
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


def match_expression(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression for any of `terms`, each quoted (a term is searched for as written)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


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


class MemoryStore(Database):
    """Reads of the memory index (mixed into Storage; the triggers in memory_schema write it)."""

    def slugs(self, ids: Collection[int]) -> dict[int, str]:
        """Person id → persona slug, for these ids (unknown ids left out)."""
        rows = self.query(
            "SELECT id, slug FROM people WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(sorted(ids)),)
        )
        return {r[0]: r[1] for r in rows}

    def memory_hits(
        self,
        match: str,
        *,
        dialog_id: int | None = None,
        sender_id: int | None = None,
        not_dialog: int | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """The newest CANDIDATES messages matching `match` said before `before`: within one dialog, or the
        `sender_id`'s words in every dialog not excluded (but `not_dialog`). Unranked: see `rank_hits`."""
        cols = "m.dialog_id, m.id, m.sender_id, m.date, m.text, m.forwarded"
        if dialog_id is not None:
            return self._dialog_hits(match, dialog_id, before)
        where = ["memory MATCH ?", "m.dialog_id NOT IN (SELECT id FROM dialogs WHERE excluded)"]
        params: list[str | int] = [match]
        if sender_id is not None:
            where.append("m.sender_id = ?")
            params.append(sender_id)
        if not_dialog is not None:
            where.append("m.dialog_id <> ?")
            params.append(not_dialog)
        if before is not None:
            where.append("m.date < ?")
            params.append(before)
        rows = self.query(
            f"SELECT {cols} FROM memory f JOIN messages m ON m.rowid = (f.rowid & {MESSAGE_ROWID_MASK})"
            f" WHERE {' AND '.join(where)} ORDER BY m.date DESC LIMIT ?",
            (*params, CANDIDATES),
        )
        return [dict(r) for r in rows]

    def _dialog_hits(self, match: str, dialog_id: int, before: int | None) -> list[dict[str, Any]]:
        """memory_hits within one dialog: its part of the index searched from the newest message back, in
        wider windows until ENOUGH match (FTS5 reads a rowid range forwards cheaply, and a whole common
        word's list backwards at great cost); the newest CANDIDATES of them."""
        slot = self.query("SELECT slot FROM memory_dialogs WHERE dialog_id = ?", (dialog_id,))
        if not slot:
            return []
        lo = slot[0][0] << MEMORY_SLOT_SHIFT
        hi = lo | MESSAGE_ROWID_MASK
        if before is not None:  # nothing stored after the last message said before then can match
            row = self.query("SELECT max(rowid) FROM messages WHERE dialog_id = ? AND date < ?", (dialog_id, before))
            if row[0][0] is None:
                return []
            hi = lo | row[0][0]
        found = "SELECT rowid FROM memory WHERE memory MATCH ? AND rowid BETWEEN ? AND ?"
        keys: list[int] = []
        for depth in (*SEARCH_WINDOWS, None):
            edge = (  # read off messages' (dialog_id, date) index: the index keeps no rows to scan
                self.query(
                    "SELECT rowid FROM messages WHERE dialog_id = ? AND rowid <= ? ORDER BY date DESC LIMIT 1 OFFSET ?",
                    (dialog_id, hi & MESSAGE_ROWID_MASK, depth),
                )
                if depth is not None
                else []
            )
            keys = [r[0] for r in self.query(found, (match, lo | edge[0][0] if edge else lo, hi))]
            if len(keys) >= ENOUGH or not edge:
                break
        newest = json.dumps([k & MESSAGE_ROWID_MASK for k in keys[-CANDIDATES:]])
        rows = self.query(
            "SELECT dialog_id, id, sender_id, date, text, forwarded FROM messages"
            " WHERE rowid IN (SELECT value FROM json_each(?)) AND dialog_id = ? AND date < ?",
            (newest, dialog_id, before if before is not None else 2**62),
        )
        return [dict(r) for r in rows]

    def memory_around(
        self, hit: dict[str, Any], gap_seconds: float, before: int | None, sender_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The hit with up to AROUND messages on each side in its dialog (within `gap_seconds` of it,
        before `before`; only `sender_id`'s when given), oldest first."""
        cond = "dialog_id = ? AND date BETWEEN ? AND ?" + (" AND sender_id = ?" if sender_id is not None else "")
        last = hit["date"] + gap_seconds if before is None else min(hit["date"] + gap_seconds, before - 1)
        base = (hit["dialog_id"], hit["date"] - gap_seconds, last) + ((sender_id,) if sender_id is not None else ())
        cols = "dialog_id, id, sender_id, date, text, forwarded"
        earlier = self.query(
            f"SELECT {cols} FROM messages WHERE {cond} AND (date, id) < (?, ?) ORDER BY date DESC, id DESC LIMIT ?",
            (*base, hit["date"], hit["id"], AROUND),
        )
        later = self.query(
            f"SELECT {cols} FROM messages WHERE {cond} AND (date, id) > (?, ?) ORDER BY date, id LIMIT ?",
            (*base, hit["date"], hit["id"], AROUND),
        )
        return [dict(r) for r in reversed(earlier)] + [hit] + [dict(r) for r in later]


def recall(
    store: Any,
    request: MemoryRequest,
    turns: Sequence[ChatTurn],
    scrub: Callable[[str], str] | None = None,
) -> list[Recalled]:
    """The earlier exchanges most relevant to the end of `turns` that `request` may show, best first."""
    allowed, terms = request.allowed, query_terms(turns)
    if not allowed or request.k <= 0 or not terms:
        return []
    match = match_expression(terms)
    only: dict[tuple[int, int], int] = {}  # hits of which only this sender's words may be shown around
    hits: list[dict[str, Any]] = []
    pair = store.person_dialog(allowed.pair_person) if allowed.pair_person is not None else None
    if pair is not None and not pair["excluded"]:
        hits += store.memory_hits(match, dialog_id=pair["id"], before=request.before)
    if allowed.owner_elsewhere:
        not_pair = pair["id"] if pair else None
        others = store.memory_hits(match, sender_id=request.owner_id, not_dialog=not_pair, before=request.before)
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
