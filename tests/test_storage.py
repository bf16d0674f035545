import os
import stat

import pytest

from core.errors import UserError
from storage import SCHEMA_VERSION, Storage, UnknownPersona
from storage import db as dbmod


def _msg(dialog_id, mid, sender, date, text="hi", **kw):
    return {"dialog_id": dialog_id, "id": mid, "sender_id": sender, "date": date, "text": text, "source": "test", **kw}


def test_database_file_is_private_and_in_wal_mode(tmp_path):
    store = Storage(tmp_path / "data" / "twin.db")
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "twin.db").st_mode) == 0o600
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.query("PRAGMA busy_timeout")[0][0] >= 1000
    store.insert_messages([_msg(1, 1, 1, 0)])
    wal = tmp_path / "data" / "twin.db-wal"
    assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600


def test_schema_is_migrated_forward_once_and_reopens(tmp_path):
    Storage(tmp_path / "t.db").close()
    store = Storage(tmp_path / "t.db")
    assert store.schema_version == SCHEMA_VERSION
    assert {"people", "dialogs", "messages", "sessions", "meta"} <= set(store.db.table_names())


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path, monkeypatch):
    store = Storage(tmp_path / "t.db")
    store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(dbmod.SchemaTooNew, match="upgrade twin"):
        Storage(tmp_path / "t.db")


def test_failed_transaction_writes_nothing(tmp_path):
    store = Storage(tmp_path / "t.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert_messages([_msg(1, 1, 1, 0)])
            store.set_meta("x", 1)
            raise RuntimeError("boom")
    assert store.counts()["messages"] == 0
    assert store.get_meta("x") is None


def test_insert_is_idempotent_and_replace_updates_edits(tmp_path):
    store = Storage(tmp_path / "t.db")
    assert store.insert_messages([_msg(1, 1, 1, 0, "a"), _msg(1, 2, 1, 5, "b")]) == 2
    assert store.insert_messages([_msg(1, 1, 1, 0, "a"), _msg(1, 2, 1, 5, "b")]) == 0
    store.insert_messages([_msg(1, 2, 1, 5, "b edited", edited=9)], replace=True)
    assert [m["text"] for m in store.messages(1)] == ["a", "b edited"]
    assert store.counts()["messages"] == 2


def test_people_get_unique_slugs_that_survive_name_changes(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.upsert_people(
        [
            {"id": 1, "first_name": "Саша"},
            {"id": 2, "first_name": "Sasha"},
            {"id": 3, "first_name": "Alice", "username": "alice_w"},
            {"id": 4, "first_name": "李"},
        ]
    )
    slugs = {p["id"]: p["slug"] for p in store.people()}
    assert slugs[1] == "sasha" and slugs[2] == "sasha2" and slugs[3] == "alice_w"
    assert slugs[4] == "user4"
    store.upsert_people([{"id": 2, "first_name": "Alexander", "username": "alex"}])
    assert store.person(2)["slug"] == "sasha2"
    assert store.person(2)["first_name"] == "Alexander"


def test_rename_persona_validates_and_refuses_taken_names(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.upsert_people([{"id": 1, "first_name": "Bob"}, {"id": 2, "first_name": "Eve"}])
    store.rename_persona("bob", "friend2")
    assert store.person("friend2")["id"] == 1
    with pytest.raises(UserError, match="already exists"):
        store.rename_persona("eve", "friend2")
    with pytest.raises(UserError, match="not a valid persona name"):
        store.rename_persona("eve", "Not Valid")
    with pytest.raises(UnknownPersona, match="twin personas"):
        store.rename_persona("nobody", "x")


def test_watermark_only_moves_up(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.upsert_dialog({"id": 7, "type": "personal_chat", "name": "Bob", "person_id": 7})
    store.advance_watermark(7, 50)
    store.advance_watermark(7, 10)
    assert store.dialog(7)["watermark"] == 50


def test_sessions_are_rebuilt_and_excluded_dialogs_hidden(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.upsert_dialog({"id": 7, "type": "personal_chat", "name": "Bob", "person_id": 7})
    store.insert_messages([_msg(7, 1, 7, 0), _msg(7, 2, 1, 60), _msg(7, 3, 7, 10_000)])
    assert store.rebuild_sessions(7, gap_seconds=3600, now=10_100) == 2
    assert [s["closed"] for s in store.sessions()] == [1, 0]
    assert [m["id"] for m in store.session_messages(store.sessions()[0])] == [1, 2]
    store.set_excluded(7, True)
    assert store.sessions() == []


def test_the_owner_is_the_setting_else_the_id_an_import_recorded_in_every_part(tmp_path):
    from typer.testing import CliRunner

    from core.settings import Settings
    from engine.chat import chat_roles
    from trainer.dataset import owner_id_of
    from twin.cli import app

    settings = Settings(_env_file=None, data_dir=tmp_path)
    store = Storage(settings.db_path)
    assert store.owner_id(None) is None and store.owner_slug(None) is None
    store.upsert_people([{"id": 5, "first_name": "Olga", "username": "olga"}, {"id": 7, "first_name": "Kim"}])
    store.set_meta("owner_id", 5)  # what an import or a sync records
    assert (store.owner_id(None), store.owner_slug(None)) == (5, "olga")
    assert (store.owner_id(7), store.owner_slug(7)) == (7, "kim")  # TWIN_OWNER_ID wins
    assert store.owner_slug(9) is None  # an owner no chat names yet
    # The parts that name the owner all ask storage: the dataset's roles, `twin chat`, `twin personas`.
    assert owner_id_of(store, settings) == 5 and chat_roles(store, settings, None, None, None).persona == "olga"
    listing = CliRunner().invoke(app, ["personas"], env={"TWIN_DATA_DIR": str(tmp_path), "COLUMNS": "200"}).output
    assert [line for line in listing.splitlines() if "owner (default)" in line][0].split()[1] == "olga"
