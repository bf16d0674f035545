"""Sessions → training examples: token ids, a loss mask, and who spoke each token.

A session that fits `max_len` is one example whose loss mask is the format's mask (every speaker's text and
end-of-turn, never headers). A longer session becomes windows: each window ends where the previous one
ended plus a stride, starts `context` tokens earlier (snapped forward to a turn header when one is near),
and has loss only on its new part — so every token is learned exactly once, always with context before it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from core.format import NO_MEMORY, ChatFormat, Rendered
from core.memory import memory_budget
from trainer.dataset import TrainingSession


@dataclass
class Example:
    """One window of one session. loss[i]=1: ids[i] is a target; speaker[i] indexes `personas`."""

    session_id: str
    ids: list[int]
    loss: list[int]
    speaker: list[int]
    personas: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_loss(self) -> int:
        return sum(self.loss)


def token_speakers(rendered: Rendered, n_turns: int) -> list[int]:
    """The turn index each token belongs to (BOS counts as the first turn)."""
    starts = rendered.turn_starts
    return [max(0, min(n_turns - 1, bisect_right(starts, i) - 1)) for i in range(len(rendered.ids))]


def window_bounds(n: int, turn_starts: list[int], max_len: int, context: float) -> list[tuple[int, int, int]]:
    """(start, new_from, end) per window: ids[start:end] is fed, loss only on [new_from, end)."""
    if n <= max_len:
        return [(0, 0, n)]
    stride = max(1, max_len - int(max_len * context))
    bounds, new_from, end = [], 0, max_len
    while True:
        start = max(0, end - max_len)
        # Prefer a context that begins at a speaker header over one that begins mid-message.
        k = bisect_left(turn_starts, start)
        if k < len(turn_starts) and turn_starts[k] <= new_from:
            start = turn_starts[k]
        bounds.append((start, new_from, end))
        if end >= n:
            return bounds
        new_from, end = end, min(n, end + stride)


def session_examples(
    fmt: ChatFormat,
    session: TrainingSession,
    max_len: int,
    context: float,
    only: str | None = None,
    memory_tokens: int = 0,
) -> list[Example]:
    """A session's windows as examples (one example when it fits). `only`: loss on that persona's turns
    alone (the others stay as context), instead of on every speaker's. With a memory block (the session's
    recalled exchanges, up to `memory_tokens`), every window begins with it, as every prompt does."""
    # A quarter of a window at most: the conversation itself must still fit beside it.
    budget = memory_budget(memory_tokens, max_len)
    memory = fmt.memory(session.recalled, budget) if session.recalled and budget else NO_MEMORY
    rendered = fmt.render(session.turns, memory)
    personas = tuple(t.speaker for t in session.turns)
    speakers = token_speakers(rendered, len(personas))
    learned = [only is None or p == only for p in personas]
    # Without memory windows cut the whole rendering; with it, the part after it (BOS + memory lead each).
    lead = rendered.prefix_len if memory.ids else 0
    body_starts = [s - lead for s in rendered.turn_starts]
    out = []
    for start, new_from, end in window_bounds(len(rendered.ids) - lead, body_starts, max_len - lead, context):
        keep = list(range(lead)) + list(range(lead + start, lead + end))
        loss = [rendered.mask[i] if i - lead >= new_from and learned[speakers[i]] else 0 for i in keep]
        ids = [rendered.ids[i] for i in keep]
        out.append(Example(session.id, ids, loss, [speakers[i] for i in keep], personas))
    return out


def build_examples(
    fmt: ChatFormat,
    sessions: Iterable[TrainingSession],
    max_len: int,
    context: float,
    only: str | None = None,
    memory_tokens: int = 0,
) -> Iterator[Example]:
    for session in sessions:
        yield from session_examples(fmt, session, max_len, context, only, memory_tokens)
