"""Training data from storage: closed sessions as scrubbed chat turns, and their JSONL export.

Only closed sessions of dialogs the owner has not excluded are read: an open session may still grow, and
training on half of it would teach the model to stop mid-conversation. Every message is scrubbed here,
before any text leaves storage for a trainer or a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from core.errors import UserError
from core.format import ChatTurn, Recalled
from core.scrub import Scrubber
from core.sessions import merge_bursts, to_chat_turns
from core.settings import HOW_TO_GET, Settings
from core.timemarks import Clock
from storage import Storage

Split = Literal["train", "eval", "all"]
SPLITS = ("train", "eval", "all")
# A session needs a reply to teach anything: one speaker talking alone is not a conversation.
MIN_TURNS = 2


@dataclass
class TrainingSession:
    """One closed session, ready for the conversation format. `speaker_ids[i]` said `turns[i]`."""

    id: str
    dialog_id: int
    split: str
    content_hash: str
    start: int
    turns: list[ChatTurn]
    speaker_ids: list[int]
    recalled: tuple[Recalled, ...] = ()  # its memory block's exchanges (trainer.memory), best first
    message_ids: list[tuple[int, ...]] = field(default_factory=list)  # the stored ids of each turn's messages


def load_session(
    store: Storage,
    session: dict[str, Any],
    slug_of: Mapping[int, str],
    scrub: Callable[[str], str],
    clock: Clock | None = None,
) -> TrainingSession:
    """A stored session → its turns: bursts merged (no forwards, no media-only), personas named, scrubbed,
    time-marked when a `clock` is given."""
    turns = merge_bursts(store.session_messages(session))
    return TrainingSession(
        id=session["id"],
        dialog_id=session["dialog_id"],
        split=session["split"],
        content_hash=session["content_hash"],
        start=session["start"],
        turns=to_chat_turns(turns, slug_of, scrub, clock),
        speaker_ids=[t.speaker_id for t in turns],
        message_ids=[tuple(t.message_ids) for t in turns],
    )


@dataclass(frozen=True)
class SessionRef:
    """A closed session as storage lists it, no message read: what a round is planned on."""

    id: str
    split: str
    content_hash: str


def closed_sessions(store: Storage, settings: Settings, split: Split) -> list[dict[str, Any]]:
    """Stored rows of the closed sessions in `split` (closed as of now: see core.sessions.closed_before)."""
    gap = settings.session_gap_seconds
    return store.sessions(closed=True, split=None if split == "all" else split, gap_seconds=gap)


def session_refs(store: Storage, settings: Settings, split: Split = "train") -> list[SessionRef]:
    """The sessions `iter_sessions` would yield, without reading their messages (n_turns is stored)."""
    rows = closed_sessions(store, settings, split)
    return [SessionRef(r["id"], r["split"], r["content_hash"]) for r in rows if r["n_turns"] >= MIN_TURNS]


def iter_sessions(
    store: Storage, settings: Settings, split: Split = "train", ids: Collection[str] | None = None
) -> Iterator[TrainingSession]:
    """Closed sessions of non-excluded dialogs in `split` (only `ids`, if given), oldest first per dialog;
    lone turns skipped."""
    if split not in SPLITS:
        raise UserError(f"split must be train, eval or all, not {split!r}")
    scrubber = Scrubber(settings.scrub_words)
    slug_of = {p["id"]: p["slug"] for p in store.people()}
    clocks = session_clocks(store, settings)
    for row in closed_sessions(store, settings, split):
        # n_turns is what load_session's turns will count (both from merge_bursts): no need to read the rest.
        if row["n_turns"] >= MIN_TURNS and (ids is None or row["id"] in ids):
            yield load_session(store, row, slug_of, scrubber.scrub, clocks.get(row["id"]) if clocks else None)


def session_clocks(store: Storage, settings: Settings) -> dict[str, Clock] | None:
    """With time marks on (TWIN_TIME_MARKS), each session's clock: the owner's zone and the pause since the
    dialog's session before (of any split); None with them off."""
    if not settings.time_marks:
        return None
    zone = settings.zone
    clocks: dict[str, Clock] = {}
    last_end: dict[int, int] = {}
    for row in store.sessions():  # oldest first per dialog
        before = last_end.get(row["dialog_id"])
        clocks[row["id"]] = Clock(zone, row["start"] - before if before is not None else None)
        last_end[row["dialog_id"]] = row["end"]
    return clocks


def owner_id_of(store: Storage, settings: Settings) -> int:
    """The owner's user id from settings, else the one an import recorded; says how to set it if neither."""
    if (owner := store.owner_id(settings.owner_id)) is None:
        raise UserError(HOW_TO_GET["owner_id"])
    return owner


def session_record(session: TrainingSession, owner_id: int) -> dict[str, Any]:
    """The JSONL line of a session: the owner's turns are `assistant`, everyone else's `user`."""
    return {
        "session_id": session.id,
        "dialog_id": session.dialog_id,
        "messages": [
            {
                "role": "assistant" if speaker_id == owner_id else "user",
                "name": turn.speaker,
                "content": "\n".join(turn.messages),
            }
            for turn, speaker_id in zip(session.turns, session.speaker_ids, strict=True)
        ],
    }


def export_jsonl(store: Storage, settings: Settings, out: Path, split: Split = "train") -> int:
    """Write one closed, scrubbed session per line to `out`; returns how many.

    The file appears whole or not at all: lines go to a private temp file beside `out`, renamed at the end.
    """
    owner_id = owner_id_of(store, settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600: it holds private conversations, scrubbed or not.
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for session in iter_sessions(store, settings, split):
                f.write(orjson.dumps(session_record(session, owner_id)) + b"\n")
                n += 1
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return n
