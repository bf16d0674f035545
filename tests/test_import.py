"""`twin import` of Telegram Desktop exports: real ones from public repositories (../shared/fixtures), hand-written
ones in the writer's format (tests/fixtures), corrupt variants of both. Real SQLite in tmp_path throughout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from collector.telegram_export import ExportError, import_export, synthetic_id
from core.errors import UserError
from core.sessions import session_rows
from storage import Storage

SHARED = Path(__file__).resolve().parents[2] / "shared/fixtures/telegram-export"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FULL = FIXTURES / "full_account_export.json"  # owner 1000; Alice 2001 (ru), Wei 2002 (zh), deleted 2003
SINGLE = FIXTURES / "single_chat_export.json"  # personal chat with Bob 2004, owner 1000
OWNER = 1000
HOUR = 3600.0


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(tmp_path / "twin.db")
    yield s
    s.close()


def run_import(store: Storage, path: Path, owner_id: int | None = None, **options):
    options = {"include_groups": False, "keep_stickers": True, "gap_seconds": HOUR, **options}
    return import_export(store, path, owner_id=owner_id, progress=False, **options)


def by_id(store: Storage, dialog_id: int) -> dict[int, dict]:
    return {m["id"]: m for m in store.messages(dialog_id)}


def write_json(path: Path, data) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def full_export() -> dict:
    return orjson.loads(FULL.read_bytes())


# -- the real exports ----------------------------------------------------------------------------
def test_langchain_personal_chat_imports_all_six_messages_with_list_text_flattened(store):
    summary = run_import(store, SHARED / "langchain_personal_chat_result.json", owner_id=6565661032)

    messages = by_id(store, 5965280513)
    assert summary.messages_added == 6 and sorted(messages) == [1, 2, 3, 4, 5, 6]
    assert messages[5]["text"] == "this is bold text: BOLD TEXT"
    assert messages[6]["text"] == "this is an email: admin@example.com"
    assert [m["out"] for m in store.messages(5965280513)] == [0, 1, 0, 0, 1, 0]
    assert messages[1]["date"] == 1692821483 and messages[1]["sender_id"] == 123450513
    dialog = store.dialog(5965280513)
    assert dialog["type"] == "personal_chat" and dialog["name"] == "Jimmeny"
    # The anonymised export's chat id is not its peer's user id: the person is the one who wrote.
    assert dialog["person_id"] == 123450513
    assert store.person(123450513)["name"] == "Jimmeny Marvelton"


def test_private_group_sample_imports_nothing_by_default(store):
    summary = run_import(store, SHARED / "tele_dashboard_sample_private_group.json", owner_id=280666525)

    assert summary.messages_added == 0
    assert summary.chats_skipped == {"private_group": 1}
    assert store.counts()["messages"] == 0 and store.dialogs() == []
    assert "--include-groups" in summary.describe()


def test_private_group_sample_with_include_groups_keeps_first_of_each_duplicate_id(store):
    path = SHARED / "tele_dashboard_sample_private_group.json"
    summary = run_import(store, path, owner_id=280666525, include_groups=True)

    # Every message id in this anonymised sample is 69420: the first message is kept, the rest counted.
    assert summary.messages_added == 1
    assert summary.skipped == {"duplicate id": 233, "media-only": 16, "service": 6}
    [message] = store.messages(69420)
    assert message["text"] == "The One Piece! The One Piece is Real!"
    assert message["edited"] == 1661765816 and message["date"] == 0
    # "user000AX6969" has no usable number: the id comes from the sender's name, the same on every run.
    assert message["sender_id"] == synthetic_id("Joseph Joestar") < 0
    assert store.person(280666525)["name"] == "no_life_coder"


def test_chatminer_single_export_without_ids_numbers_messages_by_position(store):
    summary = run_import(store, SHARED / "chatminer_test_single_export.json", owner_id=1)

    [dialog] = store.dialogs()
    assert dialog["type"] == "personal_chat" and dialog["id"] < 0
    messages = store.messages(dialog["id"])
    assert [(m["id"], m["text"]) for m in messages] == [(1, "Minimal Message"), (2, "Link:https://telegram.org/")]
    assert dialog["watermark"] == 0  # synthesised ids are no Telegram ids to sync from
    assert "sent none of these messages" in summary.describe()  # owner 1 wrote nothing: worth a warning


def test_chatminer_batch_export_without_chat_type_or_id_is_a_personal_chat(store):
    summary = run_import(store, SHARED / "chatminer_test_batch_export.json", owner_id=1)

    assert summary.chats_imported == {"personal_chat": 1}
    [dialog] = store.dialogs()
    assert dialog["id"] == synthetic_id("Chatname") and dialog["name"] == "Chatname"
    assert len(store.messages(dialog["id"])) == 2


@pytest.mark.parametrize(
    "name, owner_id",
    [
        ("langchain_personal_chat_result.json", 6565661032),
        ("tele_dashboard_sample_private_group.json", 280666525),
        ("chatminer_test_single_export.json", 1),
        ("chatminer_test_batch_export.json", 1),
    ],
)
def test_second_import_of_the_same_shared_export_adds_nothing(store, name, owner_id):
    first = run_import(store, SHARED / name, owner_id=owner_id, include_groups=True)
    counts = store.counts()
    second = run_import(store, SHARED / name, owner_id=owner_id, include_groups=True)

    assert first.messages_added > 0
    assert second.messages_added == 0 and second.messages_known == first.messages_added
    assert store.counts() == counts


def test_second_import_of_a_full_export_adds_nothing_and_keeps_sessions(store):
    run_import(store, FULL, include_groups=True)
    sessions, people = store.sessions(), store.people()
    summary = run_import(store, FULL, include_groups=True)

    assert summary.messages_added == 0
    assert store.sessions() == sessions
    assert [p["slug"] for p in store.people()] == [p["slug"] for p in people]


# -- owner ----------------------------------------------------------------------------------------
def test_full_export_takes_the_owner_from_personal_information(store):
    summary = run_import(store, FULL)

    assert summary.owner_id == OWNER and summary.owner_source == "personal_information"
    assert store.get_meta("owner_id") == str(OWNER)
    assert store.get_meta("last_import_at") is not None
    owner = store.person(OWNER)
    assert (owner["first_name"], owner["last_name"], owner["username"]) == ("Owner", "Person", "owner_twin")
    assert f"as owner {OWNER} (from personal_information)" in summary.describe()


def test_full_export_accepts_the_same_owner_id_given_twice(store):
    assert run_import(store, FULL, owner_id=OWNER).owner_id == OWNER


def test_single_chat_export_without_owner_id_says_to_pass_or_set_it(store):
    with pytest.raises(UserError) as error:
        run_import(store, SINGLE)

    assert "--owner-id" in str(error.value) and "TWIN_OWNER_ID" in str(error.value)
    assert store.counts()["messages"] == 0


def test_owner_id_that_disagrees_with_personal_information_is_refused(store):
    with pytest.raises(UserError) as error:
        run_import(store, FULL, owner_id=555)

    assert "1000" in str(error.value) and "555" in str(error.value)
    assert store.counts()["messages"] == 0


def test_export_of_another_account_is_refused_into_the_same_database(store):
    run_import(store, FULL)

    with pytest.raises(UserError, match="another TWIN_DATA_DIR"):
        run_import(store, SINGLE, owner_id=777)


def test_out_marks_the_owners_messages(store):
    run_import(store, SINGLE, owner_id=OWNER)

    assert [(m["id"], m["out"]) for m in store.messages(2004)] == [(1, 0), (2, 1), (3, 0), (4, 1)]


# -- what the hand-written full export exercises --------------------------------------------------
def test_russian_and_chinese_text_is_stored_verbatim(store):
    run_import(store, FULL)

    assert by_id(store, 2001)[1]["text"] == "Привет! Как дела?"
    assert by_id(store, 2001)[8]["text"] == "Ссылка: https://example.com/закат"
    assert [m["text"] for m in store.messages(2002)] == ["你好！最近怎么样？", "我很好，谢谢。你呢？", "明天见"]
    assert store.person(2002)["name"] == "王伟" and store.dialog(2001)["name"] == "Алиса Петрова"


def test_forwarded_messages_are_stored_flagged_with_their_origin(store):
    run_import(store, FULL)
    messages = by_id(store, 2001)

    assert (messages[3]["forwarded"], messages[3]["forwarded_from"]) == (1, "Новости")
    assert (messages[11]["forwarded"], messages[11]["forwarded_from"]) == (1, None)  # a hidden account
    assert messages[1]["forwarded"] == 0


def test_replies_edits_and_via_bot_are_recorded(store):
    run_import(store, FULL)
    messages = by_id(store, 2001)

    assert messages[2]["reply_to"] == 1 and messages[2]["edited"] == 1700000100
    assert messages[9]["via_bot"] == 1 and messages[1]["via_bot"] == 0
    assert messages[1]["reply_to"] is None and messages[1]["edited"] is None


def test_sticker_becomes_its_emoji(store):
    run_import(store, FULL)

    sticker = by_id(store, 2001)[4]
    assert (sticker["text"], sticker["media_type"]) == ("😂", "sticker")


def test_stickers_are_dropped_when_not_kept(store):
    summary = run_import(store, FULL, keep_stickers=False)

    assert 4 not in by_id(store, 2001)
    assert summary.skipped["sticker (--no-stickers)"] == 1


def test_photo_keeps_its_caption_and_media_without_text_is_skipped(store):
    summary = run_import(store, FULL)
    messages = by_id(store, 2001)

    assert (messages[6]["text"], messages[6]["media_type"]) == ("Смотри, какой закат", "photo")
    assert 7 not in messages and 3 not in by_id(store, 2002)  # a bare photo, a voice message
    assert summary.skipped["media-only"] == 2


def test_service_and_unsupported_messages_are_skipped_and_counted(store):
    summary = run_import(store, FULL, include_groups=True)

    assert 5 not in by_id(store, 2001) and 10 not in by_id(store, 2001)
    assert summary.skipped["service"] == 2 and summary.skipped["unsupported"] == 1
    assert "2 service" in summary.describe() and "1 unsupported" in summary.describe()


def test_message_without_a_date_is_skipped_and_counted(store, tmp_path):
    data = full_export()
    del data["chats"]["list"][0]["messages"][0]["date_unixtime"]

    summary = run_import(store, write_json(tmp_path / "result.json", data))

    assert summary.skipped["no date"] == 1 and 1 not in by_id(store, 2001)


def test_deleted_account_is_named_deleted_account(store):
    run_import(store, FULL)

    assert store.person(2003)["name"] == "Deleted Account"
    assert store.dialog(2003)["name"] == "Deleted Account" and store.dialog(2003)["person_id"] == 2003
    assert by_id(store, 2003)[1]["sender_id"] == 2003


def test_only_personal_chats_are_imported_by_default(store):
    summary = run_import(store, FULL)

    assert {d["id"] for d in store.dialogs()} == {2001, 2002, 2003}
    assert summary.chats_imported == {"personal_chat": 3}
    assert summary.chats_skipped == {
        "private_group": 1,
        "private_supergroup": 2,
        "public_supergroup": 1,
        "public_channel": 1,
        "private_channel": 1,
        "bot_chat": 1,
        "saved_messages": 1,
        "replies": 1,
    }


def test_include_groups_adds_private_groups_but_never_channels_bots_saved_messages_or_replies(store):
    summary = run_import(store, FULL, include_groups=True)

    # 3004 is a supergroup the owner left: Telegram lists it under left_chats.
    assert {d["id"] for d in store.dialogs()} == {2001, 2002, 2003, 3001, 3002, 3004}
    assert set(summary.chats_skipped) == {
        "public_supergroup",
        "public_channel",
        "private_channel",
        "bot_chat",
        "saved_messages",
        "replies",
    }
    family = store.dialog(3001)
    assert (family["type"], family["name"], family["person_id"]) == ("private_group", "Семья", None)


def test_personal_chat_dialog_points_at_the_other_person(store):
    run_import(store, FULL)

    assert store.dialog(2001)["person_id"] == 2001 and store.dialog(2002)["person_id"] == 2002
    alice = store.person(2001)
    assert (alice["first_name"], alice["last_name"], alice["username"]) == ("Алиса", "Петрова", None)


def test_watermark_is_the_highest_imported_message_id(store):
    run_import(store, FULL)

    assert store.dialog(2001)["watermark"] == 12 and store.dialog(2002)["watermark"] == 4


def test_folder_holding_result_json_is_accepted(store, tmp_path):
    folder = tmp_path / "DataExport_2024-05-01"
    folder.mkdir()
    (folder / "result.json").write_bytes(SINGLE.read_bytes())

    assert run_import(store, folder, owner_id=OWNER).messages_added == 4


def test_chat_without_type_and_three_senders_is_a_group(store, tmp_path):
    chat = {
        "name": "Trio",
        "messages": [
            {
                "type": "message",
                "date_unixtime": str(1700000000 + i),
                "from": name,
                "from_id": f"user{uid}",
                "text": "hi",
            }
            for i, (name, uid) in enumerate([("Owner", OWNER), ("Ann", 11), ("Ben", 12)])
        ],
    }
    path = write_json(tmp_path / "result.json", chat)

    assert run_import(store, path, owner_id=OWNER).chats_skipped == {"private_group": 1}
    assert run_import(store, path, owner_id=OWNER, include_groups=True).messages_added == 3


def test_missing_chat_id_and_sender_id_get_the_same_negative_ids_on_every_run(tmp_path):
    chat = {
        "name": "Ghost",
        "type": "personal_chat",
        "messages": [
            {"id": 1, "type": "message", "date_unixtime": "1700000000", "from": "Ghost", "text": "boo"},
        ],
    }
    path = write_json(tmp_path / "result.json", chat)
    ids = []
    for run in ("a", "b"):
        s = Storage(tmp_path / f"{run}.db")
        run_import(s, path, owner_id=OWNER)
        [dialog] = s.dialogs()
        ids.append((dialog["id"], s.messages(dialog["id"])[0]["sender_id"]))
        s.close()

    assert ids[0] == ids[1] == (synthetic_id("Ghost"), synthetic_id("Ghost"))
    assert ids[0][0] < 0


# -- sessions -------------------------------------------------------------------------------------
def test_import_creates_sessions_cut_at_the_gap(store):
    run_import(store, FULL)

    # Alice's chat: an evening of messages, then "good morning" a day later.
    sessions = [s for s in store.sessions() if s["dialog_id"] == 2001]
    assert [(s["first_message_id"], s["last_message_id"]) for s in sessions] == [(1, 11), (12, 12)]
    assert all(s["closed"] for s in sessions)


def test_import_sessions_equal_a_rebuild_from_storage(store):
    run_import(store, FULL, include_groups=True)
    imported = store.sessions()
    for dialog in store.dialogs():
        store.rebuild_sessions(dialog["id"], HOUR)

    assert store.sessions() == imported


def test_later_export_adds_only_new_messages_and_extends_sessions(store, tmp_path):
    chat = orjson.loads(SINGLE.read_bytes())
    later = dict(
        chat,
        messages=chat["messages"]
        + [
            {
                "id": 5,
                "type": "message",
                "date_unixtime": "1700020100",
                "from": "Боб",
                "from_id": "user2004",
                "text": "И тебе!",
            },
        ],
    )
    run_import(store, SINGLE, owner_id=OWNER)
    summary = run_import(store, write_json(tmp_path / "later.json", later), owner_id=OWNER)

    assert (summary.messages_added, summary.messages_known) == (1, 4)
    sessions = [s for s in store.sessions() if s["dialog_id"] == 2004]
    assert [(s["first_message_id"], s["last_message_id"]) for s in sessions] == [(1, 3), (4, 5)]
    assert store.dialog(2004)["watermark"] == 5


def test_session_rows_of_imported_messages_match_core_sessions(store):
    run_import(store, SINGLE, owner_id=OWNER)
    expected = session_rows(2004, store.messages(2004), HOUR, now=10**10)
    store.rebuild_sessions(2004, HOUR, now=10**10)

    assert [s["id"] for s in store.sessions()] == [r["id"] for r in expected] == ["2004-1", "2004-4"]


# -- bad input ------------------------------------------------------------------------------------
def full_export_with(change) -> Callable[[], bytes]:
    """The bytes of the hand-written full export after `change(data)`: a corrupt result.json."""

    def make() -> bytes:
        data = full_export()
        change(data)
        return orjson.dumps(data)

    return make


def alice_message(index: int, key: str, value) -> Callable[[], bytes]:
    return full_export_with(lambda data: data["chats"]["list"][0]["messages"][index].update({key: value}))


def alice_messages(value) -> Callable[[], bytes]:
    return full_export_with(lambda data: data["chats"]["list"][0].update(messages=value))


CORRUPT = {
    "truncated": (lambda: FULL.read_bytes()[:5000], ["result.json", "truncated"]),
    "not utf-8": (lambda: FULL.read_bytes().replace("Алиса".encode(), b"\xc0\xc1\xfe\xff"), ["not UTF-8"]),
    "messages not a list": (
        alice_messages({"1": "hi"}),
        ['chat "Алиса Петрова" (id 2001)', '"messages" is not a list'],
    ),
    "text a number": (alice_message(0, "text", 42), ["(id 2001), message 1", '"text" is neither']),
    "date not a number": (
        alice_message(2, "date_unixtime", "soon"),
        ['chat "Алиса Петрова" (id 2001), message 3', '"date_unixtime" is not a number'],
    ),
    "id not an integer": (alice_message(1, "id", "2"), ["message #2", '"id" is not an integer']),
    "reply_to not an integer": (alice_message(1, "reply_to_message_id", "1"), ["message 2", '"reply_to_message_id"']),
    "from not a string": (alice_message(0, "from", ["x"]), ["message 1", '"from" is not a string']),
    "message not an object": (alice_messages([{"id": 1}, "hello"]), ["message #2 is not a JSON object"]),
    "messages missing": (
        full_export_with(lambda data: data["chats"]["list"][1].pop("messages")),
        ['chat "王伟" (id 2002)', '"messages" is missing'],
    ),
    "chats missing": (lambda: b'{"personal_information": {"user_id": 1000}}', ['neither "messages" nor "chats"']),
    "not an object": (lambda: b"[1, 2, 3]", ["not a Telegram Desktop export"]),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_export_raises_export_error_naming_file_chat_message_and_field(tmp_path, case):
    make, expected = CORRUPT[case]
    db_path = tmp_path / "twin.db"
    store = Storage(db_path)
    run_import(store, SINGLE, owner_id=OWNER)
    store.close()
    before = db_path.read_bytes()
    path = tmp_path / "result.json"
    path.write_bytes(make())

    store = Storage(db_path)
    with pytest.raises(ExportError) as error:
        run_import(store, path, include_groups=True)
    store.close()

    message = str(error.value)
    assert str(path) in message
    for part in expected:
        assert part in message
    assert db_path.read_bytes() == before  # nothing written: the one transaction rolled back


def test_failed_import_leaves_the_database_file_byte_for_byte_unchanged(tmp_path):
    db_path = tmp_path / "twin.db"
    store = Storage(db_path)
    run_import(store, SINGLE, owner_id=OWNER)
    store.close()
    before = db_path.read_bytes()
    data = full_export()
    # The last chat is bad: every chat before it was converted and written inside the transaction.
    data["left_chats"]["list"][0]["messages"][1]["date_unixtime"] = "yesterday"
    path = write_json(tmp_path / "result.json", data)

    store = Storage(db_path)
    with pytest.raises(ExportError, match=r'chat "Old group" \(id 3004\), message 2'):
        run_import(store, path, include_groups=True)
    assert store.counts()["messages"] == 4 and store.get_meta("owner_id") == str(OWNER)
    store.close()

    assert db_path.read_bytes() == before
    assert not Path(f"{db_path}-wal").exists() or Path(f"{db_path}-wal").stat().st_size == 0


def test_an_import_that_fails_while_writing_takes_back_what_it_wrote(tmp_path, monkeypatch):
    """The rows go in short transactions (the bot keeps the database meanwhile): a failure after some chats
    were written (a full disk, Ctrl-C) leaves the data as it was before the import."""
    store = Storage(tmp_path / "twin.db")
    run_import(store, SINGLE, owner_id=OWNER)
    tables = ("people", "dialogs", "messages", "sessions", "meta")
    before = {t: [tuple(r) for r in store.query(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables}
    real, calls = Storage.insert_many_messages, []

    def fails_on_the_third_chat(self, rows):
        calls.append(rows[0][0])
        if len(set(calls)) == 3:
            raise OSError("No space left on device")
        return real(self, rows)

    monkeypatch.setattr(Storage, "insert_many_messages", fails_on_the_third_chat)
    with pytest.raises(OSError, match="No space"):
        run_import(store, FULL, include_groups=True)
    assert len(set(calls)) == 3  # two chats were written before it failed
    assert {t: [tuple(r) for r in store.query(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables} == before


def test_missing_file_says_what_to_pass(store, tmp_path):
    with pytest.raises(ExportError, match="no such file: pass the result.json"):
        run_import(store, tmp_path / "nowhere")


# -- storage ------------------------------------------------------------------------------------
def test_insert_many_messages_stores_what_insert_messages_stores(tmp_path):
    rows = [
        (7, i, 1 + i % 2, 1700000000 + i, f"text {i}", i % 2, None, 0, None, None, None, 0, "export")
        for i in range(1, 200)
    ]
    rows += [
        (7, 500, 2, 1700001000, "fwd", 0, 3, 1, "Someone", "photo", 1700001001, 1, "export"),
        (8, 1, 2, 1700002000, "другой", 0, None, 0, None, None, None, None, "telethon"),
    ]
    one, many = Storage(tmp_path / "one.db"), Storage(tmp_path / "many.db")

    assert one.insert_messages(rows) == many.insert_many_messages(rows) == len(rows)
    assert many.insert_many_messages(rows) == 0
    assert [one.messages(d) for d in (7, 8)] == [many.messages(d) for d in (7, 8)]


# -- the command line ----------------------------------------------------------------------------
def invoke(tmp_path, monkeypatch, *args):
    from twin.cli import app

    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {"TWIN_DATA_DIR": str(tmp_path / "data"), "TWIN_OWNER_ID": ""}
    return CliRunner().invoke(app, ["import", *args], env=env)


def test_cli_import_prints_a_summary_and_exits_0(tmp_path, monkeypatch):
    result = invoke(tmp_path, monkeypatch, str(FULL), "--include-groups")

    assert result.exit_code == 0, result.output
    assert "as owner 1000" in result.output and "messages:" in result.output
    store = Storage(tmp_path / "data" / "twin.db")
    assert store.counts()["messages"] > 0
    store.close()


def test_cli_import_of_single_chat_takes_owner_id_option(tmp_path, monkeypatch):
    result = invoke(tmp_path, monkeypatch, str(SINGLE), "--owner-id", "1000", "--no-stickers")

    assert result.exit_code == 0, result.output
    assert "4 added" in result.output


def test_cli_import_of_a_corrupt_file_exits_1_with_a_short_error(tmp_path, monkeypatch):
    (tmp_path / "result.json").write_bytes(FULL.read_bytes()[:3000])

    result = invoke(tmp_path, monkeypatch, "result.json")

    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich wraps long lines at the console width
    assert text.startswith("error: result.json: ends in the middle of the JSON")
    assert "Traceback" not in result.output


def test_fixtures_are_what_telegram_desktop_writes():
    """The hand-written fixtures keep the writer's shape: one-space indent, date + date_unixtime strings."""
    full = json.loads(FULL.read_text(encoding="utf-8"))
    assert FULL.read_text(encoding="utf-8").startswith('{\n "about"')
    for chat in full["chats"]["list"] + full["left_chats"]["list"]:
        assert set(chat) == {"name", "type", "id", "messages"}
        for message in chat["messages"]:
            assert message["type"] in ("message", "service", "unsupported")
            assert message["type"] == "unsupported" or isinstance(message["date_unixtime"], str)
