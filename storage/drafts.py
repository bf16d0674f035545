"""Storage of the twin's drafts in the owner's own chats and what the owner then sent (mixed into Storage).

Each row is one decision: the twin's draft beside the owner's next message in that chat (or none), judged
accepted (sent as is), edited (with the edit distance) or ignored. These are preference pairs: the owner's
reply preferred over the draft.
"""

from __future__ import annotations

import time
from typing import Any

from .db import Database

VERDICTS = ("accepted", "edited", "ignored")


class DraftStore(Database):
    def open_draft(self, dialog_id: int, persona: str, adapter_version: int | None, text: str) -> int:
        """Record a draft the twin saved in a chat; returns its id."""
        with self.transaction() as c:
            cursor = c.execute(
                "INSERT INTO drafts (dialog_id, persona, adapter_version, text, created_at) VALUES (?, ?, ?, ?, ?)",
                (dialog_id, persona, adapter_version, text, int(time.time())),
            )
            return int(cursor.lastrowid or 0)

    def open_drafts(self) -> list[dict[str, Any]]:
        """Drafts not decided yet (the writer picks them up after a restart), oldest first."""
        return [dict(r) for r in self.query("SELECT * FROM drafts WHERE closed_at IS NULL ORDER BY id")]

    def close_draft(
        self,
        draft_id: int,
        verdict: str,
        owner_text: str | None = None,
        distance: int | None = None,
        reply_message_id: int | None = None,
    ) -> None:
        """Record the owner's decision on a draft (and the message that made it); a draft already decided
        stays as it was."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
        with self.transaction() as c:
            c.execute(
                "UPDATE drafts SET verdict = ?, owner_text = ?, distance = ?, reply_message_id = ?, closed_at = ?"
                " WHERE id = ? AND closed_at IS NULL",
                (verdict, owner_text, distance, reply_message_id, int(time.time()), draft_id),
            )

    def draft(self, draft_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM drafts WHERE id = ?", (draft_id,))
        return dict(rows[0]) if rows else None

    def draft_preference_pairs(self) -> list[dict[str, Any]]:
        """Edited drafts as preference pairs (the owner's reply preferred over the twin's draft), oldest first,
        each with `session_id`, the training session that holds the owner's reply: for the preference stage.
        None from a held-out (eval) session, so evaluation never sees them trained."""
        rows = self.query(
            "SELECT d.*, s.id AS session_id FROM drafts d JOIN sessions s ON s.dialog_id = d.dialog_id"
            " AND d.reply_message_id BETWEEN s.first_message_id AND s.last_message_id"
            " WHERE d.verdict = 'edited' AND s.split = 'train' ORDER BY d.id"
        )
        return [dict(r) for r in rows]

    def draft_stats(self) -> list[dict[str, Any]]:
        """Drafts written, accepted unchanged, edited and ignored, per persona and adapter version."""
        rows = self.query(
            "SELECT persona, adapter_version, count(*) AS written,"
            " coalesce(sum(verdict = 'accepted'), 0) AS accepted, coalesce(sum(verdict = 'edited'), 0) AS edited,"
            " coalesce(sum(verdict = 'ignored'), 0) AS ignored, avg(CASE WHEN verdict = 'edited' THEN distance END)"
            " AS mean_distance FROM drafts GROUP BY persona, adapter_version ORDER BY persona, adapter_version"
        )
        return [dict(r) for r in rows]
