"""The bot's conversations through the real Dispatcher (only the Bot API session and the engine faked)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.chats import ENGINE_FAILED
from bot.conversation import conversation_turns
from bot.delivery import split_text
from core.format import ChatTurn
from tests.bot_fakes import OWNER, TOKEN, TwinUnderTest, unix

FRIEND, STRANGER = 2000, 3000


@pytest.fixture
def twin(tmp_path):
    t = TwinUnderTest(tmp_path / "data")
    t.store.upsert_people(
        [{"id": OWNER, "first_name": "Olga", "username": "olga"}, {"id": FRIEND, "first_name": "Sasha"}]
    )
    t.store.allow(user_id=FRIEND)
    yield t
    t.close()


async def test_owner_hey_gets_the_twin_reply_with_typing_shown(twin):
    await twin.say(OWNER, "hey")
    assert twin.session.texts(OWNER) == ["olga re: hey"]
    assert twin.session.calls("sendChatAction", OWNER)[0].data["action"] == "typing"
    call = twin.engine.calls[0]
    assert call["persona"] == "olga" and call["partner"] == "friend"  # the owner talks to their own twin


async def test_replies_are_stored_apart_from_training_data(twin):
    await twin.say(FRIEND, "hi there")
    rows = twin.store.recent_bot_messages(FRIEND, since=0)
    assert [(r["speaker"], r["from_twin"], r["text"]) for r in rows] == [
        ("sasha", 0, "hi there"),
        ("olga", 1, "olga re: hi there"),
    ]
    assert twin.store.counts()["messages"] == 0


async def test_a_burst_reply_goes_out_as_separate_messages(twin):
    twin.engine.answer = lambda turns, persona: ["one", "two", "three"]
    await twin.say(FRIEND, "tell me")
    assert twin.session.texts(FRIEND) == ["one", "two", "three"]


async def test_typing_pause_before_each_further_message(tmp_path):
    twin = TwinUnderTest(tmp_path / "data", bot_typing_delay=0.05)
    twin.store.allow(user_id=FRIEND)
    twin.engine.answer = lambda turns, persona: ["one", "two"]
    await twin.say(FRIEND, "hi")
    sent = [s for s in twin.session.sent if s.data.get("chat_id") == FRIEND]
    assert [s.method for s in sent][-3:] == ["sendMessage", "sendChatAction", "sendMessage"]
    assert sent[-1].at - sent[-2].at >= 0.015
    twin.close()


async def test_stranger_gets_no_model_output_and_silence_by_default(twin):
    await twin.say(STRANGER, "hello?")
    assert twin.engine.calls == [] and twin.session.sent == []
    assert twin.store.recent_bot_messages(STRANGER, since=0) == []


async def test_stranger_gets_the_polite_line_once(tmp_path):
    twin = TwinUnderTest(tmp_path / "data", bot_stranger_reply="This is a private bot.")
    await twin.say(STRANGER, "hello?")
    await twin.say(STRANGER, "anyone?")
    assert twin.session.texts(STRANGER) == ["This is a private bot."]
    assert twin.engine.calls == []
    twin.close()


async def test_allowlist_by_username_admits_and_deny_removes(twin):
    await twin.say(OWNER, "/allow @mira")
    await twin.say(4000, "hi", username="Mira", first_name="Мира")
    assert twin.session.texts(4000) == ["olga re: hi"]
    assert twin.engine.calls[-1]["partner"] == "mira"  # an unknown user is named from their first name
    await twin.say(OWNER, "/deny 4000")
    await twin.say(4000, "still there?", username="Mira")
    assert len(twin.session.texts(4000)) == 1


async def test_group_chats_are_ignored_unless_allowed(twin):
    await twin.say(FRIEND, "@twin_test_bot hi", chat_id=-500, chat_type="group")
    assert twin.engine.calls == []
    twin.store.allow(user_id=-500)
    await twin.say(STRANGER, "just chatting", chat_id=-500, chat_type="group")
    await twin.say(STRANGER, "@twin_test_bot what do you think?", chat_id=-500, chat_type="group")
    assert len(twin.engine.calls) == 1
    turns = twin.engine.calls[0]["turns"]
    assert turns == [ChatTurn("sasha", ("just chatting", "what do you think?"))]  # mention cut, burst merged


async def test_a_group_mention_is_the_bots_own_username_not_one_that_starts_with_it(twin):
    twin.store.allow(user_id=-500)
    await twin.say(FRIEND, "@twin_test_bot2 are you there?", chat_id=-500, chat_type="group")
    await twin.say(FRIEND, "ask @twin_test_bot_fan, or mail twin@twin_test_bot.org", chat_id=-500, chat_type="group")
    assert twin.engine.calls == []  # another bot, another user, an e-mail address: the twin was not addressed
    await twin.say(FRIEND, "👋 @twin_test_bot, and you?", chat_id=-500, chat_type="group")
    assert len(twin.engine.calls) == 1
    assert twin.engine.calls[0]["turns"][-1].messages[-1] == "👋 , and you?"  # cut where Telegram says it is


async def test_messages_during_a_reply_are_answered_next_in_order(twin):
    twin.engine.delay = 0.05
    for text in ("first", "second", "third"):
        await twin.feed(twin.update(FRIEND, text))
    await twin.settle()
    seen = [m for call in twin.engine.calls for m in call["turns"][-1].messages]
    assert seen == ["first", "second", "third"]  # each once, in order (later ones merged into one burst)
    assert twin.session.texts(FRIEND)[-1] == "olga re: third"


async def test_engine_failure_gets_one_short_line_and_the_bot_goes_on(twin, caplog):
    twin.engine.error = RuntimeError("CUDA out of memory")
    with caplog.at_level(logging.ERROR):
        await twin.say(FRIEND, "hi")
    assert twin.session.texts(FRIEND) == [ENGINE_FAILED]
    twin.engine.error = None
    await twin.say(FRIEND, "hi again")
    assert twin.session.texts(FRIEND)[-1] == "olga re: hi again"


async def test_engine_timeout_is_bounded(tmp_path):
    twin = TwinUnderTest(tmp_path / "data", bot_reply_timeout=0.1)
    twin.store.allow(user_id=FRIEND)
    twin.engine.delay = 30
    await twin.say(
        FRIEND,
        "hi",
    )
    assert twin.session.texts(FRIEND) == [ENGINE_FAILED]
    twin.close()


async def test_long_replies_are_split_under_telegram_limit(twin):
    long = ("word " * 2000).strip()
    twin.engine.answer = lambda turns, persona: [long]
    await twin.say(FRIEND, "essay please")
    pieces = twin.session.texts(FRIEND)
    assert len(pieces) == 3 and all(len(p) <= 4096 for p in pieces)
    assert " ".join(pieces) == long


def test_split_counts_utf16_units_and_keeps_surrogate_pairs():
    text = "😂" * 3000  # 6000 UTF-16 units
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in pieces)


async def test_flood_wait_is_honoured_and_the_message_still_goes_out(twin):
    twin.session.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    await twin.say(FRIEND, "hi")
    sends = twin.session.calls("sendMessage", FRIEND)
    assert len(sends) == 2 and sends[1].at - sends[0].at >= 1.0
    assert twin.session.texts(FRIEND) == ["olga re: hi", "olga re: hi"]  # the first was refused by Telegram


def test_conversation_starts_after_a_gap_and_merges_bursts():
    rows = [
        {"id": 1, "speaker": "sasha", "from_twin": 0, "text": "old", "date": 0},
        {"id": 2, "speaker": "sasha", "from_twin": 0, "text": "hi", "date": 10_000},
        {"id": 3, "speaker": "sasha", "from_twin": 0, "text": "you there?", "date": 10_010},
        {"id": 4, "speaker": "olga", "from_twin": 1, "text": "yes", "date": 10_020},
        {"id": 5, "speaker": "olga", "from_twin": 0, "text": "me, the owner", "date": 10_030},
    ]
    turns = conversation_turns(rows, persona="olga", gap_seconds=3600, max_turns=10)
    assert turns == [
        ChatTurn("sasha", ("hi", "you there?")),
        ChatTurn("olga", ("yes",)),
        ChatTurn("friend", ("me, the owner",)),
    ]


async def test_an_old_conversation_is_not_in_the_prompt(twin):
    twin.store.add_bot_message(FRIEND, FRIEND, "sasha", "yesterday's news", from_twin=False, date=unix(days_ago=1))
    await twin.say(FRIEND, "morning")
    assert twin.engine.calls[0]["turns"] == [ChatTurn("sasha", ("morning",))]


async def test_the_token_never_reaches_the_log(twin, caplog):
    from bot.secrets import hide_in_logs

    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        hide_in_logs(TOKEN)
        twin.session.fail("sendMessage", 400, f"Bad Request: https://api.telegram.org/bot{TOKEN}/sendMessage")
        with caplog.at_level(logging.INFO):
            await twin.say(FRIEND, "hi")
        formatted = "\n".join(handler.format(r) for r in caplog.records)
        assert "sendMessage" in formatted and TOKEN.split(":")[1] not in formatted
    finally:
        logging.getLogger().removeHandler(handler)


async def test_engine_calls_for_many_chats_run_concurrently(twin):
    for uid in range(5000, 5020):
        twin.store.allow(user_id=uid)
    twin.engine.delay = 0.2
    started = asyncio.get_running_loop().time()
    for uid in range(5000, 5020):
        await twin.feed(twin.update(uid, "hi"))
    await twin.settle()
    assert asyncio.get_running_loop().time() - started < 1.0
    assert all(twin.session.texts(uid) == ["olga re: hi"] for uid in range(5000, 5020))


async def test_commands_for_other_bots_in_a_group_are_not_conversation(twin):
    twin.store.allow(user_id=-500)
    await twin.say(FRIEND, "/start@other_bot", chat_id=-500, chat_type="group")
    await twin.say(FRIEND, "/dice", chat_id=-500, chat_type="group")
    assert twin.store.recent_bot_messages(-500, since=0) == []
    assert twin.session.calls("sendMessage") == []  # (a getMe checked the mention)


async def test_an_unknown_command_in_private_gets_a_hint_not_a_reply(twin):
    await twin.say(FRIEND, "/weather")
    assert twin.session.texts(FRIEND) == ["I don't know that command: /help lists the ones I know."]
    assert twin.engine.calls == []
