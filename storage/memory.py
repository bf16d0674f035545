"""The memory's reads: the earlier messages that contain words, and the messages around a hit (SQLite FTS5).

Only SQL lives here. What a reply may recall (the privacy rule) is core.memory's; which words are searched
for, how hits are ranked and excerpts built is core.recall's. Excluded dialogs are never searched; a
forgotten person's messages leave the index with their rows.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from .db import Database
from .memory_schema import MEMORY_SLOT_SHIFT, MESSAGE_ROWID_MASK

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


def match_expression(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression for any of `terms`, each quoted (a term is searched for as written)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


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
        terms: Sequence[str],
        *,
        dialog_id: int | None = None,
        sender_id: int | None = None,
        not_dialog: int | None = None,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """The newest CANDIDATES messages with any of `terms` said before `before`: within one dialog, or the
        `sender_id`'s words in every dialog not excluded (but `not_dialog`). Unranked: see core.recall.rank_hits."""
        match = match_expression(terms)
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
