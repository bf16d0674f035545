"""How a reply is decoded: the sampling knobs, what a generation returns, and what counts as degenerate.

Shared by every engine so vLLM, a remote server and transformers decode a reply the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

# A loop is the same window of tokens three times in a row at the end of a generation that never reached
# its end-of-turn. Windows up to 16 tokens catch repeated phrases; 12 tokens at least, so "хахаха" is safe.
LOOP_MAX_PERIOD = 16
LOOP_MIN_TOKENS = 12
LOOP_REPEATS = 3
# The same message this many times in one burst is a loop that happened to end its turn.
SAME_MESSAGE_LIMIT = 3


@dataclass(frozen=True)
class Sampling:
    """Decoding knobs for one request. Defaults suit short chat messages (see core/settings.py for the why)."""

    temperature: float = 0.7  # 0 = greedy; 0.7 keeps the persona's usual words but varies replies
    top_p: float = 0.9  # cuts the long tail of unlikely tokens that sampling would otherwise pick up
    repetition_penalty: float = 1.0  # off: it also penalises the persona's own habitual words in the context
    max_new_tokens: int = 96  # a burst of a few short messages; a runaway reply costs at most this
    seed: int | None = None  # fixed seed: the same reply for the same prompt (tests, benches)
    logprobs: bool = False  # return each chosen token's log-probability (the smoke check needs it)
    min_p: float = 0.0  # off; else tokens below this share of the likeliest one are never picked
    shaping: tuple[str, ...] = ()  # core/shaping.py steps applied to the decoded messages (off: measured)
    max_messages: int = 0  # the `burst` step's cap (0: none)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def for_retry(self) -> Sampling:
        """A degenerate reply is retried once with sampling (and a mild penalty) to leave the loop."""
        return replace(
            self,
            temperature=max(self.temperature, 0.8),
            top_p=max(self.top_p, 0.95) if self.top_p < 1 else 1.0,
            repetition_penalty=max(self.repetition_penalty, 1.1),
            seed=None if self.seed is None else self.seed + 1,
        )


# Greedy and short: the smoke check compares a fixed prompt's tokens and log-probabilities.
PROBE = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8, logprobs=True)


@dataclass
class Generation:
    """What an engine generated for one prompt."""

    token_ids: list[int]  # the reply's tokens, maybe ending with the end-of-turn token
    finished: bool  # True: stopped at end-of-turn (or EOS); False: hit max_new_tokens
    logprobs: list[float] = field(default_factory=list)  # of each chosen token, when Sampling.logprobs


def loops_at_end(ids: Sequence[int]) -> bool:
    """True when the last tokens are one window repeated LOOP_REPEATS times (an endless repetition)."""
    for period in range(1, LOOP_MAX_PERIOD + 1):
        span = period * LOOP_REPEATS
        if span < LOOP_MIN_TOKENS:
            span = -(-LOOP_MIN_TOKENS // period) * period  # whole windows covering at least the minimum
        if span > len(ids):
            break
        tail = list(ids[-span:])
        if all(tail[i] == tail[i % period] for i in range(span)):
            return True
    return False


def degenerate_reason(gen: Generation, messages: Sequence[str]) -> str | None:
    """Why a generation is not a usable reply (None when it is): empty, only separators, or a loop."""
    if not messages:
        return "empty" if not gen.token_ids else "no text (only separators or special tokens)"
    if not gen.finished and loops_at_end(gen.token_ids):
        return "endless repetition"
    if Counter(messages).most_common(1)[0][1] >= SAME_MESSAGE_LIMIT:
        return "the same message repeated"
    return None
