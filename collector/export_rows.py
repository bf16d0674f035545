"""Converting an export's chats to storage rows: pure functions from export dicts to people, a dialog and
MESSAGE_COLUMNS tuples. The format is Telegram Desktop's JSON writer (tdesktop
export/output/export_output_json.cpp); every key is treated as optional, since trimmed or anonymised exports
drop ids, dates and types."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter, le, lt
from typing import Any

from .export_read import Chat, ExportError

PERSONAL = "personal_chat"
GROUPS = frozenset({"private_group", "private_supergroup"})  # imported only with --include-groups
# A chat without `type` (trimmed exports) with at most this many senders is taken for a personal chat.
MAX_PERSONAL_SENDERS = 2
DELETED_ACCOUNT = "Deleted Account"  # Telegram Desktop writes `"from": null` for deleted accounts
SOURCE = "export"
# Keys that mark a message as carrying media; one without text is skipped as media-only.
MEDIA_KEYS = (
    "media_type",
    "photo",
    "file",
    "poll",
    "contact_information",
    "location_information",
    "place_name",
    "game_title",
    "invoice_information",
)
PEER_ID = re.compile(r"[a-z_]*(\d+)")  # "user123", "channel456", "chat789", "123"
BY_DATE_THEN_ID = itemgetter(3, 1)  # MESSAGE_COLUMNS: date, id — the order storage returns messages in
SENT_BY_OWNER = itemgetter(5)  # MESSAGE_COLUMNS: out
MESSAGE_ID = itemgetter(1)

Row = tuple[Any, ...]


class BadField(Exception):
    """One field of a message has a wrong value; convert_messages adds where (file, chat, message)."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(f': "{field}" {problem}' if field else f" {problem}")


@dataclass
class ChatRows:
    """A chat converted to storage rows."""

    dialog: dict[str, Any]
    rows: list[Row]
    people: dict[int, str]  # id → display name, everyone who wrote in the chat
    skipped: Counter[str]
    watermark: int | None  # highest real Telegram message id; None when ids were synthesised


def flatten_text(text: Any) -> str:
    """`text` as plain text: a string, or a list of strings and {type, text} parts (bold, link, ...)."""
    if text.__class__ is str:
        return text
    if text is None:
        return ""
    if text.__class__ is not list:
        raise BadField("text", "is neither a string nor a list")
    parts = []
    for part in text:
        if part.__class__ is dict:
            part = part.get("text", "")
        if part.__class__ is not str:
            raise BadField("text", "has a part that is neither a string nor a {type, text} object")
        parts.append(part)
    return "".join(parts)


def peer_id(from_id: Any) -> int | None:
    """The numeric id in "user123" / "channel456" / 123; None for ids like "user000AX6969"."""
    if from_id.__class__ is int:
        return from_id
    if from_id is not None and from_id.__class__ is not str:
        raise BadField("from_id", "is not a string")
    match = PEER_ID.fullmatch(from_id or "")
    return int(match[1]) if match else None


def synthetic_id(name: str) -> int:
    """A stable negative id for a sender or chat the export names without a usable id."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return -(int.from_bytes(digest, "big") >> 11) - 1  # 53 bits: clear of real Telegram ids


@dataclass
class ChatContext:
    """What converting one chat's messages needs to know, and what it learns on the way (who wrote)."""

    dialog_id: int
    owner_id: int
    keep_stickers: bool
    sender_ids: dict[str, int] = field(default_factory=dict)  # numeric from_id → id: the hot path
    names: dict[int, str] = field(default_factory=dict)  # sender id → display name
    synthetic_ids: bool = False  # some message had no id: its position stands in

    def sender_of(self, msg: dict[str, Any]) -> int:
        """The sender's id: "user123" → 123, else a hash of the name. Remembers the name."""
        name = msg.get("from")
        if name is not None and name.__class__ is not str:
            raise BadField("from", "is not a string")
        name = name or DELETED_ACCOUNT
        from_id = msg.get("from_id")
        sender = peer_id(from_id)
        if sender is None:
            sender = synthetic_id(name)
        elif from_id.__class__ is str:
            self.sender_ids[from_id] = sender
        self.names.setdefault(sender, name)
        return sender


def message_to_row(msg: Any, index: int, cv: ChatContext) -> Row | str:
    """A message as a MESSAGE_COLUMNS tuple, or the reason it is skipped ("service", "media-only", ...).

    The hot loop of an import: one pass, cheap checks, the rare cases (no id, odd sender) out of line.
    """
    if msg.__class__ is not dict:
        raise BadField(None, "is not a JSON object")
    kind = msg.get("type", "message")
    if kind != "message":
        return _other_kind(kind)
    unix = msg.get("date_unixtime")
    if unix is None:
        return "no date"
    text = msg.get("text", "")
    if text.__class__ is not str:
        text = flatten_text(text)
    if text:
        media = msg.get("media_type") or ("photo" if "photo" in msg else "file" if "file" in msg else None)
    else:
        text, media = _sticker(msg, cv.keep_stickers), "sticker"
        if text is None:
            return _why_textless(msg, cv.keep_stickers)
    msg_id = msg.get("id")
    if msg_id.__class__ is not int:
        msg_id = _synthetic_message_id(msg_id, index, cv)
    try:
        date = int(unix)
    except (TypeError, ValueError):
        raise BadField("date_unixtime", "is not a number") from None
    from_id = msg.get("from_id")
    sender = cv.sender_ids.get(from_id) if from_id.__class__ is str else None
    if sender is None:
        sender = cv.sender_of(msg)
    reply_to = msg.get("reply_to_message_id")
    if reply_to is not None and reply_to.__class__ is not int:
        raise BadField("reply_to_message_id", "is not an integer")
    edited = msg.get("edited_unixtime")
    if edited is not None:
        edited = _edited(edited)
    forwarded, forwarded_from = (1, _forwarded_from(msg)) if "forwarded_from" in msg else (0, None)
    return (
        cv.dialog_id,
        msg_id,
        sender,
        date,
        text,
        1 if sender == cv.owner_id else 0,
        reply_to,
        forwarded,
        forwarded_from,
        media,
        edited,
        1 if "via_bot" in msg else 0,
        SOURCE,
    )


def _other_kind(kind: Any) -> str:
    if kind.__class__ is not str:
        raise BadField("type", "is not a string")
    return "service" if kind == "service" else "unsupported"


def _sticker(msg: dict[str, Any], keep_stickers: bool) -> str | None:
    """A sticker's emoji: it carries the tone of a reply ("😂"); None for anything else without text."""
    emoji = msg.get("sticker_emoji") if keep_stickers and msg.get("media_type") == "sticker" else None
    if emoji is not None and emoji.__class__ is not str:
        raise BadField("sticker_emoji", "is not a string")
    return emoji or None


def _why_textless(msg: dict[str, Any], keep_stickers: bool) -> str:
    if msg.get("media_type") == "sticker" and not keep_stickers:
        return "sticker (--no-stickers)"
    return "media-only" if any(key in msg for key in MEDIA_KEYS) else "empty"


def _synthetic_message_id(msg_id: Any, index: int, cv: ChatContext) -> int:
    """A trimmed export may drop ids: the position in the chat stands in, so re-import is idempotent."""
    if msg_id is not None:
        raise BadField("id", "is not an integer")
    cv.synthetic_ids = True
    return index


def _edited(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadField("edited_unixtime", "is not a number") from None


def _forwarded_from(msg: dict[str, Any]) -> str | None:
    name = msg["forwarded_from"]  # null when the original sender hides their account
    if name is not None and name.__class__ is not str:
        raise BadField("forwarded_from", "is not a string")
    return name


def message_label(msg: Any, index: int) -> str:
    msg_id = msg.get("id") if isinstance(msg, dict) else None
    return f"message {msg_id} (#{index} in the chat)" if type(msg_id) is int else f"message #{index}"


def convert_messages(chat: Chat, cv: ChatContext) -> tuple[list[Row], Counter[str]]:
    """Rows of a chat's messages, keeping the first of duplicate ids; skips counted by reason."""
    rows: list[Row] = []
    skipped: Counter[str] = Counter()
    seen: set[int] = set()
    for index, msg in enumerate(chat.messages, 1):
        try:
            row = message_to_row(msg, index, cv)
        except BadField as bad:
            raise ExportError(f"{chat.where}, {message_label(msg, index)}{bad}") from None
        if row.__class__ is str:
            skipped[row] += 1  # type: ignore[index]
        elif row[1] in seen:
            skipped["duplicate id"] += 1
        else:
            seen.add(row[1])
            rows.append(row)  # type: ignore[arg-type]
    return rows, skipped


def chat_dialog_id(chat: Chat) -> int:
    """The chat's id; else a hash of its name (or, unnamed, of who wrote in it) that re-import repeats."""
    if chat.id is not None:
        return chat.id
    if chat.name is not None:
        return synthetic_id(chat.name)
    names = {m.get("from") for m in chat.messages if isinstance(m, dict) and isinstance(m.get("from"), str)}
    return synthetic_id("\x1f".join(sorted(names)))


def chat_type(chat: Chat, rows: list[Row]) -> str:
    """The chat's type; a trimmed export without one is personal when at most two people wrote."""
    if chat.type is not None:
        return chat.type
    return PERSONAL if len({row[2] for row in rows}) <= MAX_PERSONAL_SENDERS else "private_group"


def chat_to_rows(chat: Chat, owner_id: int, keep_stickers: bool) -> ChatRows:
    cv = ChatContext(chat_dialog_id(chat), owner_id, keep_stickers)
    rows, skipped = convert_messages(chat, cv)
    kind = chat_type(chat, rows)
    people = cv.names
    person_id = other_person(chat, people, owner_id) if kind == PERSONAL else None
    if person_id is not None:
        people.setdefault(person_id, chat.name or DELETED_ACCOUNT)
    name = chat.name or (people.get(person_id) if person_id is not None else None)
    dialog = {"id": cv.dialog_id, "type": kind, "name": name, "person_id": person_id}
    watermark = None if cv.synthetic_ids or not rows else max(map(MESSAGE_ID, rows))
    return ChatRows(dialog, rows, people, skipped, watermark)


def other_person(chat: Chat, people: dict[int, str], owner_id: int) -> int | None:
    """Who the owner talks to in a personal chat: the chat's id is theirs (Telegram writes the peer's user
    id), unless someone else wrote in it (anonymised exports) or it has none (trimmed ones)."""
    others = [pid for pid in people if pid != owner_id]
    if chat.id is not None and (chat.id in others or not others):
        return chat.id
    return others[0] if others else None


def wanted(kind: str | None, include_groups: bool) -> bool:
    """Personal chats always, private groups on request; never channels, bots, saved messages, replies."""
    return kind is None or kind == PERSONAL or (include_groups and kind in GROUPS)


def person_row(person_id: int, name: str) -> dict[str, Any]:
    first, _, last = name.partition(" ")
    return {"id": person_id, "name": name, "first_name": first, "last_name": last or None, "username": None}


def owner_row(data: dict[str, Any], owner_id: int) -> dict[str, Any] | None:
    """The owner as personal_information describes them (full-account exports only)."""
    info = data.get("personal_information")
    if not isinstance(info, dict):
        return None
    first, last = info.get("first_name") or None, info.get("last_name") or None
    username = info.get("username")
    name = " ".join(str(x) for x in (first, last) if x) or None
    return {
        "id": owner_id,
        "name": name,
        "first_name": first,
        "last_name": last,
        "username": username.lstrip("@") or None if isinstance(username, str) else None,
    }


def session_messages(rows: list[Row]) -> list[dict[str, Any]]:
    """Rows as the date-ordered message dicts core.sessions works on (what storage would read back)."""
    dates, ids = [r[3] for r in rows], [r[1] for r in rows]
    in_order = all(map(le, dates, dates[1:])) and all(map(lt, ids, ids[1:]))  # as exports are, mostly
    ordered = rows if in_order else sorted(rows, key=BY_DATE_THEN_ID)
    return [{"id": r[1], "sender_id": r[2], "date": r[3], "text": r[4], "forwarded": r[7]} for r in ordered]
