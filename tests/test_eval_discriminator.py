"""The discriminator accuracy: near 0.5 for replies from one source, near 1.0 for an assistant's replies."""

from __future__ import annotations

import random

from evaluation.discriminator import discriminator, discriminator_accuracy, wilson_interval, with_interval

WORDS = "ok lol same brb yeah nah idk maybe tmrw later cool nice wait what omg haha sure fine tho rn ngl".split()
ENDINGS = ("", "", "", ")", "?", " 😂", "!!", "...")
TOPICS = ("time management", "learning a language", "cooking pasta", "saving money", "sleeping better", "running")


def chat_replies(n: int, seed: int) -> list[list[str]]:
    """Bursts of 1-3 short lowercase chat lines, the way people text."""
    rng = random.Random(seed)
    line = lambda: " ".join(rng.choices(WORDS, k=rng.randint(1, 5))) + rng.choice(ENDINGS)  # noqa: E731
    return [[line() for _ in range(rng.randint(1, 3))] for _ in range(n)]


def assistant_replies(n: int, seed: int) -> list[list[str]]:
    """One long capitalised paragraph ending in a question, the way a base model answers."""
    rng = random.Random(seed)
    return [
        [
            f"Certainly! Here are a few thoughts on {rng.choice(TOPICS)}. It is important to set clear goals, "
            f"track your progress and stay consistent over {rng.randint(2, 12)} weeks. "
            "Would you like me to go into more detail on any of these points?"
        ]
        for _ in range(n)
    ]


def test_replies_from_one_pool_cannot_be_told_apart():
    pool = chat_replies(160, seed=1)
    assert discriminator_accuracy(pool[:80], pool[80:]) <= 0.65


def test_assistant_paragraphs_are_told_from_chat_lines():
    assert discriminator_accuracy(chat_replies(40, seed=2), assistant_replies(40, seed=3)) >= 0.9


def test_a_larger_side_is_sampled_down_so_guessing_the_majority_does_not_score():
    pool = chat_replies(220, seed=4)
    # Unbalanced, always answering "generated" would score 200/220 = 0.91.
    assert discriminator_accuracy(pool[:20], pool[20:]) <= 0.7


def test_too_few_replies_on_either_side_say_nothing():
    assert discriminator_accuracy(chat_replies(4, seed=5), chat_replies(30, seed=6)) is None
    assert discriminator_accuracy(chat_replies(30, seed=5), chat_replies(4, seed=6), folds=5) is None
    assert discriminator_accuracy(chat_replies(4, seed=5), chat_replies(4, seed=6), folds=3) is not None


def test_dropped_generated_replies_are_left_out():
    real, generated = chat_replies(30, seed=7), assistant_replies(30, seed=8)
    with_dropped = generated + [[]] * 50 + [[""]] * 5
    assert discriminator_accuracy(real, with_dropped) == discriminator_accuracy(real, generated)
    assert discriminator_accuracy(real[:10], [[]] * 30 + generated[:4]) is None  # 4 left: too few for 5 folds


def test_the_wilson_interval_matches_the_textbook_and_narrows_with_more_replies():
    assert wilson_interval(0, 10) == (0.0, 0.2775)  # the textbook's 0 of 10
    low, high = wilson_interval(16, 32)  # 16 replies a side at chance: about ±0.17, as the issue measured
    assert 0.16 <= (high - low) / 2 <= 0.18
    low, high = wilson_interval(100, 200)  # 100 a side: about ±0.07
    assert 0.06 <= (high - low) / 2 <= 0.075
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] > 0.65


def test_the_accuracy_comes_with_its_interval_over_every_pooled_prediction():
    figure = discriminator(chat_replies(40, seed=2), assistant_replies(60, seed=3))
    assert figure.n == 80  # 40 a side, each predicted once by the fold that left it out
    low, high = figure.interval
    assert low <= figure.value <= high and figure.value >= 0.9
    assert figure.as_dict() == {"accuracy": figure.value, "low": low, "high": high, "n": 80}
    assert with_interval(figure.value, figure.interval) == f"{figure.value:.2f} [{low:.2f}, {high:.2f}]"
    assert with_interval(None, None) == "—"
