"""Training data from a real SQLite store: which sessions are read, how they are named and scrubbed, and the
JSONL export (from Python and from the CLI)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from core.errors import UserError
from core.format import ChatTurn
from core.sessions import Turn, split_of, to_chat_turns
from core.settings import Settings
from storage import Storage
from trainer import dataset
from trainer.dataset import export_jsonl, iter_sessions
from twin.cli import app

OWNER, BOB, CAROL = 1, 2, 3
BOB_DIALOG, CAROL_DIALOG = 2, 3
DAY = 86_400
NOW = int(time.time())  # the open session is open now: readers decide closed-ness from the clock
EMAIL, CARD = "alice.private@example.com", "4111 1111 1111 1111"


def _msg(dialog_id, mid, sender, date, text, **kw):
    return {
        "dialog_id": dialog_id,
        "id": mid,
        "sender_id": sender,
        "date": date,
        "text": text,
        "out": int(sender == OWNER),
        "source": "test",
        **kw,
    }


def _first_ids(dialog_id: int, split: str, count: int, start: int = 100) -> list[int]:
    """First-message ids whose session ids fall into `split` (the split is a hash of the id)."""
    ids, mid = [], start
    while len(ids) < count:
        if split_of(f"{dialog_id}-{mid}") == split:
            ids.append(mid)
        mid += 100
    return ids


def _conversation(dialog_id: int, friend: int, first_id: int, t: int) -> list[dict]:
    """friend asks (with a photo and a forward in between), the owner answers in a burst of two."""
    return [
        _msg(dialog_id, first_id, friend, t, "are you coming?"),
        _msg(dialog_id, first_id + 1, friend, t + 10, None, media_type="photo"),
        _msg(dialog_id, first_id + 2, friend, t + 20, "FORWARDED NEWS", forwarded=1, forwarded_from="news"),
        _msg(dialog_id, first_id + 3, OWNER, t + 60, "yes"),
        _msg(dialog_id, first_id + 4, OWNER, t + 70, f"10 min, write to {EMAIL}"),
        _msg(dialog_id, first_id + 5, friend, t + 120, f"send money to {CARD} then"),
    ]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, owner_id=OWNER, scrub_words=["Ivanov"], _env_file=None)


@pytest.fixture
def store(settings) -> Storage:
    """Bob: 3 train + 2 eval closed sessions, a lone-turn session and an open one. Carol: excluded."""
    store = Storage(settings.db_path)
    store.upsert_people(
        [
            {"id": OWNER, "first_name": "Alice", "username": "alice"},
            {"id": BOB, "first_name": "Bob"},
            {"id": CAROL, "first_name": "Кэрол"},
        ]
    )
    store.upsert_dialog({"id": BOB_DIALOG, "type": "personal_chat", "name": "Bob", "person_id": BOB})
    store.upsert_dialog({"id": CAROL_DIALOG, "type": "personal_chat", "name": "Carol", "person_id": CAROL})
    rows, day = [], 1
    for first_id in _first_ids(BOB_DIALOG, "train", 3) + _first_ids(BOB_DIALOG, "eval", 2):
        rows += _conversation(BOB_DIALOG, BOB, first_id, day * DAY)
        day += 1
    rows.append(_msg(BOB_DIALOG, 90_000, BOB, 50 * DAY, "LONELY hello? Ivanov here"))
    rows += [
        _msg(BOB_DIALOG, 90_100, BOB, NOW - 60, "OPEN still talking"),
        _msg(BOB_DIALOG, 90_101, OWNER, NOW - 30, "OPEN yes"),
    ]
    rows += [
        _msg(CAROL_DIALOG, 10, CAROL, DAY, "EXCLUDED привет"),
        _msg(CAROL_DIALOG, 11, OWNER, DAY + 5, "EXCLUDED привет!"),
    ]
    store.insert_messages(rows)
    for dialog_id in (BOB_DIALOG, CAROL_DIALOG):
        store.rebuild_sessions(dialog_id, settings.session_gap_seconds, now=NOW)
    store.set_excluded(CAROL_DIALOG, True)
    return store


def _read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_export_writes_one_valid_line_per_closed_two_turn_session(store, settings, tmp_path):
    out = tmp_path / "out" / "sessions.jsonl"
    assert export_jsonl(store, settings, out, split="all") == 5
    records = _read(out)
    assert len(records) == 5
    for rec in records:
        assert set(rec) == {"session_id", "dialog_id", "messages"}
        assert isinstance(rec["session_id"], str) and rec["dialog_id"] == BOB_DIALOG
        for m in rec["messages"]:
            assert set(m) == {"role", "name", "content"}
            assert m["role"] in ("assistant", "user") and m["content"]


def test_owner_turns_are_assistant_and_bursts_join_with_newlines(store, settings, tmp_path):
    export_jsonl(store, settings, tmp_path / "s.jsonl", split="all")
    first = _read(tmp_path / "s.jsonl")[0]["messages"]
    assert [(m["role"], m["name"]) for m in first] == [
        ("user", "bob"),
        ("assistant", "alice"),
        ("user", "bob"),
    ]
    assert first[0]["content"] == "are you coming?"
    assert first[1]["content"] == "yes\n10 min, write to <EMAIL>"


def test_planted_email_and_card_never_reach_the_file(store, settings, tmp_path):
    export_jsonl(store, settings, tmp_path / "s.jsonl", split="all")
    text = (tmp_path / "s.jsonl").read_text()
    assert EMAIL not in text and CARD not in text and "4111" not in text
    assert "<EMAIL>" in text and "<CARD>" in text


def test_forwards_and_media_only_messages_are_not_content(store, settings, tmp_path):
    export_jsonl(store, settings, tmp_path / "s.jsonl", split="all")
    records = _read(tmp_path / "s.jsonl")
    assert "FORWARDED" not in (tmp_path / "s.jsonl").read_text()
    assert all(m["content"] for rec in records for m in rec["messages"])
    assert all(len(rec["messages"]) == 3 for rec in records)  # the photo did not split bob's turn


def test_only_closed_sessions_of_included_dialogs_with_a_reply(store, settings, tmp_path):
    export_jsonl(store, settings, tmp_path / "s.jsonl", split="all")
    text = (tmp_path / "s.jsonl").read_text()
    assert "OPEN" not in text  # still open: its last message is younger than the gap
    assert "EXCLUDED" not in text  # the owner excluded carol's dialog
    assert "LONELY" not in text  # one turn: nothing to learn about replying


def test_eval_split_is_stable_and_disjoint_from_train(store, settings, tmp_path, monkeypatch):
    def ids(split):
        export_jsonl(store, settings, tmp_path / f"{split}.jsonl", split=split)
        return [rec["session_id"] for rec in _read(tmp_path / f"{split}.jsonl")]

    train, evals, every = ids("train"), ids("eval"), ids("all")
    assert len(train) == 3 and len(evals) == 2
    assert not set(train) & set(evals)
    assert sorted(train + evals) == sorted(every)
    assert all(split_of(sid) == "eval" for sid in evals)
    # A day later every session keeps its split, rebuilt (after a sync) or not; the session that was open
    # has closed meanwhile and joins the split of its own id.
    monkeypatch.setattr(time, "time", lambda: NOW + DAY)
    assert set(ids("train")) | set(ids("eval")) == set(every) | {"2-90100"}
    store.rebuild_sessions(BOB_DIALOG, settings.session_gap_seconds)
    later_train, later_eval = ids("train"), ids("eval")
    assert set(train) <= set(later_train) and set(evals) <= set(later_eval)
    assert set(later_train) | set(later_eval) == set(every) | {"2-90100"}


def test_iter_sessions_names_turns_by_persona_and_keeps_speaker_ids(store, settings):
    sessions = list(iter_sessions(store, settings, "train"))
    assert len(sessions) == 3
    s = sessions[0]
    assert s.split == "train" and s.dialog_id == BOB_DIALOG and len(s.content_hash) == 64
    assert s.speaker_ids == [BOB, OWNER, BOB]
    assert s.turns[1] == ChatTurn("alice", ("yes", "10 min, write to <EMAIL>"))
    assert s.turns[2].messages == ("send money to <CARD> then",)


def test_settings_scrub_words_are_applied(store, settings):
    store.insert_messages(
        [
            _msg(BOB_DIALOG, 95_000, BOB, 60 * DAY, "I am ivanov"),
            _msg(BOB_DIALOG, 95_001, OWNER, 60 * DAY + 1, "hi Ivanov"),
        ]
    )
    store.rebuild_sessions(BOB_DIALOG, settings.session_gap_seconds, now=NOW)
    texts = [m for s in iter_sessions(store, settings, "all") for t in s.turns for m in t.messages]
    assert "I am <REDACTED>" in texts and "hi <REDACTED>" in texts
    assert not any("ivanov" in t.lower() for t in texts)


def test_unknown_split_is_a_user_error(store, settings):
    with pytest.raises(UserError, match="train, eval or all"):
        list(iter_sessions(store, settings, "test"))


def test_unknown_owner_says_how_to_set_it(store, tmp_path):
    no_owner = Settings(data_dir=tmp_path, _env_file=None)
    with pytest.raises(UserError, match="TWIN_OWNER_ID"):
        export_jsonl(store, no_owner, tmp_path / "s.jsonl", split="all")
    assert not (tmp_path / "s.jsonl").exists()


def test_owner_recorded_by_an_import_is_used(store, tmp_path):
    store.set_meta("owner_id", OWNER)
    export_jsonl(store, Settings(data_dir=tmp_path, _env_file=None), tmp_path / "s.jsonl", split="all")
    assert _read(tmp_path / "s.jsonl")[0]["messages"][1]["role"] == "assistant"


def test_a_crash_mid_export_leaves_no_file_behind(store, settings, tmp_path, monkeypatch):
    out = tmp_path / "exp" / "s.jsonl"
    out.parent.mkdir()
    out.write_text("previous export\n")
    real, calls = dataset.session_record, []

    def flaky(session, owner_id):
        calls.append(session.id)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(session, owner_id)

    monkeypatch.setattr(dataset, "session_record", flaky)
    with pytest.raises(RuntimeError):
        export_jsonl(store, settings, out, split="all")
    assert out.read_text() == "previous export\n"
    assert [p.name for p in out.parent.iterdir()] == ["s.jsonl"]


def test_export_file_is_private(store, settings, tmp_path):
    export_jsonl(store, settings, tmp_path / "s.jsonl", split="all")
    assert (tmp_path / "s.jsonl").stat().st_mode & 0o777 == 0o600


def test_cli_dataset_export_writes_the_file(store, tmp_path):
    out = tmp_path / "cli.jsonl"
    env = {"TWIN_DATA_DIR": str(tmp_path), "TWIN_OWNER_ID": str(OWNER)}
    result = CliRunner().invoke(app, ["dataset", "export", str(out), "--split", "eval"], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 2 sessions" in result.output
    assert len(_read(out)) == 2


def test_cli_dataset_export_without_owner_says_what_to_do(store, tmp_path):
    env = {"TWIN_DATA_DIR": str(tmp_path), "TWIN_OWNER_ID": ""}
    result = CliRunner().invoke(app, ["dataset", "export", str(tmp_path / "x.jsonl")], env=env)
    assert result.exit_code == 1
    assert "TWIN_OWNER_ID" in result.output


def test_to_chat_turns_names_speakers_and_scrubs():
    turns = [Turn(2, ["hi", "mail a@b.com"], [1, 2]), Turn(1, ["ok"], [3]), Turn(-77, ["?"], [4])]
    chat = to_chat_turns(turns, {1: "alice", 2: "bob"}, scrub=lambda s: s.replace("a@b.com", "<EMAIL>"))
    assert chat == [
        ChatTurn("bob", ("hi", "mail <EMAIL>")),
        ChatTurn("alice", ("ok",)),
        ChatTurn("user77", ("?",)),  # not in storage yet: named by id
    ]
    assert to_chat_turns(turns[:1], {2: "bob"})[0].messages == ("hi", "mail a@b.com")
