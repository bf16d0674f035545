"""A chat's stored messages → the turns of its current conversation, cut and merged as in training.

A silence longer than the session gap starts a new conversation (core.sessions.split_by_gap); consecutive
messages of one speaker merge into one burst turn (core.sessions.merge_bursts). The twin's own replies
are part of the prompt here and nowhere else: they live only in bot_messages, never in training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bot.personas import partner_name
from core.format import ChatTurn
from core.sessions import live_turns


def conversation_turns(
    rows: Sequence[dict[str, Any]],
    persona: str,
    gap_seconds: float,
    max_turns: int,
    zone: ZoneInfo | None = None,
    marked: bool = False,
) -> list[ChatTurn]:
    """The last `max_turns` turns of the latest conversation in `rows` (bot_messages, oldest first), with
    time marks when `marked` (core.timemarks, in `zone`).

    The twin's turns keep the persona they were written as; a user's turns carry their speaker name,
    unless that is the persona now played (the owner chatting with their own twin).
    """
    names: dict[tuple[bool, str], int] = {}
    messages = []
    for row in rows:
        twin = bool(row["from_twin"])
        name = row["speaker"] if twin else partner_name(row["speaker"], persona)
        key = names.setdefault((twin, name), len(names))
        messages.append({"id": row["id"], "sender_id": key, "text": row["text"], "date": row["date"]})
    name_of = {key: name for (_, name), key in names.items()}
    return live_turns(messages, name_of, gap_seconds, max_turns, zone, marked)
