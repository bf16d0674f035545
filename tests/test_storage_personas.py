"""Persona counts without reading the history: `personas()` gives the counts the old whole-history query gave,
through imports, edits, deletions, /forget and dropped dialogs, and `may_play` is one lookup of `people`
(real SQLite; a real export from tests/fixtures)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.personas import choices, may_play
from collector.telegram_export import import_export
from storage import Storage
from storage import db as dbmod
from tests.old_schema import as_of

FULL = Path(__file__).resolve().parent / "fixtures" / "full_account_export.json"
OWNER, ALICE, WEI, FAMILY = 1000, 2001, 2002, 3001  # Alice also writes in the family group
HOUR = 3600
# What personas() read before the counts: every message of each person, against every session of the dialog.
HISTORY_QUERY = (
    "SELECT p.id, p.slug, p.name, p.username, p.published,"
    " (SELECT count(*) FROM messages m WHERE m.sender_id = p.id) AS messages,"
    " (SELECT count(DISTINCT s.id) FROM sessions s JOIN messages m ON m.dialog_id = s.dialog_id"
    "   AND m.id BETWEEN s.first_message_id AND s.last_message_id"
    "   WHERE m.sender_id = p.id) AS sessions"
    " FROM people p ORDER BY messages DESC, p.slug"
)


def counted_from_history(store: Storage) -> list[dict]:
    return [dict(r) for r in store.query(HISTORY_QUERY)]


def msg(dialog_id: int, mid: int, sender: int | None, date: int, text: str | None, **kw) -> dict:
    return {
        "dialog_id": dialog_id,
        "id": mid,
        "sender_id": sender,
        "date": date,
        "text": text,
        "source": "telethon",
        **kw,
    }


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(tmp_path / "data" / "twin.db")
    yield s
    s.close()


@pytest.fixture
def imported(store) -> Storage:
    import_export(store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=HOUR, progress=False)
    return store


class Recorder:
    """Every statement run and every table read on connections opened while it is installed."""

    def __init__(self) -> None:
        self.on, self.statements, self.tables = False, [], set()

    def connect(self, real):
        def connect(*args, **kwargs):
            conn = real(*args, **kwargs)
            conn.set_trace_callback(lambda sql: self.on and self.statements.append(sql))
            conn.set_authorizer(self.authorize)
            return conn

        return connect

    def authorize(self, action, table, column, database, source):
        if self.on and action == sqlite3.SQLITE_READ:
            self.tables.add(table)
        return sqlite3.SQLITE_OK


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(sqlite3, "connect", rec.connect(sqlite3.connect))
    return rec


def test_personas_counts_match_the_history_through_imports_edits_deletions_and_forgetting(imported):
    store = imported
    assert store.personas() == counted_from_history(store)
    assert {p["id"]: p["messages"] for p in store.personas()}[ALICE] > 0
    # A sync: new messages (a photo without text, a forward, a service message with no sender), then sessions.
    store.insert_messages(
        [
            msg(ALICE, 900, ALICE, 1_800_000_000, "Привет, это новое"),
            msg(ALICE, 901, OWNER, 1_800_000_060, None, media_type="photo"),
            msg(ALICE, 902, ALICE, 1_800_000_120, "переслано", forwarded=1, forwarded_from="新闻"),
            msg(ALICE, 903, None, 1_800_000_180, None),
            msg(WEI, 900, WEI, 1_800_000_000, "你好"),
        ]
    )
    store.rebuild_sessions(ALICE, HOUR)
    store.rebuild_sessions(WEI, HOUR)
    assert store.personas() == counted_from_history(store)
    # A re-read after edits (INSERT OR REPLACE): counts hold even before the sessions are rebuilt, with an id
    # read twice in one batch with two senders (the later copy wins) and a photo that gained a caption.
    store.insert_messages(
        [
            msg(ALICE, 900, ALICE, 1_800_000_000, "Привет, исправлено", edited=1_800_000_100),
            msg(ALICE, 904, OWNER, 1_800_000_200, "первый"),
            msg(ALICE, 904, ALICE, 1_800_000_200, "второй"),
            msg(ALICE, 901, OWNER, 1_800_000_060, "подпись", media_type="photo"),
        ],
        True,
    )
    assert store.personas() == counted_from_history(store)
    assert store.query("SELECT sender_id FROM messages WHERE dialog_id = ? AND id = 904", (ALICE,))[0][0] == ALICE
    # An import of rows stored already adds and counts nothing; its new rows are counted.
    stored = (ALICE, 900, ALICE, 1_800_000_000, "x", 0, None, 0, None, None, None, 0, "export")
    new = (WEI, 905, OWNER, 1_800_000_300, "好", 1, None, 0, None, None, None, 0, "export")
    assert store.insert_many_messages([stored, new]) == 1
    assert store.personas() == counted_from_history(store)
    # Deleted on Telegram: Wei's only message of a session goes, then the sessions are rebuilt.
    store.delete_messages(WEI, [900])
    store.delete_messages(ALICE, [902])
    store.rebuild_sessions(WEI, HOUR)
    store.rebuild_sessions(ALICE, HOUR)
    assert store.personas() == counted_from_history(store)
    # /forget: Alice's dialog goes whole, her words in the family group go and its sessions are rebuilt.
    store.forget_person(ALICE, HOUR)
    assert store.personas() == counted_from_history(store)
    assert not store.query("SELECT 1 FROM dialog_senders WHERE dialog_id = ? OR sender_id = ?", (ALICE, ALICE))
    # A failed import takes a dialog back whole.
    store.delete_dialog(WEI)
    assert store.personas() == counted_from_history(store)
    assert not store.query("SELECT 1 FROM dialog_senders WHERE dialog_id = ?", (WEI,))


def test_the_migration_counts_a_database_made_before_the_counts(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    as_of(monkeypatch, 6)
    old = Storage(path)
    import_export(old, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=HOUR, progress=False)
    before = counted_from_history(old)
    old.close()
    monkeypatch.undo()
    store = Storage(path)
    assert store.schema_version == dbmod.SCHEMA_VERSION
    assert store.personas() == before and any(p["sessions"] for p in before)
    store.insert_messages([msg(FAMILY, 900, WEI, 1_800_000_000, "大家好")])  # the inserts count from now on
    store.rebuild_sessions(FAMILY, HOUR)
    assert store.personas() == counted_from_history(store)


def test_personas_reads_the_counts_not_every_message(recorder, tmp_path):
    store = Storage(tmp_path / "twin.db")
    import_export(store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=HOUR, progress=False)
    recorder.on = True
    listed = store.personas()
    recorder.on = False
    assert listed and recorder.tables.isdisjoint({"messages", "sessions"}), recorder.tables


def test_may_play_is_one_lookup_of_people(recorder, tmp_path):
    store = Storage(tmp_path / "twin.db")
    import_export(store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=HOUR, progress=False)
    alice = store.person(ALICE)["slug"]
    store.set_published(alice, True)
    recorder.on = True
    assert may_play(store, alice, WEI, OWNER)
    recorder.on = False
    assert len(recorder.statements) == 1 and recorder.tables == {"people"}, (recorder.statements, recorder.tables)


def test_may_play_allows_exactly_the_choices(imported):
    store = imported
    wei, alice = store.person(WEI)["slug"], store.person(ALICE)["slug"]
    store.set_published(alice, True)
    slugs = [p["slug"] for p in store.people()] + ["nobody", "user1000"]
    for user in (OWNER, WEI, 77):
        allowed = {p["slug"] for p in choices(store, user, OWNER)}
        assert {s for s in slugs if may_play(store, s, user, OWNER)} == allowed
    assert may_play(store, wei, OWNER, OWNER) and not may_play(store, wei, 77, OWNER)
    # An owner storage does not know yet plays under the name made from their id, as `choices` lists it.
    assert may_play(store, "user4242", 77, 4242) and not may_play(store, "user4242", 77, OWNER)
