"""Style statistics of replies (bursts of messages) and one distance between two sets of them.

Pure functions over `list[list[str]]`: each reply is the burst of messages a persona sent in one turn. The
same statistics describe the persona's real held-out replies and the replies a model generated on the same
contexts, so the two can be compared feature by feature and summed up in one style distance:

    distance = mean of |share_a - share_b| over the habit shares, the total-variation distances of the
               message-length and messages-per-burst histograms, and the share of replies the engine
               dropped as degenerate                                      (0 = the same style, 1 = opposite)
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

Replies = Sequence[Sequence[str]]

# Message length bins (characters): one-word answers, short lines, sentences, paragraphs.
LENGTH_BINS = (5, 15, 40, 100)
LENGTH_LABELS = ("1-5", "6-15", "16-40", "41-100", "101+")
BURST_LABELS = ("1", "2", "3", "4+")
# The habits compared as shares; each is a share of messages except `question` (a share of replies).
HABITS = ("question", "emoji", "period_end", "exclaim", "ellipsis", "lowercase_start", "bracket_smile", "script")

_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\ufe0f\u200d\U0001f1e6-\U0001f1ff]")
_TRAILING = re.compile(r"[\s\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d)(]+$")  # emoji/smiles after a '?'
# A phrase of 3 words said twice in one reply is how a small model loops ("i think i think i think"); people
# rarely repeat 3 words within one burst. Measured as a share of replies, shown beside the style (not in it).
REPEAT_WORDS = 3
_WORD = re.compile(r"\w+")
# What an assistant says and a person in a chat does not: a twin saying these has fallen back to its base
# model's training. Lowercase, with a plain apostrophe; matched inside the lowercased reply.
ASSISTANT_PHRASES = (
    "i'm here to help",
    "i am here to help",
    "as an ai",
    "as a language model",
    "i'm an ai",
    "i am an ai",
    "how can i help you",
    "how can i assist",
    "i'm sorry, but i",
    "feel free to ask",
    "i hope this helps",
    "я здесь, чтобы помочь",
    "как ии",
    "как языковая модель",
    "я языковая модель",
    "чем могу помочь",
    "我是一个人工智能",
    "作为一个ai",
    "作为ai",
)
_SCRIPT_NAMES = {"CJK": "Han", "HIRAGANA": "Kana", "KATAKANA": "Kana"}


@lru_cache(maxsize=4096)
def script_of(ch: str) -> str | None:
    """A letter's script (Latin, Cyrillic, Han, Kana, Hangul, Arabic, ...); None for anything else."""
    if not ch.isalpha():
        return None
    first = unicodedata.name(ch, "").split(" ", 1)[0]
    return _SCRIPT_NAMES.get(first, first.title() or None)


def scripts(texts: Sequence[str]) -> Counter[str]:
    """Letters per script over `texts`."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(s for s in map(script_of, text) if s)
    return counts


def dominant_script(replies: Replies) -> str | None:
    counts = scripts([m for r in replies for m in r])
    return counts.most_common(1)[0][0] if counts else None


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _bins(values: Sequence[int], edges: Sequence[int]) -> list[float]:
    """Shares of `values` in each bin: ≤ edges[0], ≤ edges[1], ..., above the last edge."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[next((i for i, e in enumerate(edges) if v <= e), len(edges))] += 1
    total = sum(counts)
    return [round(c / total, 4) if total else 0.0 for c in counts]


def ends_in_question(reply: Sequence[str]) -> bool:
    """The burst's last message ends with a question mark (emoji and smiles after it do not count)."""
    return bool(reply) and _TRAILING.sub("", reply[-1]).endswith(("?", "？"))


def _starts_lowercase(message: str) -> bool | None:
    first = next((ch for ch in message if ch.isalpha()), None)
    return None if first is None or first.lower() == first.upper() else first.islower()


def repeats_a_phrase(reply: Sequence[str], words: int = REPEAT_WORDS) -> bool:
    """Some run of `words` words occurs twice in the burst (case folded, punctuation ignored)."""
    tokens = [w for m in reply for w in _WORD.findall(m.casefold())]
    grams = [tuple(tokens[i : i + words]) for i in range(len(tokens) - words + 1)]
    return len(set(grams)) < len(grams)


def says_assistant_phrase(reply: Sequence[str]) -> bool:
    """The burst says something only an assistant says ("I'm here to help", "as an AI", ...)."""
    text = " ".join(reply).casefold().replace("\u2019", "'")
    return any(phrase in text for phrase in ASSISTANT_PHRASES)


def style_stats(replies: Replies, script: str | None = None) -> dict:
    """The style of a set of replies. `script`: whose share of letters to measure (default: their own
    dominant script); empty replies (nothing sent) count in `n_replies` and `empty_share` only."""
    sent = [list(r) for r in replies if r]
    messages = [m for r in sent for m in r]
    script = script or dominant_script(sent)
    letters = scripts(messages)
    lengths = [len(m) for m in messages]
    lowercase = [flag for flag in map(_starts_lowercase, messages) if flag is not None]
    return {
        "n_replies": len(replies),
        "n_messages": len(messages),
        "empty_share": _share([not r for r in replies]),
        "length_mean": round(statistics.fmean(lengths), 2) if lengths else None,
        "length_median": statistics.median(lengths) if lengths else None,
        "length_bins": _bins(lengths, LENGTH_BINS),
        "burst_mean": round(statistics.fmean(len(r) for r in sent), 3) if sent else None,
        "burst_bins": _bins([len(r) for r in sent], (1, 2, 3)),
        "question": _share([ends_in_question(r) for r in sent]),
        "emoji": _share([bool(_EMOJI.search(m)) for m in messages]),
        "period_end": _share([m.rstrip().endswith(".") and not m.rstrip().endswith("..") for m in messages]),
        "exclaim": _share(["!" in m for m in messages]),
        "ellipsis": _share(["..." in m or "…" in m for m in messages]),
        "lowercase_start": _share(lowercase),
        "bracket_smile": _share([m.rstrip().endswith((")", "(")) for m in messages]),
        "script_name": script,
        "script": round(letters[script] / sum(letters.values()), 4) if script and letters else None,
        # Failure signs beside the style, not part of the distance (real replies have next to none of them).
        "repeated_ngrams": _share([repeats_a_phrase(r) for r in sent]),
        "assistant": _share([says_assistant_phrase(r) for r in sent]),
    }


def _tv(a: Sequence[float], b: Sequence[float]) -> float:
    """Total-variation distance between two histograms of shares (0 = equal, 1 = disjoint)."""
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))


def style_components(generated: dict, real: dict) -> dict[str, float] | None:
    """Per-feature distances between generated and real `style_stats` (None without real replies). Replies
    the engine dropped count as a difference of their own; a model that sent nothing is as far as can be."""
    if not real["n_messages"] or not generated["n_replies"]:
        return None
    if not generated["n_messages"]:
        return {"dropped": 1.0}
    parts = {
        "length": _tv(generated["length_bins"], real["length_bins"]),
        "burst": _tv(generated["burst_bins"], real["burst_bins"]),
        "dropped": generated["empty_share"] or 0.0,
    }
    for habit in HABITS:
        if generated.get(habit) is not None and real.get(habit) is not None:
            parts[habit] = abs(generated[habit] - real[habit])
    return {k: round(v, 4) for k, v in parts.items()}


def style_distance(generated: dict, real: dict) -> float | None:
    """One number for how far generated replies are from the real ones (mean of the components)."""
    parts = style_components(generated, real)
    return round(statistics.fmean(parts.values()), 4) if parts else None
