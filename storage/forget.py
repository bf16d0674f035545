"""Forgetting a person (mixed into Storage): everything of theirs goes in one transaction.

What goes: their person row, their one-to-one dialog with every message in it (the owner's replies there are
about them too), their own messages in other dialogs (whose sessions are rebuilt), every session that held
them, their chats with the bot and their place on its allowlist, and every adapter trained on them or
continued from one that was (weights remember). Adapters kept lose their figures for that persona, and
evaluation reports that showed their held-out messages go as well.

What stays: a keyed hash of their Telegram id in `forgotten`, so no sync or import brings them back. The key is
random per database; `twin include ID` lifts it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import UserError

from .memory_index import MemoryIndexStore
from .training import TrainingStore

FORGOTTEN_REASON = "trained on a forgotten person"


@dataclass
class ForgetReport:
    person_id: int
    slug: str
    messages: int = 0  # messages deleted (their dialog whole, plus theirs in any other dialog)
    sessions: int = 0  # sessions that held them (deleted, or rebuilt without them)
    dialogs: list[int] = field(default_factory=list)  # their one-to-one dialogs, deleted
    trained_on: list[int] = field(default_factory=list)  # adapters trained on them (or continued from one)
    was_active: int | None = None  # the active adapter, when it was one of `trained_on`
    now_active: int | None = None  # what replaced it: the newest earlier adapter that never saw them, or none
    adapter_paths: list[str] = field(default_factory=list)  # folders of `trained_on`, for the caller to delete
    report_paths: list[str] = field(default_factory=list)  # evaluation reports that showed them, likewise
    wal_emptied: bool = True  # the WAL (old page images, their text included) was truncated; False: a reader held it


def without_key(value: Any, key: str) -> Any:
    """`value` (decoded JSON) with every dict entry named `key` removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [without_key(v, key) for v in value]
    return value


def _keyed_hash(key: bytes, user_id: int) -> str:
    return hmac.new(key, str(int(user_id)).encode(), hashlib.sha256).hexdigest()


@dataclass
class _Scope:
    """What a person's data reaches."""

    person: dict[str, Any]
    own: list[int]  # their one-to-one dialogs
    other: list[int]  # other dialogs they wrote in
    session_ids: list[str]  # every session holding their messages
    tainted: list[int]  # adapters trained on those sessions or continued from one (pruned ones included)


class ForgetStore(MemoryIndexStore, TrainingStore):
    # Storage's own methods, which forgetting calls too.
    if TYPE_CHECKING:

        def get_meta(self, key: str, default: str | None = None) -> str | None: ...
        def require_person(self, id_or_slug: int | str) -> dict[str, Any]: ...
        def rebuild_sessions(self, dialog_id: int, gap_seconds: float, now: float | None = None) -> int: ...

    # -- the forgotten list: keyed hashes of Telegram ids -----------------------------------------------
    def _forget_key(self) -> bytes:
        """The database's random key for the hashes (made on first use; a racing process keeps the first)."""
        if (value := self.get_meta("forget_key")) is None:
            with self.transaction() as c:
                c.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('forget_key', ?)", (secrets.token_bytes(32).hex(),)
                )
                value = c.execute("SELECT value FROM meta WHERE key = 'forget_key'").fetchone()[0]
        return bytes.fromhex(value)

    def _forgotten_hash(self, user_id: int) -> str:
        return _keyed_hash(self._forget_key(), user_id)

    def forgotten(self) -> Callable[[int], bool]:
        """A test for forgotten Telegram ids, with the list and key read once (for a whole sync or import);
        no hash is computed when nobody was forgotten."""
        hashes = {r[0] for r in self.query("SELECT key FROM forgotten")}
        if not hashes:
            return lambda user_id: False
        key = self._forget_key()
        return lambda user_id: _keyed_hash(key, user_id) in hashes

    def unforget(self, user_id: int) -> bool:
        """Let syncs and imports bring `user_id` back; False when they were not forgotten."""
        with self.transaction() as c:
            return c.execute("DELETE FROM forgotten WHERE key = ?", (self._forgotten_hash(user_id),)).rowcount > 0

    # -- what a person's data reaches -----------------------------------------------------------------
    def _scope(self, id_or_slug: int | str) -> _Scope:
        person = self.require_person(id_or_slug)
        if str(person["id"]) == self.get_meta("owner_id"):
            raise UserError(f"{person['slug']} is you, the owner: to delete everything, delete the data folder")
        pid = person["id"]
        own = [r[0] for r in self.query("SELECT id FROM dialogs WHERE person_id = ?", (pid,))]
        # A JSON list, not "IN (?, ...) or NULL": `NOT IN (NULL)` is never true, so someone with no dialog of
        # their own would have no other dialogs either, and the groups they wrote in would keep stale sessions.
        own_json = json.dumps(own)
        other = [
            r[0]
            for r in self.query(
                "SELECT DISTINCT dialog_id FROM messages WHERE sender_id = ?"
                " AND dialog_id NOT IN (SELECT value FROM json_each(?))",
                (pid, own_json),
            )
        ]
        sessions = [
            r[0]
            for r in self.query(
                "SELECT id FROM sessions WHERE dialog_id IN (SELECT value FROM json_each(?))", (own_json,)
            )
        ]
        sessions += [
            r[0]
            for r in self.query(
                "SELECT DISTINCT s.id FROM sessions s JOIN messages m ON m.dialog_id = s.dialog_id"
                ' AND m.date BETWEEN s.start AND s."end" WHERE m.sender_id = ?',
                (pid,),
            )
            if r[0] not in sessions
        ]
        return _Scope(person, own, other, sessions, self.adapters_trained_on(sessions))

    def adapters_trained_on(self, session_ids: list[str]) -> list[int]:
        """Adapters trained on any of `session_ids`, and every adapter continued from one of those (its
        weights start from theirs), oldest first; pruned ones included."""
        tainted = {
            r[0]
            for r in self.query(
                "SELECT DISTINCT adapter_version FROM trained_sessions"
                " WHERE session_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(session_ids)),),
            )
        }
        for row in self.query("SELECT version, parent_version FROM adapters ORDER BY version"):
            if row["parent_version"] in tainted:  # a parent is always older: one pass finds every descendant
                tainted.add(row["version"])
        return sorted(tainted)

    def forget_preview(self, id_or_slug: int | str) -> ForgetReport:
        """What `forget_person` would delete, for the confirmation question. `trained_on` lists adapters
        that still have their folder."""
        return self._report(self._scope(id_or_slug))

    def _report(self, scope: _Scope) -> ForgetReport:
        pid, marks = scope.person["id"], ", ".join("?" for _ in scope.own) or "NULL"
        n = self.query(
            f"SELECT count(*) FROM messages WHERE dialog_id IN ({marks}) OR sender_id = ?", (*scope.own, pid)
        )[0][0]
        alive = {a["version"]: a for a in self.adapters() if a["status"] != "deleted"}
        trained_on = [v for v in scope.tainted if v in alive]
        active = next((v for v in trained_on if alive[v]["status"] == "active"), None)
        return ForgetReport(
            pid,
            scope.person["slug"],
            n,
            len(scope.session_ids),
            scope.own,
            trained_on,
            active,
            adapter_paths=[alive[v]["path"] for v in trained_on if alive[v]["path"]],
        )

    def forget_person(self, id_or_slug: int | str, gap_seconds: float, now: float | None = None) -> ForgetReport:
        """Delete everything of a person (see the module's doc) in one transaction, and remember a keyed hash
        of their id so they are not collected again; then no byte of theirs is left in the database's files
        (the memory index merged, freed pages zeroed, the WAL truncated). Files are the caller's: the report
        lists the adapter folders and evaluation reports to delete."""
        with self.transaction() as c:
            scope = self._scope(id_or_slug)
            report = self._report(scope)
            eval_held_them = bool(
                self.query(
                    "SELECT 1 FROM sessions WHERE split = 'eval' AND id IN (SELECT value FROM json_each(?))",
                    (json.dumps(scope.session_ids),),
                )
            )
            self._delete_their_rows(c, scope.person, scope.own)
            # The base model's cached eval figures (per eval set) were measured on their held-out sessions too.
            c.execute("DELETE FROM meta WHERE key LIKE 'base_eval:%'")
            self._retire_adapters_of(c, report, scope.tainted)
            report.report_paths = self._drop_reports(c, scope.tainted, eval_held_them)
            c.execute(
                "INSERT OR IGNORE INTO forgotten (key, forgotten_at) VALUES (?, ?)",
                (self._forgotten_hash(report.person_id), int(time.time())),
            )
            for dialog_id in scope.other:
                self.rebuild_sessions(dialog_id, gap_seconds, now)
            # FTS5 deletes only mark a row's tokens deleted; they stay in the index's segments until these are
            # merged. One merged segment holds none of theirs (secure_delete zeroes the pages freed).
            self.optimize_memory_index()
        report.wal_emptied = self.checkpoint()
        return report

    def _delete_their_rows(self, c: sqlite3.Connection, person: dict[str, Any], own: list[int]) -> None:
        """Their messages, dialogs, sessions, drafts, bot chats, allowlist entries and person row."""
        pid, marks = person["id"], ", ".join("?" for _ in own) or "NULL"
        c.execute(f"DELETE FROM messages WHERE dialog_id IN ({marks}) OR sender_id = ?", (*own, pid))
        c.execute(f"DELETE FROM sessions WHERE dialog_id IN ({marks})", tuple(own))
        # After the messages: their memory index rows went with them (triggers), through these slots.
        c.execute(f"DELETE FROM memory_dialogs WHERE dialog_id IN ({marks})", tuple(own))
        c.execute(f"DELETE FROM dialogs WHERE id IN ({marks})", tuple(own))
        c.execute(f"DELETE FROM drafts WHERE dialog_id IN ({marks})", tuple(own))  # their words and replies to them
        slug = person["slug"]
        c.execute("DELETE FROM bot_messages WHERE chat_id = ? OR user_id = ? OR speaker = ?", (pid, pid, slug))
        c.execute("DELETE FROM chats WHERE chat_id = ? OR persona = ?", (pid, slug))
        c.execute(
            "DELETE FROM access WHERE user_id = ? OR (? IS NOT NULL AND username = lower(?))",
            (pid, person["username"], person["username"]),
        )
        c.execute("DELETE FROM people WHERE id = ?", (pid,))

    def _retire_adapters_of(self, c: sqlite3.Connection, report: ForgetReport, tainted: list[int]) -> None:
        """Mark `tainted` adapters deleted (with what they saw), drop the persona from the figures of the
        others, and put the newest earlier adapter that never saw them back in place of an active one."""
        marks = ", ".join("?" for _ in tainted) or "NULL"
        c.execute(
            f"UPDATE adapters SET status = 'deleted', reason = ?, eval_json = NULL WHERE version IN ({marks})",
            (FORGOTTEN_REASON, *tainted),
        )
        c.execute(f"DELETE FROM trained_sessions WHERE adapter_version IN ({marks})", tuple(tainted))
        for row in self.query("SELECT version, eval_json FROM adapters WHERE eval_json IS NOT NULL"):
            figures = without_key(json.loads(row["eval_json"]), report.slug)
            c.execute("UPDATE adapters SET eval_json = ? WHERE version = ?", (json.dumps(figures), row["version"]))
        if report.was_active is None:
            report.now_active = (self.active_adapter() or {}).get("version")
            return
        earlier = self.query(
            "SELECT version FROM adapters WHERE status = 'retired' AND version < ? ORDER BY version DESC LIMIT 1",
            (report.was_active,),
        )
        if earlier:
            report.now_active = earlier[0][0]
            c.execute(
                "UPDATE adapters SET status = 'active', reason = ? WHERE version = ?",
                (f"active again: {report.was_active} was {FORGOTTEN_REASON}", report.now_active),
            )

    def _drop_reports(self, c: sqlite3.Connection, tainted: list[int], eval_held_them: bool) -> list[str]:
        """Delete the evaluation reports of `tainted` adapters, and every report when their sessions were
        held out for evaluation (reports quote held-out messages). Returns the report folders."""
        where = "1" if eval_held_them else f"version IN ({', '.join('?' for _ in tainted) or 'NULL'})"
        params = () if eval_held_them else tuple(tainted)
        paths = [r[0] for r in self.query(f"SELECT path FROM eval_reports WHERE {where}", params) if r[0]]
        c.execute(f"DELETE FROM eval_reports WHERE {where}", params)
        return paths
