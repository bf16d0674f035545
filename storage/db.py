"""The SQLite database: connections, transactions and forward migrations.

This package is the only place that knows table names and SQL. The file is created 0600 (SQLite gives its
-wal/-shm files the same mode) and runs in WAL mode with a busy timeout, so the bot, a separate
`twin collect` and a training subprocess can share it.

Writes go through one connection, one transaction at a time; reads outside a transaction go through a
connection of the reading thread's own, so a slow read never holds up another thread's read or a write,
and a write never holds up a read (WAL: readers see the last commit).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlite_utils

from core.errors import UserError

from .counts_schema import COUNT_BY_STATEMENT, COUNTS_BACKFILL, COUNTS_SCHEMA
from .drafts_schema import DRAFTS_REPLY_ID, DRAFTS_SCHEMA
from .memory_schema import MEMORY_INDEX_OFF, V6_BACKFILL, V6_SCHEMA

# A writer waits this long for another writer before "database is locked" (every writer holds short txns).
BUSY_TIMEOUT_MS = 30_000
# A writer that finds the write lock taken tries again this soon, then at most this far apart. SQLite's own
# busy handler sleeps 1, 2, 5, 10 … 100 ms between tries and so keeps missing the short gaps an import leaves
# between its transactions (collector.telegram_export.YIELD_S, longer than the longest retry interval).
LOCK_RETRY_S, LOCK_RETRY_MAX_S = 0.0002, 0.001


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("people").create(
        {
            "id": int,  # Telegram user id (negative: synthesised for exports that name no id)
            "first_name": str,
            "last_name": str,
            "username": str,
            "name": str,  # display name as last seen
            "slug": str,  # persona slug: stable, ASCII, unique
            "published": int,  # the owner lets non-owners pick this persona in the bot
            "updated_at": int,
        },
        pk="id",
        not_null={"slug"},
        defaults={"published": 0},
    )
    db.table("people").create_index(["slug"], unique=True)
    db.table("dialogs").create(
        {
            "id": int,  # peer id (the other user's id for a personal chat)
            "type": str,  # personal_chat, private_group, ...
            "name": str,
            "person_id": int,  # the other person of a one-to-one dialog
            "excluded": int,  # the owner asked the collector and trainer to skip it
            "watermark": int,  # highest message id stored; the next sync fetches only ids above it
            "last_sync_at": int,
        },
        pk="id",
        defaults={"excluded": 0, "watermark": 0},
    )
    db.table("messages").create(
        {
            "dialog_id": int,
            "id": int,
            "sender_id": int,
            "date": int,  # unix seconds, UTC
            "text": str,
            "out": int,  # sent by the owner
            "reply_to": int,
            "forwarded": int,  # not the sender's own words: stored, never trained on as theirs
            "forwarded_from": str,
            "media_type": str,
            "edited": int,  # unix seconds of the last edit
            "via_bot": int,
            "source": str,  # export | telethon
        },
        pk=("dialog_id", "id"),
        not_null={"dialog_id", "id", "date"},
        defaults={"out": 0, "forwarded": 0},
    )
    db.table("messages").create_index(["dialog_id", "date"])
    db.table("messages").create_index(["sender_id"])
    db.table("sessions").create(
        {
            "id": str,  # "{dialog_id}-{first_message_id}": stable while the session's first message is
            "dialog_id": int,
            "first_message_id": int,
            "last_message_id": int,
            "start": int,
            "end": int,
            "n_messages": int,
            "n_turns": int,
            "closed": int,  # as of the last rebuild only: readers decide it from "end" and the time
            "split": str,  # train | eval, a stable hash of the id
            "content_hash": str,
        },
        pk="id",
    )
    db.table("sessions").create_index(["dialog_id"])


def _v2(db: sqlite_utils.Database) -> None:
    """Training rounds, numbered adapters, which sessions each adapter saw, and crash-safe locks."""
    db.table("training_runs").create(
        {
            "id": int,
            "started_at": int,
            "finished_at": int,
            "status": str,  # running | succeeded | failed
            "error": str,
            "pid": int,
            "full": int,  # retrained from the base model on everything
            "adapter_version": int,
            "n_sessions": int,
            "n_tokens": int,
        },
        pk="id",
    )
    db.table("adapters").create(
        {
            "version": int,  # adapters/{version:04d}/ and vLLM's lora_int_id
            "run_id": int,
            "parent_version": int,  # the adapter this one continued from (None: from the base model)
            "base_model": str,
            "path": str,
            "created_at": int,
            "status": str,  # active | candidate | rejected | retired | deleted
            "reason": str,  # why rejected / rolled back
            "eval_loss": float,
            "base_eval_loss": float,
            "eval_json": str,  # all eval figures (per persona, ...) as JSON
            "n_sessions": int,
        },
        pk="version",
    )
    db.table("trained_sessions").create(
        {"adapter_version": int, "session_id": str, "content_hash": str}, pk=("adapter_version", "session_id")
    )
    db.table("trained_sessions").create_index(["session_id"])
    db.table("trained_sessions").create_index(["content_hash"])
    db.table("locks").create({"name": str, "pid": int, "host": str, "acquired_at": int}, pk="name")


def _v3(db: sqlite_utils.Database) -> None:
    """The bot: per-chat settings, the allowlist, and its own conversations (never training data)."""
    db.table("chats").create({"chat_id": int, "persona": str, "updated_at": int}, pk="chat_id")
    db.table("access").create(
        {"id": int, "user_id": int, "username": str, "added_at": int},  # user_id or @username (or both)
        pk="id",
    )
    db.table("access").create_index(["user_id"], unique=True)
    db.table("access").create_index(["username"], unique=True)
    db.table("bot_messages").create(
        {
            "id": int,
            "chat_id": int,
            "user_id": int,  # who wrote it (None for the twin's replies)
            "speaker": str,  # the persona slug or name in the prompt
            "from_twin": int,
            "date": int,
            "text": str,
        },
        pk="id",
    )
    db.table("bot_messages").create_index(["chat_id", "date"])


def _v4(db: sqlite_utils.Database) -> None:
    """Evaluation reports: one per adapter version, its headline figures for `twin adapters` and /status."""
    db.table("eval_reports").create(
        {
            "version": int,  # the adapter evaluated
            "created_at": int,
            "status": str,  # ok | leak (eval sessions found in the adapter's training data)
            "path": str,  # the report folder (report.md, report.json, PNG plots)
            "figures": str,  # headline figures as JSON (losses, style distance, question share)
        },
        pk="version",
    )


def _v5(db: sqlite_utils.Database) -> None:
    """People the owner made the twin forget: only a keyed hash of their Telegram id (see storage.forget)."""
    db.table("forgotten").create({"key": str, "forgotten_at": int}, pk="key")


def _v6(db: sqlite_utils.Database) -> None:
    """The twin's memory: every trainable message searchable by what it says (see storage.memory)."""
    for statement in V6_SCHEMA + V6_BACKFILL:
        db.execute(statement)


def _v7(db: sqlite_utils.Database) -> None:
    """Adapter paths relative to the data dir (core.paths). Rounds run in-process stored them relative to their
    working directory, as '<TWIN_DATA_DIR>/adapters/NNNN' (e.g. 'data/adapters/0001'): the folder is always
    the data dir's adapters/NNNN. Absolute ones (the bot's rounds) stay as they are."""
    folder = "'adapters/' || printf('%04d', version)"
    db.execute(
        f"UPDATE adapters SET path = {folder}"
        f" WHERE path NOT LIKE '/%' AND (path = {folder} OR path LIKE '%/' || {folder})"
    )


def _v8(db: sqlite_utils.Database) -> None:
    """The memory index only while memory is on, and without a copy of every text: v6's index goes; the first
    start with memory on builds the new one (storage.memory_index)."""
    for statement in MEMORY_INDEX_OFF:
        db.execute(statement)


def _v9(db: sqlite_utils.Database) -> None:
    """Each sender's message and session counts per dialog, for `personas()` (see storage.counts_schema)."""
    for statement in COUNTS_SCHEMA + COUNTS_BACKFILL:
        db.execute(statement)


def _v10(db: sqlite_utils.Database) -> None:
    """The twin's drafts in the owner's chats and the owner's decision on each (see storage.drafts)."""
    for statement in DRAFTS_SCHEMA:
        db.execute(statement)


def _v11(db: sqlite_utils.Database) -> None:
    """A draft keeps the id of the owner's message that decided it (see storage.drafts)."""
    for statement in DRAFTS_REPLY_ID:
        db.execute(statement)


def _v12(db: sqlite_utils.Database) -> None:
    """Messages counted in by the statement that inserts them, not a trigger per row (storage.counts_schema)."""
    for statement in COUNT_BY_STATEMENT:
        db.execute(statement)


Migration = Callable[[sqlite_utils.Database], None]
# Forward migrations: MIGRATIONS[i] takes the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10, _v11, _v12]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(UserError):
    pass


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def connect(path: str, reader: bool = False) -> sqlite3.Connection:
    """A new connection to the database at `path`, set up as every connection of twin's is (the one place
    a connection's pragmas are set). `reader`: a thread's read connection, refused any write."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (sqlite3's implicit transactions would commit
    # half of a multi-step write). check_same_thread=False: close() closes every thread's reader.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not reader:  # the file's mode, kept in the file: the writer sets it before any reader opens
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # An INSERT OR REPLACE of a message (a re-read after an edit) deletes the old row: only with recursive
    # triggers does that deletion take the old text out of the memory index (and the old row out of the
    # counts) too.
    conn.execute("PRAGMA recursive_triggers = ON")
    # Deleted rows and freed pages are overwritten with zeros, whatever SQLite's build default: what
    # `twin forget` deletes must not linger in the file's free space.
    conn.execute("PRAGMA secure_delete = ON")
    if reader:
        conn.execute("PRAGMA query_only = ON")
    return conn


class _Reader:
    """A thread's read connection, held by the thread (a thread-local): it is closed when the thread ends."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class Database:
    """One write connection with a re-entrant write transaction, and a read connection per thread.

    Writes go through `transaction()`: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception, so a
    failed import or a killed sync leaves the file as it was. `query()` reads on the calling thread's own
    connection, except inside that thread's transaction (which reads its own writes on the write
    connection). An in-memory database (":memory:") is one connection for all: another connection would
    open another, empty database.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._one_connection = str(path) == ":memory:"
        if not self._one_connection:
            _create_private_file(self.path)
        self.conn = connect(str(path))
        self.db = sqlite_utils.Database(self.conn)
        self._lock = threading.RLock()
        self._depth = 0
        self._writing_thread: int | None = None  # the thread inside a transaction (its reads: self.conn)
        self._local = threading.local()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._closed = False
        self._migrate()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, newer than this twin ({SCHEMA_VERSION}): "
                "upgrade twin (git pull && pip install -e .)"
            )
        for target in range(version, SCHEMA_VERSION):
            with self.transaction():
                # Read again under the write lock: another process opening the same new file (the bot, a
                # cron `twin collect`) may have run this step already while we waited for the lock.
                if self.conn.execute("PRAGMA user_version").fetchone()[0] > target:
                    continue
                MIGRATIONS[target](self.db)
                self.conn.execute(f"PRAGMA user_version = {target + 1}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested calls join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self._begin_immediate()
            self._depth, self._writing_thread = 1, threading.get_ident()
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth, self._writing_thread = 0, None

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE (take the write lock), retried every fraction of a millisecond while another
        process holds it, up to BUSY_TIMEOUT_MS."""
        deadline, pause = time.monotonic() + BUSY_TIMEOUT_MS / 1000, LOCK_RETRY_S
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 1.5, LOCK_RETRY_MAX_S)
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes (it keeps old page images,
        deleted text included, until then). False when a reader held it back (waited for up to the busy
        timeout): the WAL is then left as it was, to be emptied by a later checkpoint."""
        with self._lock:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Rows of one read: on this thread's read connection, or inside its transaction on the writer's."""
        if self._one_connection or self._writing_thread == threading.get_ident():
            with self._lock:
                return self.conn.execute(sql, params).fetchall()
        return self._reader().execute(sql, params).fetchall()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, opened on its first read."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            reader = self._local.reader = _Reader(connect(str(self.path), reader=True))
            self._readers.add(reader)
        return reader.conn

    def close(self) -> None:
        """Close the write connection and every thread's read connection."""
        self._closed = True
        self.conn.close()
        for reader in list(self._readers):
            reader.conn.close()
