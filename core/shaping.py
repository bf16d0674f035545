"""What may happen to a reply between the model and Telegram: habits of people who chat.

A model trained on chats still writes like a document now and then. People do not:
- **paragraphs**: a part after a blank line is its own message (people press Send, not Enter twice);
- **repeats**: a sentence or line already said in this reply is not said again;
- **burst**: a burst is no longer than the persona usually sends (`most`).

Each step is a knob (TWIN_REPLY_SHAPING) because each must earn its place on real chats: bench/shaping.py
applies every step to the same replies of a bench run and measures the discriminator with its interval. On
the embedded model none moved it beyond the noise, so all are off by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

STEPS = ("paragraphs", "repeats", "burst")
# A blank line (spaces allowed) between two parts of one message.
_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
# Within a line, a sentence ends at . ! ? … and a space, or at a CJK full stop, question or exclamation mark.
_SENTENCE = re.compile(r"(?<=[.!?…])[ \t]+|(?<=[。！？])")
# What two sayings of one sentence may differ in: case, spacing and the marks around the words.
_NOISE = re.compile(r"[\W_]+")


def parse_steps(listed: str) -> tuple[str, ...]:
    """The steps of a comma list ("paragraphs, repeats"), in STEPS order; "off" and "" are none. ValueError
    names a step there is not."""
    named = {part.strip().lower() for part in listed.split(",")} - {"", "off", "none"}
    unknown = named - set(STEPS)
    if unknown:
        raise ValueError(f"unknown step {', '.join(sorted(unknown))}: use any of {', '.join(STEPS)}")
    return tuple(step for step in STEPS if step in named)


def split_paragraphs(messages: Iterable[str]) -> list[str]:
    """Every blank-line-separated part of a message as a message of its own."""
    return [part.strip() for m in messages for part in _PARAGRAPH.split(m) if part.strip()]


def _key(sentence: str) -> str:
    return _NOISE.sub(" ", sentence.casefold()).strip()


def drop_repeats(messages: Iterable[str]) -> list[str]:
    """Each message without the sentences already said earlier in the reply; a message left empty goes.
    Sentences with no letters or digits (")", "...", an emoji alone) are never a repeat."""
    seen: set[str] = set()
    kept = []
    for message in messages:
        lines = []
        for line in message.split("\n"):
            said = []
            for sentence in _SENTENCE.split(line):
                key = _key(sentence)
                if key and key in seen:
                    continue
                seen.add(key)
                said.append(sentence.strip())
            if said or not line.strip():  # a blank line stays where it was
                lines.append(_joined([x for x in said if x]))
        text = "\n".join(lines).strip()
        if text:
            kept.append(re.sub(r"\n{3,}", "\n\n", text))
    return kept


def _joined(sentences: Sequence[str]) -> str:
    """Sentences back into a line: a space between them, none after a CJK mark (as they were written)."""
    return "".join(s if i == 0 or sentences[i - 1][-1] in "。！？" else " " + s for i, s in enumerate(sentences))


def cap_burst(messages: Sequence[str], most: int) -> list[str]:
    """The first `most` messages (all of them when `most` is 0)."""
    return list(messages[:most]) if most > 0 else list(messages)


def shape(messages: Sequence[str], steps: Iterable[str], most: int = 0) -> list[str]:
    """`messages` after each of `steps` (of STEPS), always in the order paragraphs → repeats → burst."""
    wanted = set(steps)
    unknown = wanted - set(STEPS)
    if unknown:
        raise ValueError(f"unknown reply shaping step {sorted(unknown)}: use any of {', '.join(STEPS)}")
    shaped = list(messages)
    if "paragraphs" in wanted:
        shaped = split_paragraphs(shaped)
    if "repeats" in wanted:
        shaped = drop_repeats(shaped)
    if "burst" in wanted:
        shaped = cap_burst(shaped, most)
    return shaped


def usual_burst(sizes: Sequence[int], share: float = 0.9) -> int:
    """The burst length a persona stays within `share` of the time (their messages per turn), at least 1;
    0 (no cap) when there are no turns to tell."""
    if not sizes:
        return 0
    ordered = sorted(sizes)
    return max(1, ordered[max(0, math.ceil(share * len(ordered)) - 1)])  # the nearest-rank percentile
