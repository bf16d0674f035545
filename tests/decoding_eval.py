"""Compare decoding settings on held-out conversations: what the twin says vs what the persona said.

For each held-out turn of the persona, the engine replies to the turns before it under each decoding, and
the reply is scored against the real one: chrF (character n-gram F-score, robust to short chat text and
any language), how often replies are dropped or retried, how many are distinct, and their length.
Run it with `python bench/engine.py --decoding --data-dir DATA` on a machine that serves the real model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.format import ChatTurn
from engine.base import AdapterRef, BaseEngine
from engine.decoding import Sampling

CHRF_ORDER = 6  # character n-grams up to 6, as in chrF (Popović 2015)
CHRF_BETA = 2.0  # recall weighs twice precision


def chrf(hypothesis: str, reference: str) -> float:
    """chrF in [0, 100] of one reply against the real one (whitespace ignored)."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, CHRF_ORDER + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    b2 = CHRF_BETA**2
    return 0.0 if p + r == 0 else 100 * (1 + b2) * p * r / (b2 * p + r)


def persona_turns(sessions: Iterable[Sequence[ChatTurn]], persona: str, limit: int) -> list[tuple[list, ChatTurn]]:
    """(context, real reply) pairs: every turn of `persona` that has something before it to answer."""
    pairs = []
    for turns in sessions:
        for k, turn in enumerate(turns):
            if k and turn.speaker == persona:
                pairs.append((list(turns[:k]), turn))
                if len(pairs) >= limit:
                    return pairs
    return pairs


@dataclass
class DecodingScore:
    name: str
    replies: int = 0
    dropped: int = 0
    retried: int = 0
    chrf_sum: float = 0.0
    chars: int = 0
    real_chars: int = 0
    messages: int = 0
    real_messages: int = 0
    texts: set = field(default_factory=set)

    def row(self) -> dict[str, float | str]:
        n = max(self.replies, 1)
        return {
            "decoding": self.name,
            "chrF": self.chrf_sum / n,
            "dropped %": 100 * self.dropped / n,
            "retried %": 100 * self.retried / n,
            "distinct %": 100 * len(self.texts) / n,
            "length vs real": self.chars / max(self.real_chars, 1),
            "messages vs real": self.messages / max(self.real_messages, 1),
        }


async def compare_decodings(
    engine: BaseEngine,
    pairs: Sequence[tuple[list[ChatTurn], ChatTurn]],
    adapter: AdapterRef | None,
    decodings: dict[str, Sampling],
) -> list[dict[str, float | str]]:
    """One row of scores per decoding; each reply goes through `engine.reply` (retry and drop included)."""
    rows = []
    for name, sampling in decodings.items():
        engine.sampling = sampling
        score = DecodingScore(name)
        for context, real in pairs:
            partner = next((t.speaker for t in reversed(context) if t.speaker != real.speaker), "friend")
            calls = _count_generate(engine)
            reply = await engine.reply(context, real.speaker, partner, adapter)
            score.replies += 1
            score.dropped += not reply
            score.retried += calls() > 1
            text, real_text = "\n".join(reply), "\n".join(real.messages)
            score.chrf_sum += chrf(text, real_text)
            score.chars, score.real_chars = score.chars + len(text), score.real_chars + len(real_text)
            score.messages, score.real_messages = score.messages + len(reply), score.real_messages + len(real.messages)
            score.texts.add(text)
        rows.append(score.row())
    return rows


def _count_generate(engine: BaseEngine):
    """Count the engine's generate calls for one reply (2 = it was retried); returns the counter."""
    inner = type(engine).generate
    count = [0]

    async def generate(prompt_ids, adapter, sampling):
        if not sampling.logprobs:  # the smoke check's probes are not replies
            count[0] += 1
        return await inner(engine, prompt_ids, adapter, sampling)

    engine.generate = generate
    return lambda: count[0]
