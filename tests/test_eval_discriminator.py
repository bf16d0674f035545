"""The discriminator accuracy: near 0.5 for replies from one source, near 1.0 for an assistant's replies."""

from __future__ import annotations

import random

from evaluation.discriminator import discriminator_accuracy

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
