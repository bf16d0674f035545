"""Sessions: a dialog's messages cut where the silence exceeds the session gap, bursts merged into turns.

Pure functions over plain message dicts (as storage returns them), shared by import, collector, trainer
and the bot, so every part agrees on where a conversation starts and who said what.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from core.format import ChatTurn
from core.personas import slug_base
from core.timemarks import Clock, turn_marks

# About 5% of sessions are held out for evaluation, chosen by a hash of the id so a session never moves.
EVAL_PER_MILLE = 50


@dataclass
class Turn:
    """Consecutive messages of one speaker (a burst). `messages` keeps each message apart."""

    speaker_id: int
    messages: list[str] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    dates: list[int] = field(default_factory=list)  # each message's, unix seconds


def split_by_gap(messages: Sequence[dict[str, Any]], gap_seconds: float) -> list[list[dict[str, Any]]]:
    """Cut date-ordered messages wherever two neighbours are more than `gap_seconds` apart."""
    sessions: list[list[dict[str, Any]]] = []
    for msg in messages:
        if sessions and msg["date"] - sessions[-1][-1]["date"] <= gap_seconds:
            sessions[-1].append(msg)
        else:
            sessions.append([msg])
    return sessions


def has_text(msg: dict[str, Any]) -> bool:
    """What sessions are cut from: messages with text. Media-only and service messages (stored by the
    collector, skipped by an import) neither start nor stretch a session, so both sources cut the same."""
    return bool(msg.get("text") and msg["text"].strip())


def is_trainable(msg: dict[str, Any]) -> bool:
    """Only a person's own words train the twin: no forwards, no empty (media-only) messages."""
    return has_text(msg) and not msg.get("forwarded")


def merge_bursts(messages: Iterable[dict[str, Any]]) -> list[Turn]:
    """Consecutive trainable messages of one sender become one turn that keeps its message boundaries."""
    turns: list[Turn] = []
    for msg in messages:
        if not is_trainable(msg):
            continue
        date = msg.get("date", 0)
        if turns and turns[-1].speaker_id == msg["sender_id"]:
            turns[-1].messages.append(msg["text"])
            turns[-1].message_ids.append(msg["id"])
            turns[-1].dates.append(date)
        else:
            turns.append(Turn(msg["sender_id"], [msg["text"]], [msg["id"]], [date]))
    return turns


def to_chat_turns(
    turns: Sequence[Turn],
    slug_of: Mapping[int, str],
    scrub: Callable[[str], str] | None = None,
    clock: Clock | None = None,
) -> list[ChatTurn]:
    """Speaker ids → persona slugs (and, for training text, scrubbed messages): the turns the format renders,
    with their time marks when a `clock` is given (`turns` then begin a conversation).

    The trainer and the bot both go through here, so a stored session and a live chat read the same. A
    speaker storage does not know yet (a new group member) is named by id, as `slug_base` would name them.
    """
    spans = [(t.dates[0], t.dates[-1]) for t in turns] if clock else []
    marks = turn_marks(spans, clock.zone, clock.since_previous) if clock else [""] * len(turns)
    return [
        ChatTurn(
            speaker=slug_of.get(turn.speaker_id) or slug_base(None, None, turn.speaker_id),
            messages=tuple(scrub(m) for m in turn.messages) if scrub else tuple(turn.messages),
            time=mark,
        )
        for turn, mark in zip(turns, marks, strict=True)
    ]


def live_turns(
    rows: Sequence[dict[str, Any]],
    slug_of: Mapping[int, str],
    gap_seconds: float,
    max_turns: int,
    zone: ZoneInfo | None = None,
    marked: bool = False,
) -> list[ChatTurn]:
    """A live chat's latest conversation (messages oldest first) as a prompt has it: cut and merged as
    stored sessions are, its last `max_turns` turns. `marked`: time-marked as the trainer marks a session,
    before the cut (the pause since the conversation before, when `rows` reach back to it)."""
    if not rows:
        return []
    conversations = split_by_gap(rows, gap_seconds)
    clock = None
    if marked:
        since = conversations[-1][0]["date"] - conversations[-2][-1]["date"] if len(conversations) > 1 else None
        clock = Clock(zone, since)
    return to_chat_turns(merge_bursts(conversations[-1]), slug_of, clock=clock)[-max_turns:]


def session_id(dialog_id: int, first_message_id: int) -> str:
    return f"{dialog_id}-{first_message_id}"


def split_of(sid: str) -> str:
    """'eval' for a stable ~5% of session ids, else 'train'."""
    bucket = int.from_bytes(hashlib.sha256(sid.encode()).digest()[:4], "big") % 1000
    return "eval" if bucket < EVAL_PER_MILLE else "train"


def turns_and_hash(messages: Iterable[dict[str, Any]]) -> tuple[int, str]:
    """How many turns `merge_bursts` makes of messages that all have text, and a hash of who said what in them
    (to recognise the same conversation under another id: leak checks). One pass and no Turn objects: an
    import cuts every session of an account through here. Stored hashes depend on its layout: per turn the
    speaker's id, each message as 0x1f + text, then 0x1e (UTF-8)."""
    h = hashlib.sha256()
    n_turns, speaker = 0, None
    for msg in messages:
        if msg.get("forwarded"):  # not anyone's words (is_trainable); the text is there already
            continue
        if not n_turns or msg["sender_id"] != speaker:
            speaker = msg["sender_id"]
            h.update(b"\x1e" + str(speaker).encode() if n_turns else str(speaker).encode())
            n_turns += 1
        h.update(b"\x1f" + msg["text"].encode())
    if n_turns:
        h.update(b"\x1e")
    return n_turns, h.hexdigest()


def closed_before(now: float, gap_seconds: float) -> float:
    """A session whose last message is older than this is closed: no later message can join it, so it is safe
    to train on. Readers decide it from the session's end and the current time (a dialog that goes quiet is
    never rebuilt, so a flag stored when it was rebuilt would keep its last conversation open forever)."""
    return now - gap_seconds


def session_rows(
    dialog_id: int, messages: Sequence[dict[str, Any]], gap_seconds: float, now: float
) -> list[dict[str, Any]]:
    """The storage rows of a dialog's sessions (cut from the messages with text). `closed` is as of `now`;
    readers of stored rows decide it again with `closed_before`."""
    rows = []
    for chunk in split_by_gap([m for m in messages if has_text(m)], gap_seconds):
        n_turns, digest = turns_and_hash(chunk)
        sid = session_id(dialog_id, chunk[0]["id"])
        rows.append(
            {
                "id": sid,
                "dialog_id": dialog_id,
                "first_message_id": chunk[0]["id"],
                "last_message_id": chunk[-1]["id"],
                "start": chunk[0]["date"],
                "end": chunk[-1]["date"],
                "n_messages": len(chunk),
                "n_turns": n_turns,
                "closed": int(chunk[-1]["date"] < closed_before(now, gap_seconds)),
                "split": split_of(sid),
                "content_hash": digest,
            }
        )
    return rows
