"""Time marks: when a conversation starts and how long a pause came before a turn, as the format shows them.

A mark is plain text in a `(time)` block (core.format renders it, mask 0: given, never produced):

    Saturday night, 23:40 · 3 days since the last message     when a session starts (owner's time zone)
    2 hours later                                             before a turn after a long pause

The trainer marks stored sessions, the bot and the drafts mark a live chat, both through `turn_marks`, so a
prompt reads as the sessions the adapter learned from. Turned on by TWIN_TIME_MARKS (core.settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import UserError

# Parentheses never occur in a persona slug, so no one can be "(time)" (like core.format's "(memory)").
TIME_HEADER = "(time)"
# A shorter pause is a chat's ordinary rhythm (people answer within minutes): no mark.
PAUSE_MARK_FROM_S = 20 * 60
# (upper bound in seconds, unit, seconds per unit): a pause is said in the largest unit that fits.
_UNITS = (
    (3600, "minute", 60),
    (86_400, "hour", 3600),
    (14 * 86_400, "day", 86_400),
    (61 * 86_400, "week", 7 * 86_400),
    (730 * 86_400, "month", 30 * 86_400),
    (float("inf"), "year", 365 * 86_400),
)
# (first hour, part of the day): what people greet by.
_PARTS = ((0, "night"), (5, "morning"), (12, "afternoon"), (17, "evening"), (22, "night"))


@dataclass(frozen=True)
class Clock:
    """Time marks on: the owner's zone (None: this machine's), and the pause since the conversation before
    (None: there was none, or it is not known)."""

    zone: ZoneInfo | None
    since_previous: float | None = None


def time_zone(name: str) -> ZoneInfo | None:
    """The owner's zone by IANA name ("Europe/Berlin"); "" is this machine's local zone (None)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"TWIN_TIME_ZONE={name!r} is not a time zone: use an IANA name like Europe/Berlin") from None


def duration(seconds: float) -> str:
    """A pause in words: '25 minutes', '1 hour', '3 days', '2 weeks', '4 months'."""
    for bound, unit, size in _UNITS:
        if seconds < bound:
            n = max(1, round(seconds / size))
            return f"{n} {unit}{'s' if n != 1 else ''}"
    raise AssertionError("unreachable: the last bound is infinite")


def part_of_day(hour: int) -> str:
    return next(part for first, part in reversed(_PARTS) if hour >= first)


def start_mark(when: int, zone: ZoneInfo | None, since_previous: float | None = None) -> str:
    """The mark of a conversation that starts at `when` (unix seconds), and how long after the one before."""
    local = datetime.fromtimestamp(when, zone)  # None: this machine's local time
    mark = f"{local:%A} {part_of_day(local.hour)}, {local:%H:%M}"
    if since_previous is not None:
        mark += f" · {duration(since_previous)} since the last message"
    return mark


def pause_mark(seconds: float) -> str:
    """The mark before a turn that came `seconds` after the one before ('' for the usual rhythm)."""
    return f"{duration(seconds)} later" if seconds >= PAUSE_MARK_FROM_S else ""


def turn_marks(
    spans: Sequence[tuple[int, int]], zone: ZoneInfo | None, since_previous: float | None = None
) -> list[str]:
    """Each turn's mark, from its (first, last) message dates: the first turn's is the conversation's start,
    every later one's the pause since the turn before ended."""
    return [
        start_mark(first, zone, since_previous) if i == 0 else pause_mark(first - spans[i - 1][1])
        for i, (first, _) in enumerate(spans)
    ]
