"""A chat's stored messages → the turns of its current conversation, cut and merged as in training.

A silence longer than the session gap starts a new conversation (core.sessions.split_by_gap); consecutive
messages of one speaker merge into one burst turn (core.sessions.merge_bursts). The twin's own replies
are part of the prompt here and nowhere else: they live only in bot_messages, never in training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.personas import partner_name
from core.format import ChatTurn
from core.sessions import merge_bursts, split_by_gap, to_chat_turns


def conversation_turns(
    rows: Sequence[dict[str, Any]], persona: str, gap_seconds: float, max_turns: int
) -> list[ChatTurn]:
    """The last `max_turns` turns of the latest conversation in `rows` (bot_messages, oldest first).

    The twin's turns keep the persona they were written as; a user's turns carry their speaker name,
    unless that is the persona now played (the owner chatting with their own twin).
    """
    if not rows:
        return []
    current = split_by_gap(rows, gap_seconds)[-1]
    names: dict[tuple[bool, str], int] = {}
    messages = []
    for row in current:
        twin = bool(row["from_twin"])
        name = row["speaker"] if twin else partner_name(row["speaker"], persona)
        key = names.setdefault((twin, name), len(names))
        messages.append({"id": row["id"], "sender_id": key, "text": row["text"], "date": row["date"]})
    name_of = {key: name for (_, name), key in names.items()}
    turns = merge_bursts(messages)[-max_turns:]
    return to_chat_turns(turns, name_of)
