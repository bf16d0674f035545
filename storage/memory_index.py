"""The memory index exists only while memory is on: with memory off an import or a sync pays nothing for it.

* Memory off (TWIN_MEMORY_SCOPE=off, the default): no index, no triggers. Turning memory off drops the index
  (the most private: no second structure holds the messages' words, and /forget has nothing more to purge).
* Memory on: the first process that opens the storage with memory on (`open_storage`: the bot, `twin chat`,
  `twin train`, `twin import`, `twin collect`) builds the index once, in bulk, in one transaction (progress
  on stderr for a big database), and installs the triggers that keep it in step from then on.
* An import with memory on writes each batch with the insert trigger suspended and indexes the batch's rows
  in bulk before the same transaction commits, so a failed import's undo takes them out like any delete.

Schema and statements: storage.memory_schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.console import Console

from core.memory import memory_on
from core.progress import ProgressDisplay

from .db import Database
from .memory_schema import (
    ADD_SLOTS_FROM,
    INDEX_ROWIDS,
    MEMORY_AUTOMERGE,
    MEMORY_INDEX_OFF,
    MEMORY_INSERT_TRIGGER,
    MEMORY_SOURCE,
    MEMORY_TABLE,
    MEMORY_TRIGGERS,
)

if TYPE_CHECKING:
    from core.settings import Settings

# Message rowids indexed per step of a build: each step reports progress (a step is ~0.3 s).
BUILD_STEP = 50_000
# A build over fewer messages than this (well under a few seconds) shows no progress.
PROGRESS_FROM = 200_000

BUILDING = "building the memory index (TWIN_MEMORY_SCOPE is on; once)"

Progress = Callable[[int, int], None]  # (messages read, of how many)


class MemoryIndexStore(Database):
    """The memory index's upkeep (mixed into Storage): built when memory is turned on, dropped when off."""

    def memory_index_on(self) -> bool:
        """The index and all its triggers are there (a half-made index counts as off and is built again)."""
        names = self._memory_names()
        return {"memory", "memory_source", *MEMORY_TRIGGERS} <= names and "memory_content" not in names

    def _memory_names(self) -> set[str]:
        return {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE name LIKE 'memory%'")}

    def turn_memory_index(self, on: bool, progress: Progress | None = None) -> bool:
        """Build the index (and its triggers) or drop it, unless it already is as asked; True when it changed.
        A build indexes every remembered message in one transaction, BUILD_STEP rowids a step."""
        if self.memory_index_on() == on and (on or not self._any_index_left()):
            return False
        with self.transaction() as c:
            for statement in MEMORY_INDEX_OFF:
                c.execute(statement)
            if not on:
                return True
            c.execute(MEMORY_SOURCE)
            c.execute(MEMORY_TABLE)
            c.execute(MEMORY_AUTOMERGE)
            end = c.execute("SELECT coalesce(max(rowid), 0) + 1 FROM messages").fetchone()[0]
            c.execute(ADD_SLOTS_FROM, (0,))
            for start in range(0, end, BUILD_STEP):
                c.execute(INDEX_ROWIDS, (start, min(start + BUILD_STEP, end)))
                if progress is not None:
                    progress(min(start + BUILD_STEP, end) - 1, end - 1)
            for trigger in MEMORY_TRIGGERS.values():
                c.execute(trigger)
        return True

    def _any_index_left(self) -> bool:
        """Any part of an index (a table, a trigger, a slot) that memory off does not keep."""
        left = self._memory_names() - {"memory_dialogs"}
        return bool(left) or bool(self.query("SELECT 1 FROM memory_dialogs LIMIT 1"))

    @contextlib.contextmanager
    def indexed_in_bulk(self) -> Iterator[None]:
        """One write transaction whose new messages are indexed in one statement at its end rather than one
        trigger call each (with memory off: just the transaction). For inserts that replace nothing."""
        with self.transaction() as c:
            if not self.memory_index_on():
                yield
                return
            start = c.execute("SELECT coalesce(max(rowid), 0) + 1 FROM messages").fetchone()[0]
            c.execute(f"DROP TRIGGER {MEMORY_INSERT_TRIGGER}")
            yield
            c.execute(ADD_SLOTS_FROM, (start,))
            c.execute(INDEX_ROWIDS, (start, 2**63 - 1))
            c.execute(MEMORY_TRIGGERS[MEMORY_INSERT_TRIGGER])

    def optimize_memory_index(self) -> None:
        """Merge the index into one b-tree, so words taken out (a /forget) leave no trace in older segments;
        nothing to do with memory off."""
        if self.memory_index_on():
            with self.transaction() as c:
                c.execute("INSERT INTO memory (memory) VALUES ('optimize')")


def keep_memory_index(store: MemoryIndexStore, settings: Settings) -> None:
    """Build the memory index or drop it as the settings ask (open_storage calls this); a big build shows
    its progress on stderr."""
    if not memory_on(settings):
        store.turn_memory_index(False)
    elif store.memory_index_on():
        return
    elif store.query("SELECT coalesce(max(rowid), 0) FROM messages")[0][0] < PROGRESS_FROM:
        store.turn_memory_index(True)
    else:
        with ProgressDisplay(Console(stderr=True)) as display:
            store.turn_memory_index(True, lambda done, of: display.update("memory", BUILDING, done, of))
