"""Forgetting a person: no row of theirs in any table, no adapter trained on them kept or served, and no sync
or import brings them back (real SQLite, a real export from tests/fixtures, real Telethon TL objects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collector.telegram_export import import_export
from collector.telethon_sync import sync
from core.errors import UserError
from core.format import ChatFormat
from core.settings import Settings
from engine.base import AdapterRef
from storage import LockHeld, Storage
from tests.fake_telegram import FakeAccount, FakeTelegramClient
from tests.old_schema import as_of
from tests.test_engine import TURNS, ScriptedEngine, adapter_dir, said
from trainer.forgetting import forget_person
from trainer.registry import LOCK, rollback
from twin.cli import app

FULL = Path(__file__).resolve().parent / "fixtures" / "full_account_export.json"
OWNER, ALICE, WEI, FAMILY = 1000, 2001, 2002, 3001  # Alice also writes in the family group
HOUR = 3600.0


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(_env_file=None, data_dir=tmp_path / "data", owner_id=OWNER, session_gap_minutes=60)
    s.ensure_data_dir()
    return s


@pytest.fixture
def store(settings) -> Storage:
    s = Storage(settings.db_path)
    yield s
    s.close()


def import_full(store: Storage):
    return import_export(
        store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=HOUR, progress=False
    )


def sessions_of(store: Storage, dialog_id: int) -> list[dict]:
    return [s for s in store.sessions() if s["dialog_id"] == dialog_id]


def make_adapter(
    settings: Settings,
    store: Storage,
    version: int,
    status: str,
    sessions: list[dict],
    parent: int | None = None,
    personas: tuple[str, ...] = (),
) -> Path:
    """An adapter as a round leaves it: its folder with meta.json (per-persona figures), its row, what it saw."""
    folder = settings.adapters_dir / f"{version:04d}"
    folder.mkdir(parents=True)
    figures = {"loss": 2.0, "per_persona": {p: 2.0 for p in personas}}
    (folder / "meta.json").write_text(json.dumps({"version": version, "eval": {"new": figures}}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    store.add_adapter(
        {
            "version": version,
            "run_id": version,
            "parent_version": parent,
            "base_model": "tiny",
            "path": str(folder),
            "status": status,
            "eval_loss": 2.0,
            "eval_json": json.dumps({"eval": figures}),
        },
        [(s["id"], s["content_hash"]) for s in sessions],
    )
    return folder


def make_report(store: Storage, version: int, folder: Path) -> Path:
    report = folder / "report"
    report.mkdir()
    (report / "report.md").write_text("held-out examples")
    store.save_eval_report(version, "ok", str(report), {"eval_loss": 2.0})
    return report


def every_value(store: Storage):
    """(table, column, value) for every cell of every table."""
    tables = [r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in store.query(f'SELECT * FROM "{table}"'):
            for column in row.keys():
                yield table, column, row[column]


def traces(store: Storage, person_id: int, words: set[str]) -> list[tuple[str, str, object]]:
    """Cells that name the person: their id, a session id of their dialog, or any of `words` in a text."""
    found = []
    for table, column, value in every_value(store):
        text = str(value)
        if value == person_id or f"{person_id}-" in text or any(w in text for w in words):
            found.append((table, column, value))
    return found


@pytest.fixture
def alice(settings, store):
    """The full export imported (groups too), Alice on the bot's allowlist and in its chats, and adapters:
    1 (retired) saw only Wei, 2 (retired) saw Alice, 3 (active) continued from 2 on Wei's sessions alone,
    4 (rejected) continued from 1. Returns what names Alice."""
    import_full(store)
    store.upsert_people([{"id": ALICE, "username": "alisa_p"}])
    person = store.person(ALICE)
    others = [
        m["text"]
        for d in store.dialogs()
        if d["id"] != ALICE
        for m in store.messages(d["id"])
        if m["sender_id"] != ALICE
    ]
    hers = {
        m["text"]
        for d in store.dialogs()
        for m in store.messages(d["id"])
        if (d["id"] == ALICE or m["sender_id"] == ALICE) and m["text"] and len(m["text"]) >= 8
    }
    words = {person["slug"], person["name"], "alisa_p"} | {t for t in hers if not any(t in o for o in others)}
    store.allow(user_id=ALICE)
    store.allow(username="@Alisa_P")
    store.set_chat_persona(ALICE, "wei")
    store.set_chat_persona(777, person["slug"])
    store.add_bot_message(ALICE, ALICE, person["slug"], "hi twin", from_twin=False)
    store.add_bot_message(777, None, person["slug"], "playing her", from_twin=True)
    wei = sessions_of(store, WEI)
    slugs = (person["slug"], store.person(WEI)["slug"])
    folders = {
        1: make_adapter(settings, store, 1, "retired", wei, None, slugs),
        2: make_adapter(settings, store, 2, "retired", sessions_of(store, ALICE), 1, slugs),
        3: make_adapter(settings, store, 3, "active", wei, 2, slugs),
        4: make_adapter(settings, store, 4, "rejected", wei, 1, slugs),
    }
    reports = {v: make_report(store, v, folders[v]) for v in (1, 3)}
    held_out = any(s["split"] == "eval" for s in sessions_of(store, ALICE))
    return {"person": person, "words": words, "folders": folders, "reports": reports, "held_out": held_out}


def test_forget_leaves_no_row_of_them_and_no_adapter_trained_on_them(settings, store, alice):
    assert traces(store, ALICE, alice["words"])  # the scan finds her before
    group_before = len(store.messages(FAMILY))
    report = forget_person(store, settings, alice["person"]["slug"])

    assert traces(store, ALICE, alice["words"]) == []
    assert report.trained_on == [2, 3] and (report.was_active, report.now_active) == (3, 1)
    assert store.active_adapter()["version"] == 1
    assert [store.adapter(v)["status"] for v in (1, 2, 3, 4)] == ["active", "deleted", "deleted", "rejected"]
    assert not alice["folders"][2].exists() and not alice["folders"][3].exists()
    assert store.eval_report(3) is None and not alice["reports"][3].exists()
    # Reports quote held-out messages: a kept adapter's report goes too when she had held-out sessions.
    assert (store.eval_report(1) is None) == alice["held_out"] == (not alice["reports"][1].exists())
    kept_meta = json.loads((alice["folders"][1] / "meta.json").read_text())
    assert kept_meta["eval"]["new"]["per_persona"] == {store.person(WEI)["slug"]: 2.0}
    with pytest.raises(UserError, match="pruned"):
        rollback(store, 3)
    # Wei, the owner and the rest of the family group stay; the group's sessions are rebuilt without her.
    assert store.messages(WEI) and 0 < len(store.messages(FAMILY)) < group_before
    assert store.query("SELECT count(*) FROM forgotten")[0][0] == 1


def test_a_forgotten_person_is_not_imported_again(settings, store, alice):
    forget_person(store, settings, ALICE)
    summary = import_full(store)
    assert summary.chats_skipped["forgotten"] == 1 and summary.skipped["forgotten person"] > 0
    assert traces(store, ALICE, alice["words"]) == []
    assert store.messages(WEI)


async def test_a_forgotten_person_is_not_synced_again_until_included(settings, store):
    account = FakeAccount(me_id=OWNER)
    account.add_user(ALICE, "Alisa", username="alisa_p")
    account.add_user(WEI, "Wei")
    account.add_messages(ALICE, 6, prefix="alisa says")
    account.add_messages(WEI, 4)
    await sync(FakeTelegramClient(account), store, settings, progress=False)
    forget_person(store, settings, ALICE)
    account.add_messages(ALICE, 2, prefix="alisa again")

    client = FakeTelegramClient(account)
    summary = await sync(client, store, settings, progress=False)
    assert summary.excluded == 1 and client.history_requests == 0
    assert traces(store, ALICE, {"alisa"}) == []

    result = CliRunner().invoke(app, ["include", str(ALICE)], env={"TWIN_DATA_DIR": str(settings.data_dir)})
    assert result.exit_code == 0 and "no longer forgotten" in result.output
    await sync(FakeTelegramClient(account), store, settings, progress=False)
    assert len(store.messages(ALICE)) == 8


def test_forget_waits_for_no_round_and_changes_nothing_while_one_holds_the_lock(settings, store, alice):
    store.acquire_lock(LOCK, pid=1)  # init: alive, like a training subprocess
    with pytest.raises(LockHeld):
        forget_person(store, settings, ALICE)
    assert store.person(ALICE) and alice["folders"][2].exists()


def test_the_owner_cannot_be_forgotten(settings, store, alice):
    with pytest.raises(UserError, match="is you, the owner"):
        forget_person(store, settings, OWNER)
    assert store.person(OWNER) and store.messages(WEI)


def test_twin_forget_asks_first_and_deletes_with_yes(settings, store, alice):
    env = {"TWIN_DATA_DIR": str(settings.data_dir)}
    slug = alice["person"]["slug"]
    no = CliRunner().invoke(app, ["forget", slug], input="n\n", env=env)
    assert no.exit_code == 1 and "Forget " + slug in no.output and store.person(ALICE)
    yes = CliRunner().invoke(app, ["forget", slug, "--yes"], env=env)
    assert yes.exit_code == 0, yes.output
    assert "adapters 2, 3 deleted" in yes.output and "adapter 1 is active now" in yes.output
    assert traces(store, ALICE, alice["words"]) == []


async def test_a_dropped_adapter_is_never_served_again_not_even_as_a_fallback(tmp_path, tiny_tokenizer):
    fmt, turns = ChatFormat(tiny_tokenizer), TURNS
    one, two = (AdapterRef(v, adapter_dir(tmp_path, str(v)), 8) for v in (1, 2))
    base = said(fmt, "base talk")
    engine = ScriptedEngine(fmt, {0: [base], 1: [said(fmt, "tuned on her")], 2: [base]})
    assert await engine.reply(turns, "alice", "bob", one) == ["tuned on her"]
    await engine.drop([1])
    assert await engine.reply(turns, "alice", "bob", one) == ["base talk"]
    assert await engine.reply(turns, "alice", "bob", two) == ["base talk"]  # 2 fails its check: no fallback to 1
    assert engine.rejected[1] == "deleted"


def test_forgetting_someone_with_no_chat_of_their_own_rebuilds_the_groups_they_wrote_in(settings, store):
    group, kim, lee = -4001, 2101, 2102  # Kim writes only in the group: there is no one-to-one dialog with her
    store.upsert_people(
        [{"id": OWNER, "first_name": "Olga"}, {"id": kim, "first_name": "Kim"}, {"id": lee, "first_name": "Lee"}]
    )
    store.upsert_dialog({"id": group, "type": "private_group", "name": "friends"})
    speakers = [lee, kim, kim, OWNER, kim, lee]
    store.insert_messages(
        [
            {"dialog_id": group, "id": i, "sender_id": who, "date": 1_000_000 + 60 * i, "text": f"line {i}"}
            for i, who in enumerate(speakers, 1)
        ]
    )
    store.rebuild_sessions(group, HOUR)
    [before] = sessions_of(store, group)
    assert before["n_turns"] == 5

    forget_person(store, settings, kim)

    [after] = sessions_of(store, group)
    assert (after["n_turns"], after["n_messages"]) == (3, 3)  # lee | owner | lee
    assert after["content_hash"] != before["content_hash"]
    store.rebuild_sessions(group, HOUR)
    assert sessions_of(store, group) == [after]  # what a rebuild from the messages left gives: nothing stale


def test_a_folder_that_cannot_be_deleted_is_an_error_that_names_it(settings, store, alice, monkeypatch):
    import shutil

    from trainer import artifacts

    stuck, rmtree = alice["folders"][2], shutil.rmtree

    def refuse(path, *args, **kwargs):  # the filesystem's answer to a folder the user may not change
        if Path(path) == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(artifacts.shutil, "rmtree", refuse)
    env = {"TWIN_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["forget", alice["person"]["slug"], "--yes"], env=env)
    assert result.exit_code == 1
    assert f"{stuck} could not be deleted (Permission denied): delete it by hand" in result.output
    assert "adapters 2, 3 deleted" in result.output and not alice["folders"][3].exists()
    assert store.person(ALICE) is None


def test_an_adapter_path_stored_relative_to_the_working_directory_is_resolved_under_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an older twin, run with TWIN_DATA_DIR=data, stored "data/adapters/0001"
    with monkeypatch.context() as old_schema:
        as_of(old_schema, 6)
        old = Storage(Path("data/twin.db"))
        old.add_adapter({"version": 1, "path": "data/adapters/0001", "base_model": "m", "status": "active"}, [])
        old.add_adapter({"version": 2, "path": "/srv/twin/data/adapters/0002", "base_model": "m"}, [])
        old.close()
    store = Storage(tmp_path / "data" / "twin.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the bot, started from another folder, with an absolute data dir
    assert AdapterRef.from_row(store.adapter(1), tmp_path / "data").path == tmp_path / "data" / "adapters" / "0001"
    assert AdapterRef.from_row(store.adapter(2), tmp_path / "data").path == Path("/srv/twin/data/adapters/0002")
    store.close()
