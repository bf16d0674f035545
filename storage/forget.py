"""Forgetting a person (mixed into Storage): their messages, the sessions holding them, their chats with
the bot, and their dialog excluded so no sync brings them back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class ForgetReport:
    person_id: int
    slug: str
    messages: int = 0  # messages deleted (their dialog whole, plus theirs in any other dialog)
    sessions: int = 0  # sessions that held them (deleted, or rebuilt without them)
    dialogs: list[int] = field(default_factory=list)  # their one-to-one dialogs, now excluded
    trained_on: list[int] = field(default_factory=list)  # adapter versions trained on those sessions
    session_ids: list[str] = field(default_factory=list)  # the sessions that held them (ids stay unique)


class ForgetStore:
    def _forget_scope(self, person_id: int) -> tuple[list[int], list[int], list[str]]:
        """(their dialogs, other dialogs they wrote in, ids of every session holding their messages)."""
        own = [r[0] for r in self.query("SELECT id FROM dialogs WHERE person_id = ?", (person_id,))]
        marks = ", ".join("?" for _ in own) or "NULL"
        other = [r[0] for r in self.query(
            f"SELECT DISTINCT dialog_id FROM messages WHERE sender_id = ? AND dialog_id NOT IN ({marks})",
            (person_id, *own),
        )]  # fmt: skip
        sessions = [
            r[0] for r in self.query(f"SELECT id FROM sessions WHERE dialog_id IN ({marks})", tuple(own))
        ]
        sessions += [r[0] for r in self.query(
            "SELECT DISTINCT s.id FROM sessions s JOIN messages m ON m.dialog_id = s.dialog_id"
            " AND m.date BETWEEN s.start AND s.\"end\" WHERE m.sender_id = ?", (person_id,),
        ) if r[0] not in sessions]  # fmt: skip
        return own, other, sessions

    def forget_preview(self, id_or_slug: int | str) -> ForgetReport:
        """What `forget_person` would delete, for the confirmation question."""
        person = self.require_person(id_or_slug)
        own, _, sessions = self._forget_scope(person["id"])
        marks = ", ".join("?" for _ in own) or "NULL"
        n = self.query(
            f"SELECT count(*) FROM messages WHERE dialog_id IN ({marks}) OR sender_id = ?",
            (*own, person["id"]),
        )[0][0]
        return ForgetReport(person["id"], person["slug"], n, len(sessions), own, self.adapters_trained_on(sessions),
                            sessions)  # fmt: skip

    def adapters_trained_on(self, session_ids: list[str]) -> list[int]:
        """Versions of the adapters trained on any of `session_ids`, oldest first."""
        rows = self.query(
            "SELECT DISTINCT adapter_version FROM trained_sessions"
            " WHERE session_id IN (SELECT value FROM json_each(?)) ORDER BY adapter_version",
            (json.dumps(list(session_ids)),),
        )
        return [r[0] for r in rows]

    def forget_person(
        self, id_or_slug: int | str, gap_seconds: float, now: float | None = None
    ) -> ForgetReport:
        """Delete a person's messages and sessions and exclude their dialog, in one transaction.

        Their one-to-one dialog loses every message (the owner's replies in it are about them too); in
        other dialogs only their own messages go and the sessions are rebuilt. The bot's chats with them
        go as well. The person row stays (unpublished) so the exclusion and their slug keep meaning.
        Adapters already trained on them are listed in the report: only a retrain removes them.
        """
        report = self.forget_preview(id_or_slug)
        own, other, _ = self._forget_scope(report.person_id)
        marks = ", ".join("?" for _ in own) or "NULL"
        with self.transaction() as c:
            c.execute(
                f"DELETE FROM messages WHERE dialog_id IN ({marks}) OR sender_id = ?",
                (*own, report.person_id),
            )
            c.execute(f"DELETE FROM sessions WHERE dialog_id IN ({marks})", tuple(own))
            c.execute(f"UPDATE dialogs SET excluded = 1 WHERE id IN ({marks})", tuple(own))
            c.execute("DELETE FROM bot_messages WHERE chat_id = ? OR user_id = ?", (report.person_id,) * 2)
            c.execute("UPDATE people SET published = 0 WHERE id = ?", (report.person_id,))
            for dialog_id in other:
                self.rebuild_sessions(dialog_id, gap_seconds, now)
        return report
