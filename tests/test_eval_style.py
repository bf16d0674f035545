"""Style statistics, the contexts and openers the report asks for, and the signature check: pure functions."""

from __future__ import annotations

import random

from core.format import ChatTurn
from evaluation.generate import opener_pairs, openers_for, probes_for
from evaluation.render import markdown
from evaluation.style import dominant_script, ends_in_question, style_components, style_distance, style_stats
from tests.conditioning import OWNER, SIGNATURES, probe_turns, signature_message, signature_of
from trainer.dataset import TrainingSession

REAL = [["ну да))", "го завтра"], ["ок"], ["а ты?"], ["щас", "5 мин", "ну или 10"]]
ASSISTANT = [["Hello! How can I help you today?"], ["That sounds great! What would you like to do?"]]


def test_style_stats_count_lengths_bursts_questions_and_habits():
    stats = style_stats(REAL + [[]])
    assert stats["n_replies"] == 5 and stats["n_messages"] == 7 and stats["empty_share"] == 0.2
    assert stats["burst_mean"] == 1.75 and stats["burst_bins"] == [0.5, 0.25, 0.25, 0.0]
    assert stats["question"] == 0.25  # one burst of four ends in "?"
    assert stats["lowercase_start"] == 1.0 and stats["bracket_smile"] == round(1 / 7, 4)
    assert stats["script_name"] == "Cyrillic" and stats["script"] == 1.0
    assert stats["length_bins"][:2] == [0.5714, 0.4286] and stats["length_median"] == 5


def test_a_question_mark_followed_by_emoji_or_a_smile_still_ends_in_a_question():
    assert ends_in_question(["ok", "ты где? 😂"]) and ends_in_question(["why?)"])
    assert not ends_in_question(["где ты? нет, понял"]) and not ends_in_question([])


def test_emoji_and_script_shares_are_measured_in_the_real_replies_script():
    real = style_stats([["привет 😂"], ["как дела"]])
    english = style_stats([["hello there"], ["hi 😂"]], real["script_name"])
    assert real["emoji"] == 0.5 and english["emoji"] == 0.5
    assert english["script_name"] == "Cyrillic" and english["script"] == 0.0
    assert dominant_script([["你好", "ok"]]) == "Han"


def test_style_distance_is_zero_for_the_same_replies_and_large_for_an_assistant():
    real = style_stats(REAL)
    assert style_distance(real, real) == 0.0
    assistant = style_stats(ASSISTANT, real["script_name"])
    parts = style_components(assistant, real)
    assert parts["question"] == 0.75 and parts["script"] == 1.0 and parts["lowercase_start"] == 1.0
    assert style_distance(assistant, real) > 0.4
    slightly_off = style_stats([["ну да))", "го завтра"], ["ок"], ["а ты"], ["щас", "5 мин"]], "Cyrillic")
    assert 0 < style_distance(slightly_off, real) < 0.15


def test_a_model_that_sends_nothing_is_as_far_as_can_be_and_dropped_replies_count():
    real = style_stats(REAL)
    assert style_distance(style_stats([[], []]), real) == 1.0
    half = style_stats(REAL[:2] + [[], []], "Cyrillic")
    assert style_components(half, real)["dropped"] == 0.5
    assert style_distance(real, style_stats([])) is None  # nothing real to compare with


def test_openers_are_english_plus_the_personas_language_and_played_both_ways():
    assert openers_for("Latin") == ["hey", "what's up?"]
    assert openers_for("Cyrillic") == ["hey", "what's up?", "привет", "как дела?"]
    assert openers_for(None) == ["hey", "what's up?"]
    assert opener_pairs("alice", ["alice", "bob", "carol"]) == [
        ("bob", "alice"),
        ("alice", "bob"),
        ("carol", "alice"),
        ("alice", "carol"),
    ]
    assert opener_pairs("alice", ["alice"]) == [("friend", "alice")]


def _session(sid: str, speakers: str) -> TrainingSession:
    turns = [ChatTurn(s, (f"{s} says {i}",)) for i, s in enumerate(speakers.split())]
    return TrainingSession(sid, 1, "eval", "h", 0, turns, list(range(len(turns))))


def test_probes_are_the_personas_turns_with_the_context_the_bot_would_send():
    sessions = [_session("1-1", "bob alice bob alice"), _session("1-9", "alice bob alice")]
    probes = probes_for(sessions, "alice", limit=10, context_turns=2)
    assert [(p.session_id, len(p.context), p.real) for p in probes] == [
        ("1-1", 1, ("alice says 1",)),
        ("1-1", 2, ("alice says 3",)),
        ("1-9", 2, ("alice says 2",)),
    ]
    assert probes[1].context[-1] == ChatTurn("bob", ("bob says 2",)) and probes[1].partner == "bob"
    assert len(probes_for(sessions, "alice", limit=2, context_turns=2)) == 2
    assert probes_for(sessions, "alice", 2, 2, seed=1) == probes_for(sessions, "alice", 2, 2, seed=1)


def test_every_persona_has_a_signature_nobody_else_uses():
    rng = random.Random(0)
    for persona in SIGNATURES:
        assert signature_of([signature_message(persona, rng)]) == persona
    assert signature_of(["apple", "banana"]) is None and signature_of([]) is None
    assert probe_turns("bob", rng)[0].speaker == OWNER and probe_turns(OWNER, rng)[0].speaker != OWNER


def test_the_markdown_page_opens_with_the_base_previous_current_table():
    fig = lambda loss: {"loss": loss, "ppl": 2.0, "per_persona": {"alice": loss}, "per_persona_ppl": {"alice": 2.0}}  # noqa: E731
    data = {
        "version": 3,
        "previous_version": 2,
        "created_at": 0,
        "base_model": "m",
        "engine": "vllm",
        "owner": "alice",
        "personas": ["alice"],
        "status": "ok",
        "leak": {"ok": True, "checked": 5, "lineage": [3, 2], "by_id": [], "by_hash": []},
        "loss": {"tokens": {"alice": 120}, "models": {"base": fig(3.0), "previous": fig(2.5), "current": fig(2.0)}},
        "style": {},
        "style_overall": {"current": {"distance": 0.1}},
    }
    lines = markdown(data, []).splitlines()
    assert lines[0] == "# Evaluation of adapter 0003" and lines[1] == ""
    assert lines[2] == "| persona | eval tokens | base | previous (0002) | current (0003) |"
    assert lines[4].startswith("| **all** | 120 | 3.000 · ppl 2.0 |")
    assert lines[4].endswith("| 2.000 · ppl 2.0 · style 0.10 |")
    assert lines[5].startswith("| alice (owner) | 120 | 3.000")


def test_the_markdown_page_shows_the_rounds_selfplay_stage_when_it_ran():
    data = {
        "version": 1,
        "created_at": 0,
        "base_model": "m",
        "leak": {"ok": True, "checked": 0, "lineage": [1], "by_id": [], "by_hash": []},
        "selfplay": {
            "pairs": 60,
            "dropped": 4,
            "drafts": 3,
            "iterations": 2,
            "beta": 0.1,
            "loss": 0.41,
            "margin": 0.9,
            "accuracy": 0.8,
        },
    }
    shown = [line for line in markdown(data, []).splitlines() if line.startswith("Self-play:")]
    assert shown == [
        "Self-play: 60 pairs (4 dropped; 3 contexts of your edited drafts) × 2 iterations, beta 0.1; "
        "final DPO loss 0.410, reward margin 0.900, "
        "real reply preferred in 80% of pairs."
    ]
    assert not [line for line in markdown({**data, "selfplay": None}, []).splitlines() if "Self-play" in line]


def test_replies_repeating_a_phrase_or_talking_like_an_assistant_are_counted_beside_the_style():
    replies = [
        ["я думаю что да", "я думаю что нет"],  # a 3-word phrase twice in one burst: a loop
        ["I'm here to help! What would you like to talk about?"],
        ["Как языковая модель, я не могу"],
        ["哈哈 好的", "明天见"],
        ["ok ok", "sure"],  # two words twice is not a 3-word phrase
    ]
    stats = style_stats(replies)
    assert stats["repeated_ngrams"] == 0.2 and stats["assistant"] == 0.4
    real = style_stats([["ok"], ["норм"]])
    assert style_components(stats, real).keys().isdisjoint({"repeated_ngrams", "assistant"})
