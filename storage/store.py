"""Storage: people, dialogs, messages, sessions and meta, behind named methods (no SQL leaves here)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from core.errors import UserError
from core.personas import slug_base, unique_slug, validate_slug
from core.sessions import closed_before, session_rows

from .bot import BotStore
from .counts_schema import COUNT_ADDED, SESSION_RECOUNT
from .db import Database
from .drafts import DraftStore
from .evaluation import EvalStore
from .forget import ForgetStore
from .memory import MemoryStore
from .memory_index import MemoryIndexStore, keep_memory_index
from .training import TrainingStore

if TYPE_CHECKING:
    from core.settings import Settings

MESSAGE_COLUMNS = (
    "dialog_id",
    "id",
    "sender_id",
    "date",
    "text",
    "out",
    "reply_to",
    "forwarded",
    "forwarded_from",
    "media_type",
    "edited",
    "via_bot",
    "source",
)
# Messages per INSERT in insert_many_messages: 76 × 13 values stays under SQLite's oldest limit of 999.
BULK_ROWS = 999 // len(MESSAGE_COLUMNS)
# A plain text message (no reply, forward, media, edit or bot) binds only the columns it fills.
_PLAIN_FIXED = {
    "reply_to": None,
    "forwarded": 0,
    "forwarded_from": None,
    "media_type": None,
    "edited": None,
    "via_bot": 0,
}
_PLAIN_BOUND = itemgetter(*(i for i, k in enumerate(MESSAGE_COLUMNS) if k not in _PLAIN_FIXED))
_PLAIN_PART = itemgetter(*(MESSAGE_COLUMNS.index(k) for k in _PLAIN_FIXED))
_PLAIN_VALUES = tuple(_PLAIN_FIXED.values())
_PLAIN_COLUMNS = tuple(k for k in MESSAGE_COLUMNS if k not in _PLAIN_FIXED) + tuple(_PLAIN_FIXED)
_PLAIN_LITERALS = tuple("NULL" if v is None else str(v) for v in _PLAIN_VALUES)
SESSION_COLUMNS = (
    "id",
    "dialog_id",
    "first_message_id",
    "last_message_id",
    "start",
    "end",
    "n_messages",
    "n_turns",
    "closed",
    "split",
    "content_hash",
)


class UnknownPersona(UserError, LookupError):
    pass


def _insert_batched(
    c: sqlite3.Connection, columns: Sequence[str], literals: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """INSERT OR IGNORE messages: `rows` hold the first columns, `literals` fill the rest; BULK_ROWS each.
    Returns the rows added (a cursor's rowcount: the memory index's trigger writes are not counted)."""
    insert = f"INSERT OR IGNORE INTO messages ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join(["?"] * (len(columns) - len(literals)) + list(literals)) + ")"
    full = len(rows) - len(rows) % BULK_ROWS
    bulk = c.executemany(
        insert + ", ".join([one] * BULK_ROWS),
        (tuple(chain.from_iterable(rows[i : i + BULK_ROWS])) for i in range(0, full, BULK_ROWS)),
    ).rowcount
    return max(bulk, 0) + max(c.executemany(insert + one, rows[full:]).rowcount, 0)


def _next_rowid(c: sqlite3.Connection) -> int:
    """The rowid the next inserted message gets (or above): where an insert's own rows begin."""
    return c.execute("SELECT coalesce(max(rowid), 0) + 1 FROM messages").fetchone()[0]


def _count_added(c: sqlite3.Connection, start: int) -> None:
    """Count the messages inserted since rowid `start` into their senders' rows (storage.counts_schema)."""
    for statement in COUNT_ADDED:
        c.execute(statement, (start,))


def _dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


class Storage(BotStore, DraftStore, ForgetStore, MemoryStore, MemoryIndexStore, TrainingStore, EvalStore, Database):
    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0]["value"] if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    # -- the owner ----------------------------------------------------------------------------------
    def owner_id(self, configured: int | None) -> int | None:
        """The owner's Telegram id: `configured` (TWIN_OWNER_ID) when set, else the one an import or a sync
        recorded; None when neither. Every part asks here, so they all agree on who the owner is."""
        if configured is not None:
            return int(configured)
        recorded = self.get_meta("owner_id")
        return int(recorded) if recorded is not None and recorded.strip() else None

    def owner_slug(self, configured: int | None) -> str | None:
        """The owner's persona slug, or None when the owner or their person row is not known."""
        owner = self.owner_id(configured)
        person = self.person(owner) if owner is not None else None
        return person["slug"] if person else None

    # -- people -----------------------------------------------------------------------------------
    def upsert_people(self, people: Iterable[dict[str, Any]]) -> int:
        """Insert new people (giving each a unique slug) and refresh names of known ones.

        A known person keeps their slug when their name or username changes: personas must be stable.
        Returns how many people were new.
        """
        new = 0
        now = int(time.time())
        with self.transaction() as c:
            taken = {r[0] for r in c.execute("SELECT slug FROM people")}
            for p in people:
                name = p.get("name") or " ".join(x for x in (p.get("first_name"), p.get("last_name")) if x)
                existing = c.execute("SELECT id FROM people WHERE id = ?", (p["id"],)).fetchone()
                if existing:
                    c.execute(
                        "UPDATE people SET first_name = coalesce(?, first_name),"
                        " last_name = coalesce(?, last_name), username = coalesce(?, username),"
                        " name = coalesce(?, name), updated_at = ? WHERE id = ?",
                        (p.get("first_name"), p.get("last_name"), p.get("username"), name or None, now, p["id"]),
                    )
                    continue
                slug = unique_slug(slug_base(p.get("username"), p.get("first_name") or name, p["id"]), taken)
                taken.add(slug)
                c.execute(
                    "INSERT INTO people (id, first_name, last_name, username, name, slug, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p["id"], p.get("first_name"), p.get("last_name"), p.get("username"), name, slug, now),
                )
                new += 1
        return new

    def person(self, id_or_slug: int | str) -> dict[str, Any] | None:
        if isinstance(id_or_slug, int) or str(id_or_slug).lstrip("-").isdigit():
            return _dict(next(iter(self.query("SELECT * FROM people WHERE id = ?", (int(id_or_slug),))), None))
        return _dict(next(iter(self.query("SELECT * FROM people WHERE slug = ?", (id_or_slug,))), None))

    def person_by_username(self, username: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM people WHERE lower(username) = lower(?)", (username.lstrip("@"),))
        return _dict(rows[0]) if rows else None

    def require_person(self, id_or_slug: int | str) -> dict[str, Any]:
        person = self.person(id_or_slug)
        if person is None:
            raise UnknownPersona(f"no person {id_or_slug!r}: `twin personas` lists the persona names")
        return person

    def people(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM people ORDER BY id")]

    def personas(self) -> list[dict[str, Any]]:
        """People with their message and session counts, most active first: a few rows per dialog are read
        (the counts kept in dialog_senders, see storage.counts_schema), however long the history."""
        rows = self.query(
            "SELECT p.id, p.slug, p.name, p.username, p.published,"
            " coalesce(c.messages, 0) AS messages, coalesce(c.sessions, 0) AS sessions FROM people p"
            " LEFT JOIN (SELECT sender_id, sum(messages) AS messages, sum(sessions) AS sessions"
            "   FROM dialog_senders GROUP BY sender_id) c ON c.sender_id = p.id"
            " ORDER BY messages DESC, p.slug"
        )
        return [dict(r) for r in rows]

    def persona_and_owner(self, slug: str, owner_id: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The person whose persona is `slug` and the owner's person row (None for either not known), in one
        lookup: the bot asks on every reply whether the chat's persona may still be played."""
        rows = [dict(r) for r in self.query("SELECT * FROM people WHERE slug = ? OR id = ?", (slug, owner_id))]
        return next((r for r in rows if r["slug"] == slug), None), next((r for r in rows if r["id"] == owner_id), None)

    def rename_persona(self, old: str, new: str) -> None:
        validate_slug(new)
        with self.transaction() as c:
            person = self.require_person(old)
            if self.person(new) is not None:
                raise UserError(f"persona {new!r} already exists: pick another name")
            c.execute("UPDATE people SET slug = ? WHERE id = ?", (new, person["id"]))

    def set_published(self, slug: str, published: bool) -> None:
        with self.transaction() as c:
            person = self.require_person(slug)
            c.execute("UPDATE people SET published = ? WHERE id = ?", (int(published), person["id"]))

    # -- dialogs ----------------------------------------------------------------------------------
    def upsert_dialog(self, dialog: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO dialogs (id, type, name, person_id) VALUES (:id, :type, :name, :person_id)"
                " ON CONFLICT(id) DO UPDATE SET type = excluded.type, name = excluded.name,"
                " person_id = coalesce(excluded.person_id, dialogs.person_id)",
                {"type": None, "name": None, "person_id": None, **dialog},
            )

    def dialog(self, dialog_id: int) -> dict[str, Any] | None:
        return _dict(next(iter(self.query("SELECT * FROM dialogs WHERE id = ?", (dialog_id,))), None))

    def dialogs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM dialogs ORDER BY id")]

    def dialog_of(self, id_or_slug: int | str) -> dict[str, Any]:
        """The one-to-one dialog with a person (by slug or person id), or a dialog by its id."""
        if str(id_or_slug).lstrip("-").isdigit() and (dialog := self.dialog(int(id_or_slug))):
            return dialog
        person = self.require_person(id_or_slug)
        dialog = self.person_dialog(person["id"])
        if dialog is None:
            raise UnknownPersona(f"no dialog with {person['slug']!r}")
        return dialog

    def person_dialog(self, person_id: int) -> dict[str, Any] | None:
        """The owner's one-to-one dialog with a person (the oldest, should an export and a sync have made
        two), or None: the one way exclude, include, collect and memory all find it."""
        rows = self.query(
            "SELECT * FROM dialogs WHERE person_id = ? AND type = 'personal_chat' ORDER BY id LIMIT 1", (person_id,)
        )
        return _dict(rows[0]) if rows else None

    def delete_dialog(self, dialog_id: int) -> None:
        """A dialog, its messages and its sessions (a failed import taking back what it added)."""
        with self.transaction() as c:
            for table, key in (("messages", "dialog_id"), ("sessions", "dialog_id"), ("dialogs", "id")):
                c.execute(f"DELETE FROM {table} WHERE {key} = ?", (dialog_id,))

    def set_excluded(self, dialog_id: int, excluded: bool) -> None:
        with self.transaction() as c:
            c.execute("UPDATE dialogs SET excluded = ? WHERE id = ?", (int(excluded), dialog_id))

    def advance_watermark(self, dialog_id: int, message_id: int) -> None:
        """Move the sync watermark up (never down), stamping the sync time."""
        with self.transaction() as c:
            c.execute(
                "UPDATE dialogs SET watermark = max(coalesce(watermark, 0), ?), last_sync_at = ? WHERE id = ?",
                (message_id, int(time.time()), dialog_id),
            )

    def lower_watermark(self, dialog_id: int, message_id: int) -> None:
        """Move the sync watermark down to `message_id` (never up): the next sync fetches from there again."""
        with self.transaction() as c:
            c.execute(
                "UPDATE dialogs SET watermark = min(coalesce(watermark, 0), ?) WHERE id = ?", (message_id, dialog_id)
            )

    # -- messages ---------------------------------------------------------------------------------
    def insert_messages(self, rows: Iterable[Sequence[Any] | dict[str, Any]], replace: bool = False) -> int:
        """Bulk-insert messages (tuples in MESSAGE_COLUMNS order, or dicts); returns rows added or changed.

        replace=False ignores messages already stored (an import is idempotent); replace=True overwrites
        them (a re-read after edits).
        """
        cols = ", ".join(MESSAGE_COLUMNS)
        marks = ", ".join("?" for _ in MESSAGE_COLUMNS)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        tuples = [tuple(r[k] if k in r else None for k in MESSAGE_COLUMNS) if isinstance(r, dict) else r for r in rows]
        if replace:  # the last of a repeated id, as REPLACE would keep: no row replaces one not yet counted in
            tuples = list({(t[0], t[1]): t for t in tuples}.values())
        with self.transaction() as c:
            start = _next_rowid(c)
            # rowcount, not total_changes: the memory index's trigger writes are not messages.
            cur = c.executemany(f"INSERT INTO messages ({cols}) VALUES ({marks})".replace("INSERT", verb, 1), tuples)
            _count_added(c, start)
            return max(cur.rowcount, 0)

    def insert_many_messages(self, rows: Sequence[Sequence[Any]]) -> int:
        """insert_messages(rows) for a big import (MESSAGE_COLUMNS tuples, INSERT OR IGNORE), about twice
        as fast; rows must not repeat a (dialog_id, id). Returns how many were added.

        Binding values and running one statement per row is most of the cost: plain text messages bind
        only the columns they fill, and every statement inserts BULK_ROWS rows.
        """
        plain: list[Sequence[Any]] = []
        other: list[Sequence[Any]] = []
        for row in rows:
            (plain if _PLAIN_PART(row) == _PLAIN_VALUES else other).append(row)
        with self.transaction() as c:
            start = _next_rowid(c)
            added = _insert_batched(c, MESSAGE_COLUMNS, (), other)
            added += _insert_batched(c, _PLAIN_COLUMNS, _PLAIN_LITERALS, list(map(_PLAIN_BOUND, plain)))
            _count_added(c, start)
            return added

    def messages(self, dialog_id: int) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM messages WHERE dialog_id = ? ORDER BY date, id", (dialog_id,))
        return [dict(r) for r in rows]

    def message_ids(self, dialog_id: int) -> set[int]:
        return {r[0] for r in self.query("SELECT id FROM messages WHERE dialog_id = ?", (dialog_id,))}

    def stored_ids(self, dialog_id: int, ids: Sequence[int]) -> set[int]:
        """Those of `ids` the dialog holds already."""
        rows = self.query(
            "SELECT id FROM messages WHERE dialog_id = ? AND id IN (SELECT value FROM json_each(?))",
            (dialog_id, orjson.dumps(list(ids)).decode()),
        )
        return {r[0] for r in rows}

    def has_messages(self, dialog_id: int) -> bool:
        return bool(self.query("SELECT 1 FROM messages WHERE dialog_id = ? LIMIT 1", (dialog_id,)))

    def synced_ids_between(self, dialog_id: int, since: int, max_id: int) -> set[int]:
        """Ids of the dialog's messages stored by a sync (not an import: its ids may be made up) sent since
        `since` (unix), up to `max_id`."""
        rows = self.query(
            "SELECT id FROM messages WHERE dialog_id = ? AND date >= ? AND id <= ? AND source = 'telethon'",
            (dialog_id, since, max_id),
        )
        return {r[0] for r in rows}

    def delete_messages(self, dialog_id: int, ids: Iterable[int]) -> int:
        """Delete messages of a dialog by id (deleted on Telegram); returns how many went."""
        with self.transaction() as c:
            return c.execute(
                "DELETE FROM messages WHERE dialog_id = ? AND id IN (SELECT value FROM json_each(?))",
                (dialog_id, orjson.dumps(sorted(ids)).decode()),
            ).rowcount

    # -- sessions ---------------------------------------------------------------------------------
    def replace_sessions(self, dialog_id: int, sessions: Iterable[dict[str, Any]]) -> None:
        cols = ", ".join(SESSION_COLUMNS)
        marks = ", ".join("?" for _ in SESSION_COLUMNS)
        with self.transaction() as c:
            c.execute("DELETE FROM sessions WHERE dialog_id = ?", (dialog_id,))
            c.executemany(
                f"INSERT INTO sessions ({cols}) VALUES ({marks})",
                (tuple(s[k] for k in SESSION_COLUMNS) for s in sessions),
            )
            for statement in SESSION_RECOUNT:
                c.execute(statement, (dialog_id,))

    def rebuild_sessions(self, dialog_id: int, gap_seconds: float, now: float | None = None) -> int:
        """Recompute a dialog's sessions from its messages (after an import or a sync); returns count."""
        rows = session_rows(dialog_id, self.messages(dialog_id), gap_seconds, time.time() if now is None else now)
        self.replace_sessions(dialog_id, rows)
        return len(rows)

    def sessions(
        self,
        closed: bool | None = None,
        split: str | None = None,
        *,
        gap_seconds: float | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Sessions of dialogs not excluded, oldest first per dialog. `closed` is decided from each session's
        end and the time (`gap_seconds` is then required), not from the flag stored when it was cut."""
        sql = "SELECT s.* FROM sessions s JOIN dialogs d ON d.id = s.dialog_id WHERE d.excluded = 0"
        params: list[float | str] = []
        if closed is not None:
            if gap_seconds is None:
                raise TypeError("sessions(closed=...) needs gap_seconds: closed-ness depends on the time")
            sql += ' AND s."end" < ?' if closed else ' AND s."end" >= ?'
            params.append(closed_before(time.time() if now is None else now, gap_seconds))
        if split is not None:
            sql += " AND s.split = ?"
            params.append(split)
        return [dict(r) for r in self.query(sql + " ORDER BY s.dialog_id, s.start", tuple(params))]

    def session_messages(self, session: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT * FROM messages WHERE dialog_id = ? AND date BETWEEN ? AND ? ORDER BY date, id",
            (session["dialog_id"], session["start"], session["end"]),
        )
        return [dict(r) for r in rows]

    # -- status -----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        one = lambda sql: self.query(sql)[0][0]  # noqa: E731
        return {
            "people": one("SELECT count(*) FROM people"),
            "dialogs": one("SELECT count(*) FROM dialogs"),
            "dialogs_excluded": one("SELECT count(*) FROM dialogs WHERE excluded = 1"),
            "messages": one("SELECT count(*) FROM messages"),
        }

    def session_counts(self, gap_seconds: float, now: float | None = None) -> dict[str, int]:
        """Closed, open and held-out sessions, closed-ness decided as `sessions` decides it."""
        cutoff = closed_before(time.time() if now is None else now, gap_seconds)
        row = self.query(
            "SELECT count(*), coalesce(sum(s.\"end\" < ?), 0), coalesce(sum(s.split = 'eval'), 0) FROM sessions s",
            (cutoff,),
        )[0]
        return {"closed": row[1], "open": row[0] - row[1], "eval": row[2]}


def open_storage(settings: Settings) -> Storage:
    """The storage at settings.db_path, creating the data folder on first use, with the memory index built
    or dropped as TWIN_MEMORY_SCOPE asks."""
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    try:
        keep_memory_index(store, settings)
    except BaseException:
        store.close()
        raise
    return store
