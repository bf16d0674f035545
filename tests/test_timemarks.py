"""Time marks (core.timemarks): the format shows when a conversation starts and long pauses, as mask-0
context no persona can produce, and the trainer, the bot and the drafts mark the same messages alike."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.conversation import conversation_turns
from core.format import ChatFormat, ChatTurn
from core.sessions import live_turns
from core.settings import Settings
from core.timemarks import TIME_HEADER, Clock, duration, pause_mark, start_mark, turn_marks
from storage import Storage
from tests.bot_fakes import OWNER, EngineDouble, TwinUnderTest
from trainer.dataset import iter_sessions
from trainer.evaluate import eval_set_key

BERLIN = ZoneInfo("Europe/Berlin")
# Saturday 2024-03-02, 23:40 in Berlin (22:40 UTC).
SAT_NIGHT = int(datetime(2024, 3, 2, 23, 40, tzinfo=BERLIN).timestamp())


@pytest.fixture(scope="module")
def fmt(tiny_model_dir):
    from transformers import AutoTokenizer

    return ChatFormat(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_a_pause_is_said_in_the_largest_unit_that_fits():
    said = [duration(s) for s in (60, 25 * 60, 3600, 5 * 3600, 86_400, 3 * 86_400, 15 * 86_400, 90 * 86_400)]
    assert said == ["1 minute", "25 minutes", "1 hour", "5 hours", "1 day", "3 days", "2 weeks", "3 months"]
    assert duration(3 * 365 * 86_400) == "3 years"
    assert pause_mark(5 * 60) == "" and pause_mark(45 * 60) == "45 minutes later"


def test_a_start_is_marked_by_weekday_and_time_of_day_in_the_owners_zone():
    assert start_mark(SAT_NIGHT, BERLIN) == "Saturday night, 23:40"
    assert start_mark(SAT_NIGHT, ZoneInfo("Asia/Tokyo")) == "Sunday morning, 07:40"
    assert start_mark(SAT_NIGHT, BERLIN, 3 * 86_400) == "Saturday night, 23:40 · 3 days since the last message"
    spans = [(SAT_NIGHT, SAT_NIGHT + 60), (SAT_NIGHT + 120, SAT_NIGHT + 120), (SAT_NIGHT + 3000, SAT_NIGHT + 3000)]
    assert turn_marks(spans, BERLIN) == ["Saturday night, 23:40", "", "48 minutes later"]


def test_marks_are_mask_0_under_a_header_no_persona_has_and_off_changes_nothing(fmt):
    plain = [ChatTurn("bob", ("привет", "are you up?")), ChatTurn("alice", ("да 你好",))]
    marked = [
        ChatTurn("bob", plain[0].messages, "Saturday night, 23:40"),
        ChatTurn("alice", plain[1].messages, "2 hours later"),
    ]
    before, after = fmt.render(plain), fmt.render(marked)
    text = fmt.tokenizer.decode(after.ids)
    assert text.count(TIME_HEADER) == 2 and "Saturday night, 23:40" in text and "2 hours later" in text
    learned = fmt.tokenizer.decode([i for i, m in zip(after.ids, after.mask, strict=True) if m])
    assert learned == fmt.tokenizer.decode([i for i, m in zip(before.ids, before.mask, strict=True) if m])
    assert TIME_HEADER not in learned and "later" not in learned  # given, never produced
    # Each turn begins with its mark: a window cut at a turn keeps it.
    assert fmt.tokenizer.decode(after.ids[after.turn_starts[1] :]).lstrip().startswith("<|im_start|>(time)")
    # The reply's own mark sits between the context and the persona's header, as in training.
    prompt = fmt.tokenizer.decode(fmt.prompt(marked[:1], "alice", time="2 hours later"))
    assert text.startswith(prompt) and prompt.endswith("2 hours later<|im_end|>\n<|im_start|>alice\n")
    assert fmt.prompt(plain[:1], "alice") == fmt.prompt(plain[:1], "alice", time="")


def add(store: Storage, dialog: int, rows: list[tuple[int, int, str]]) -> None:
    """Messages (id, date, sender) of a personal chat with `dialog`, the owner being 1."""
    store.insert_messages(
        [
            {"dialog_id": dialog, "id": i, "sender_id": s, "date": d, "text": f"сообщение {i} 你好", "out": int(s == 1)}
            for i, d, s in rows
        ]
    )


@pytest.fixture
def marked_store(tmp_path):
    settings = Settings(data_dir=tmp_path, owner_id=1, time_marks=True, time_zone="Europe/Berlin", _env_file=None)
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    store.upsert_people([{"id": 1, "first_name": "Olga", "username": "olga"}, {"id": 2, "first_name": "Bob"}])
    store.upsert_dialog({"id": 2, "type": "personal_chat", "name": "Bob", "person_id": 2})
    earlier = SAT_NIGHT - 3 * 86_400 - 600  # a conversation three days before
    add(store, 2, [(1, earlier, 2), (2, earlier + 60, 1)])
    # Saturday night: Bob, Olga at once, then Bob again 48 minutes later (within the 60-minute session gap).
    add(store, 2, [(10, SAT_NIGHT, 2), (11, SAT_NIGHT + 30, 2), (12, SAT_NIGHT + 90, 1), (13, SAT_NIGHT + 3000, 2)])
    store.rebuild_sessions(2, settings.session_gap_seconds)
    return settings, store


def test_the_trainer_marks_a_session_start_in_the_owners_zone_and_a_long_pause(marked_store):
    settings, store = marked_store
    sessions = {s.start: s for s in iter_sessions(store, settings, "all")}
    night = sessions[SAT_NIGHT]
    assert [t.time for t in night.turns] == [
        "Saturday night, 23:40 · 3 days since the last message",  # the same dialog's session before
        "",
        "48 minutes later",
    ]
    off = settings.model_copy(update={"time_marks": False})
    unmarked = list(iter_sessions(store, off, "all"))
    assert all(t.time == "" for s in unmarked for t in s.turns)
    # The base model's cached eval losses are keyed by the marks too: the same sessions render otherwise.
    assert eval_set_key("m", unmarked, 2048, 0.5) != eval_set_key("m", list(sessions.values()), 2048, 0.5)


def test_the_bot_and_the_drafts_mark_a_live_chat_as_the_trainer_marks_it(marked_store):
    """The same messages as bot rows, as stored messages for a draft, and as a stored session: one set of marks."""
    settings, store = marked_store
    trained = next(s for s in iter_sessions(store, settings, "all") if s.start == SAT_NIGHT)
    messages = store.messages(2)
    rows = [
        {"id": m["id"], "speaker": "olga" if m["sender_id"] == 1 else "bob", "from_twin": m["sender_id"] == 1}
        | {"text": m["text"], "date": m["date"]}
        for m in messages
    ]
    bot = conversation_turns(rows, "olga", settings.session_gap_seconds, 20, settings.zone, True)
    drafts = live_turns(messages, {1: "olga", 2: "bob"}, settings.session_gap_seconds, 20, settings.zone, True)
    assert [t.time for t in bot] == [t.time for t in drafts] == [t.time for t in trained.turns]
    assert [t.messages for t in bot] == [t.messages for t in trained.turns]
    # The last turns only, as a long chat's prompt holds: each keeps its own mark.
    assert [t.time for t in conversation_turns(rows, "olga", 3600, 1, settings.zone, True)] == ["48 minutes later"]
    assert all(not t.time for t in conversation_turns(rows, "olga", 3600, 20))  # off


async def test_the_bot_shows_the_engine_the_time_when_time_marks_are_on(tmp_path):
    engine = EngineDouble()
    twin = TwinUnderTest(tmp_path / "data", engine=engine, time_marks=True, time_zone="Asia/Tokyo")
    twin.store.upsert_people([{"id": OWNER, "first_name": "Owner", "username": "owner"}])
    twin.store.allow(user_id=77)
    twin.store.add_bot_message(
        77, 77, "friend", "вчера было весело", from_twin=False, date=int(time.time()) - 2 * 86_400
    )
    try:
        await twin.say(77, "привет! 你好")
        await twin.settle()
    finally:
        twin.close()
    (call,) = engine.calls
    (turn,) = call["turns"]  # the conversation two days ago is another session
    now = datetime.now(ZoneInfo("Asia/Tokyo"))
    assert turn.time.startswith(f"{now:%A} ") and turn.time.endswith("2 days since the last message")
    assert turn.messages == ("привет! 你好",)


def test_a_time_zone_that_does_not_exist_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValidationError, match="TWIN_TIME_ZONE='Mars/Olympus' is not a time zone"):
        Settings(data_dir=tmp_path, time_zone="Mars/Olympus", _env_file=None)
    assert Settings(data_dir=tmp_path, _env_file=None).zone is None  # empty: this machine's zone


def test_twin_chat_marks_its_first_line_with_the_time_it_was_said(tmp_path):
    import asyncio

    from engine.chat import ChatRoles, chat

    engine = EngineDouble()
    lines = iter(["hi", "how are you?", ""])
    roles = ChatRoles("olga", "bob", None, Clock(BERLIN))
    asyncio.run(chat(engine, roles, lambda: next(lines), lambda _: None))
    first, second = engine.calls[0]["turns"][0], engine.calls[1]["turns"][-1]
    assert first.time.startswith(datetime.now(BERLIN).strftime("%A ")) and second.time == ""
