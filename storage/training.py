"""Storage of training rounds, adapters, trained sessions and process locks (mixed into Storage)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from core.errors import UserError
from core.process import pid_alive

from .db import Database


class LockHeld(UserError):
    pass


class TrainingStore(Database):
    # -- locks that survive a crash: stale when the holder's process is gone --------------------------
    def acquire_lock(self, name: str, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        host = socket.gethostname()
        with self.transaction() as c:
            row = c.execute("SELECT pid, host, acquired_at FROM locks WHERE name = ?", (name,)).fetchone()
            if row and row["pid"] != pid and (row["host"] != host or pid_alive(row["pid"])):
                since = time.strftime("%H:%M", time.localtime(row["acquired_at"]))
                raise LockHeld(f"{name} is already running (pid {row['pid']} on {row['host']}, since {since})")
            c.execute(
                "INSERT OR REPLACE INTO locks (name, pid, host, acquired_at) VALUES (?, ?, ?, ?)",
                (name, pid, host, int(time.time())),
            )

    def release_lock(self, name: str, pid: int | None = None) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM locks WHERE name = ? AND pid = ?", (name, pid or os.getpid()))

    @contextlib.contextmanager
    def holding_lock(self, name: str) -> Iterator[None]:
        """The lock `name` for the duration of a block (LockHeld if another live process has it)."""
        self.acquire_lock(name)
        try:
            yield
        finally:
            self.release_lock(name)

    def lock_holder(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM locks WHERE name = ?", (name,))
        if not rows or (rows[0]["host"] == socket.gethostname() and not pid_alive(rows[0]["pid"])):
            return None
        return dict(rows[0])

    # -- training runs --------------------------------------------------------------------------------
    def start_run(self, full: bool, pid: int | None = None) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO training_runs (started_at, status, pid, full) VALUES (?, 'running', ?, ?)",
                (int(time.time()), pid or os.getpid(), int(full)),
            )
            assert cur.lastrowid is not None  # an INSERT into a rowid table always sets it
            return cur.lastrowid

    def finish_run(self, run_id: int, status: str, error: str | None = None, **figures: Any) -> None:
        """Close a run as succeeded or failed; figures may set adapter_version, n_sessions, n_tokens."""
        allowed = {"adapter_version", "n_sessions", "n_tokens"}
        sets = "".join(f", {k} = :{k}" for k in figures if k in allowed)
        with self.transaction() as c:
            c.execute(
                f"UPDATE training_runs SET status = :status, error = :error, finished_at = :now{sets} WHERE id = :id",
                {"status": status, "error": error, "now": int(time.time()), "id": run_id, **figures},
            )

    def fail_dead_runs(self) -> int:
        """Mark runs whose process died (killed, OOM) as failed; returns how many."""
        dead = [
            r["id"]
            for r in self.query("SELECT id, pid FROM training_runs WHERE status = 'running'")
            if not pid_alive(r["pid"])
        ]
        for run_id in dead:
            self.finish_run(run_id, "failed", "the training process died (killed or out of memory)")
        return len(dead)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM training_runs ORDER BY id DESC LIMIT ?", (limit,))]

    # -- adapters -------------------------------------------------------------------------------------
    def next_adapter_version(self) -> int:
        return (self.query("SELECT max(version) FROM adapters")[0][0] or 0) + 1

    def add_adapter(self, row: dict[str, Any], session_ids: Iterable[tuple[str, str]]) -> None:
        """Record a new adapter (status candidate unless given) and the (session id, content hash) pairs
        it was trained on, in one transaction."""
        row = {"status": "candidate", "created_at": int(time.time()), **row}
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self.transaction() as c:
            c.execute(f"INSERT INTO adapters ({cols}) VALUES ({marks})", row)
            c.executemany(
                "INSERT OR IGNORE INTO trained_sessions (adapter_version, session_id, content_hash) VALUES (?, ?, ?)",
                ((row["version"], sid, h) for sid, h in session_ids),
            )

    def adapter(self, version: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM adapters WHERE version = ?", (version,))
        return dict(rows[0]) if rows else None

    def adapters(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM adapters ORDER BY version")]

    def active_adapter(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM adapters WHERE status = 'active' ORDER BY version DESC LIMIT 1")
        return dict(rows[0]) if rows else None

    def activate_adapter(self, version: int, reason: str | None = None) -> None:
        """Make `version` the one active adapter; the previous active one becomes retired."""
        with self.transaction() as c:
            if not c.execute("SELECT 1 FROM adapters WHERE version = ? AND status != 'deleted'", (version,)).fetchone():
                raise UserError(f"no adapter {version}: `twin adapters` lists them")
            c.execute("UPDATE adapters SET status = 'retired' WHERE status = 'active'")
            c.execute("UPDATE adapters SET status = 'active', reason = ? WHERE version = ?", (reason, version))

    def set_adapter_status(self, version: int, status: str, reason: str | None = None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE adapters SET status = ?, reason = ? WHERE version = ?", (status, reason, version))

    def trained_session_ids(self, versions: Iterable[int] | None = None) -> set[str]:
        if versions is None:
            return {r[0] for r in self.query("SELECT DISTINCT session_id FROM trained_sessions")}
        versions = list(versions)
        marks = ", ".join("?" for _ in versions)
        rows = self.query(
            f"SELECT DISTINCT session_id FROM trained_sessions WHERE adapter_version IN ({marks})",
            tuple(versions),
        )
        return {r[0] for r in rows}

    def trained_content_hashes(self, version: int) -> set[str]:
        rows = self.query("SELECT content_hash FROM trained_sessions WHERE adapter_version = ?", (version,))
        return {r[0] for r in rows}
