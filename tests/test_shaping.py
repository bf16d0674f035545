"""Reply shaping (core/shaping.py): what may happen to a reply before it is sent, in any script, and the
engine applying the steps TWIN_REPLY_SHAPING asks for (the model edge scripted, as in test_engine.py)."""

from __future__ import annotations

import pydantic
import pytest

from core.format import ChatFormat, ChatTurn
from core.settings import Settings
from core.shaping import cap_burst, drop_repeats, parse_steps, shape, split_paragraphs, usual_burst
from engine.build import reply_sampling
from tests.test_engine import ScriptedEngine, said


def test_a_part_after_a_blank_line_becomes_its_own_message_in_any_script():
    reply = ["Привет!\n\nКак дела?", "line one\nline two", "你好\n \n\n再见", "\n\n"]
    assert split_paragraphs(reply) == ["Привет!", "Как дела?", "line one\nline two", "你好", "再见"]


def test_a_sentence_said_again_in_a_reply_is_dropped_whatever_its_case_and_marks():
    reply = [
        "I would love to hear your thoughts. I would love to hear your thoughts! so what's up",
        "i WOULD love to hear your thoughts...",  # only a repeat: the message goes
        "Привет. Как дела? привет!",
        "你好。你好。再见",
        ")",
        ")",  # no letters: never a repeat (a smile twice is a habit, not a loop)
    ]
    assert drop_repeats(reply) == [
        "I would love to hear your thoughts. so what's up",
        "Привет. Как дела?",
        "你好。再见",
        ")",
        ")",
    ]


def test_a_burst_is_cut_at_the_cap_and_the_usual_burst_is_a_percentile_of_the_persons_turns():
    assert cap_burst(["a", "b", "c"], 2) == ["a", "b"]
    assert cap_burst(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert usual_burst([1, 1, 1, 1, 1, 2, 2, 2, 3, 9]) == 3  # the 90% of turns, not the one outlier
    assert usual_burst([]) == 0 and usual_burst([0]) == 1


def test_steps_run_in_a_fixed_order_and_unknown_ones_are_refused():
    reply = ["hey!\n\nhey!", "weekend was great. weekend was great.", "you?", "and then"]
    assert shape(reply, ["burst", "repeats", "paragraphs"], 2) == ["hey!", "weekend was great."]
    assert shape(reply, []) == reply
    assert parse_steps(" Repeats, paragraphs ,off") == ("paragraphs", "repeats")
    with pytest.raises(ValueError, match="unknown reply shaping step"):
        shape(reply, ["repeat"])


def test_twin_reply_shaping_names_a_wrong_step_and_the_ones_there_are():
    with pytest.raises(pydantic.ValidationError, match="unknown step repeat: use any of paragraphs, repeats, burst"):
        Settings(_env_file=None, reply_shaping="paragraphs,repeat")
    settings = Settings(_env_file=None, reply_shaping="repeats,burst", reply_max_messages=2, reply_min_p=0.05)
    sampling = reply_sampling(settings)
    assert (sampling.shaping, sampling.max_messages, sampling.min_p) == (("repeats", "burst"), 2, 0.05)
    assert reply_sampling(Settings(_env_file=None)).shaping == ()  # off by default


@pytest.fixture
def fmt(tiny_tokenizer) -> ChatFormat:
    return ChatFormat(tiny_tokenizer)


async def test_the_engine_shapes_a_reply_it_sends_and_a_retried_one_alike(fmt):
    settings = Settings(_env_file=None, reply_shaping="paragraphs,repeats,burst", reply_max_messages=3)
    rambling = said(fmt, "so good!\n\nwe went hiking. we went hiking.", "Ты как?", "ok", "and you")
    loop = said(fmt, "ha", "ha", "ha")  # degenerate: retried, and the retry is shaped too
    turns = [ChatTurn("friend", ("hey! how was your weekend?",))]
    engine = ScriptedEngine(fmt, {0: [rambling]}, reply_sampling(settings))
    assert await engine.reply(turns, "owner", "friend", None) == ["so good!", "we went hiking.", "Ты как?"]
    engine = ScriptedEngine(fmt, {0: [loop, said(fmt, "我们去了。我们去了。", "好")]}, reply_sampling(settings))
    assert await engine.reply(turns, "owner", "friend", None) == ["我们去了。", "好"]
    plain = ScriptedEngine(fmt, {0: [rambling]}, reply_sampling(Settings(_env_file=None)))
    assert await plain.reply(turns, "owner", "friend", None) == [
        "so good!\n\nwe went hiking. we went hiking.",
        "Ты как?",
        "ok",
        "and you",
    ]
