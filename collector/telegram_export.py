"""`twin import`: a Telegram Desktop export (result.json) into storage.

Three steps kept apart: read (export_read: bytes → orjson, headers checked), convert (export_rows: pure
functions from export dicts to people, a dialog and MESSAGE_COLUMNS tuples), save (here). Every chat is
converted before anything is written, so a bad file writes nothing; then the rows go in short transactions,
so the bot and a sync keep using the database while a big export imports, and an import that fails while
writing takes back what it wrote. With memory on, each transaction indexes its messages in bulk at its end
(storage.memory_index); with memory off there is no index to pay for.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import UserError
from core.sessions import session_rows
from storage import Storage

from .export_read import Chat, ExportError, export_chats, find_result_json, read_export, resolve_owner
from .export_rows import (
    GROUPS,
    SENT_BY_OWNER,
    ChatRows,
    chat_to_rows,
    owner_row,
    person_row,
    session_messages,
    synthetic_id,
    wanted,
)

__all__ = ["ExportError", "ImportSummary", "import_export", "synthetic_id"]


@dataclass
class ImportSummary:
    path: Path
    owner_id: int
    owner_source: str
    chats_imported: Counter[str] = field(default_factory=Counter)  # by chat type
    chats_skipped: Counter[str] = field(default_factory=Counter)  # by chat type
    messages_added: int = 0
    messages_known: int = 0  # stored by an earlier import or sync
    owner_messages: int = 0  # of the imported ones, sent by the owner
    skipped: Counter[str] = field(default_factory=Counter)  # messages, by reason

    def describe(self) -> str:
        skipped_chats = _counts(self.chats_skipped)
        if any(kind in GROUPS for kind in self.chats_skipped):
            skipped_chats += "; --include-groups imports private groups"
        lines = [
            f"imported {self.path} as owner {self.owner_id} (from {self.owner_source})",
            f"chats: {sum(self.chats_imported.values())} imported ({_counts(self.chats_imported)}), "
            f"{sum(self.chats_skipped.values())} skipped ({skipped_chats})",
            f"messages: {self.messages_added:,} added, {self.messages_known:,} already stored, "
            f"{self.owner_messages:,} of them yours",
            f"messages skipped: {sum(self.skipped.values()):,} ({_counts(self.skipped)})",
        ]
        if self.messages_added + self.messages_known and not self.owner_messages:
            lines.append(f"warning: user {self.owner_id} sent none of these messages: is the owner id right?")
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n:,} {what}" for what, n in counter.most_common()) or "none"


# -- save -----------------------------------------------------------------------------------------
# Messages per write transaction: a few milliseconds each, so the bot and a sync get the database between
# them (one transaction for the whole file kept every chat of the bot waiting until the import ended).
BATCH_ROWS = 2_000
# After each transaction the write lock stays free this long: longer than a waiting writer's retry interval
# (storage.db.LOCK_RETRY_MAX_S), so whoever waits gets in at the next gap. 1,000,000 messages: +1 s.
YIELD_S = 0.002


class Pacer:
    """Leaves the write lock free for YIELD_S after every BATCH_ROWS messages written (however many chats
    they came in: many small chats are written back to back otherwise)."""

    def __init__(self) -> None:
        self.rows = 0

    def wrote(self, n: int) -> None:
        self.rows += n
        if self.rows >= BATCH_ROWS:
            time.sleep(YIELD_S)
            self.rows = 0


@dataclass
class Written:
    """What an import wrote into one dialog, to take it back if the import fails later."""

    dialog_id: int
    new_dialog: bool
    new_ids: list[int]  # message ids this import itself added (not a concurrent sync's)
    watermark: int  # the dialog's sync watermark before the import


def save_chat(
    store: Storage, chat: ChatRows, gap_seconds: float, now: float, written: list[Written], pacer: Pacer
) -> int:
    """Write one converted chat (BATCH_ROWS messages per transaction) and its sessions; returns how many
    messages were new. What it adds goes into `written` as each batch commits.

    Which ids a batch added is read in the batch's own write transaction: a sync writing the same dialog
    meanwhile (the bot's, or `twin collect`) can never make its rows look like the import's."""
    dialog_id = chat.dialog["id"]
    fresh = not store.has_messages(dialog_id)
    with store.transaction():
        before = store.dialog(dialog_id)
        store.upsert_dialog(chat.dialog)
    mine = Written(dialog_id, before is None, [], (before or {}).get("watermark") or 0)
    written.append(mine)
    added = 0
    for start in range(0, len(chat.rows), BATCH_ROWS):
        batch = chat.rows[start : start + BATCH_ROWS]
        ids = [row[1] for row in batch]
        with store.indexed_in_bulk():  # one transaction; memory on: the batch's words indexed in one go
            known = store.stored_ids(dialog_id, ids)
            added += store.insert_many_messages(batch)
        mine.new_ids += [i for i in ids if i not in known]
        pacer.wrote(len(batch))
    if fresh:  # the rows in hand are all the dialog has: no need to read them back
        sessions = session_rows(dialog_id, session_messages(chat.rows), gap_seconds, now)
        store.replace_sessions(dialog_id, sessions)
    else:
        store.rebuild_sessions(dialog_id, gap_seconds, now)
    if chat.watermark is not None:
        store.advance_watermark(dialog_id, chat.watermark)
    return added


def take_back(store: Storage, written: list[Written], gap_seconds: float) -> None:
    """Undo a failed import: the messages it added go, and the dialogs it added unless a sync stored messages
    in them meanwhile; touched dialogs get their sessions back, and their watermark no higher than before
    (a sync that ran meanwhile may have skipped ids the import held: the next one fetches them again)."""
    with store.transaction():
        for w in reversed(written):
            store.delete_messages(w.dialog_id, w.new_ids)
            if w.new_dialog and not store.has_messages(w.dialog_id):
                store.delete_dialog(w.dialog_id)
            else:
                store.lower_watermark(w.dialog_id, w.watermark)
                store.rebuild_sessions(w.dialog_id, gap_seconds)


def without_forgotten(chat: ChatRows, is_forgotten: Callable[[int], bool], summary: ImportSummary) -> ChatRows | None:
    """The chat without the people the owner made the twin forget (/forget): their dialog is skipped whole,
    their messages in a group are left out. None: skip the chat."""
    forgotten = {pid for pid in set(chat.people) | {chat.dialog["person_id"]} - {None} if is_forgotten(pid)}
    if not forgotten:
        return chat
    if chat.dialog["person_id"] in forgotten:
        summary.chats_skipped["forgotten"] += 1
        return None
    rows = [r for r in chat.rows if r[2] not in forgotten]
    summary.skipped["forgotten person"] += len(chat.rows) - len(rows)
    return replace(chat, rows=rows, people={k: v for k, v in chat.people.items() if k not in forgotten})


def check_same_owner(store: Storage, owner_id: int) -> None:
    stored = store.get_meta("owner_id")
    if stored is not None and int(stored) != owner_id:
        raise UserError(
            f"this database holds the chats of user {stored}, the export is of user {owner_id}: "
            "use another TWIN_DATA_DIR for another account, or pass the right --owner-id"
        )


@contextmanager
def progress_bar(enabled: bool, total: int) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not enabled) as bar:
        bar.add_task("importing messages", total=total)
        yield bar


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of parsed dicts and row tuples are made: they hold no cycles, and the
    collector would rescan them over and over (it about doubles the parse time of a big export)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def convert_chats(
    store: Storage,
    chats: list[Chat],
    summary: ImportSummary,
    *,
    include_groups: bool,
    keep_stickers: bool,
) -> list[tuple[ChatRows, int]]:
    """Every wanted chat as rows (and how many messages it had), counting into `summary`; nothing is written,
    so a bad message anywhere refuses the file with the database untouched."""
    is_forgotten = store.forgotten()  # people the owner made the twin forget (/forget)
    converted_chats = []
    for chat in chats:
        if not wanted(chat.type, include_groups):
            summary.chats_skipped[chat.type or "unknown"] += 1
            continue
        converted = chat_to_rows(chat, summary.owner_id, keep_stickers)
        kind = converted.dialog["type"]
        if not wanted(kind, include_groups):  # a chat without a type that turned out to be a group
            summary.chats_skipped[kind] += 1
            continue
        n_messages = len(chat.messages)
        chat.messages.clear()  # free the parsed chat now: its rows take its place
        if (converted := without_forgotten(converted, is_forgotten, summary)) is not None:
            converted_chats.append((converted, n_messages))
    return converted_chats


def save_chats(
    store: Storage,
    chats: list[tuple[ChatRows, int]],
    summary: ImportSummary,
    gap_seconds: float,
    progress: bool,
    written: list[Written],
) -> None:
    """Write the converted chats, counting into `summary`."""
    now, pacer = time.time(), Pacer()
    with progress_bar(progress, sum(n for _, n in chats)) as bar:
        for converted, n_messages in chats:
            bar.update(0, description=escape(f"importing {converted.dialog.get('name') or 'a chat'}"))
            added = save_chat(store, converted, gap_seconds, now, written, pacer)
            bar.advance(0, n_messages)
            summary.chats_imported[converted.dialog["type"]] += 1
            summary.messages_added += added
            summary.messages_known += len(converted.rows) - added
            summary.owner_messages += sum(map(SENT_BY_OWNER, converted.rows))
            summary.skipped.update(converted.skipped)


def import_export(
    store: Storage,
    path: Path,
    *,
    owner_id: int | None,
    include_groups: bool,
    keep_stickers: bool,
    gap_seconds: float,
    progress: bool = True,
) -> ImportSummary:
    """Import a Telegram Desktop export (result.json or its folder): all of it or nothing (a bad file writes
    nothing; a failure while writing takes back what was written), and importing the same file again adds
    nothing. Written in short transactions, so the bot keeps answering meanwhile."""
    path = find_result_json(path)
    with gc_paused():
        data = read_export(path)
        owner, owner_source = resolve_owner(data, owner_id, path)
        chats = export_chats(data, path)
        check_same_owner(store, owner)
        summary = ImportSummary(path, owner, owner_source)
        converted = convert_chats(store, chats, summary, include_groups=include_groups, keep_stickers=keep_stickers)
        people: dict[int, dict[str, Any]] = {}  # everyone who wrote in the imported chats
        for chat, _ in converted:
            for pid, name in chat.people.items():
                people.setdefault(pid, person_row(pid, name))
        if owner_info := owner_row(data, owner):
            people[owner] = owner_info
    written: list[Written] = []
    try:
        save_chats(store, converted, summary, gap_seconds, progress, written)
        with store.transaction():  # last, in one go: a failed import leaves people and meta as they were
            store.upsert_people(people.values())
            store.set_meta("owner_id", owner)
            store.set_meta("last_import_at", int(time.time()))
    except BaseException:
        take_back(store, written, gap_seconds)
        raise
    return summary
