"""Telethon objects → storage rows: pure functions, no network and no database.

The collector fetches Telethon `Message`/`User` objects and turns them into the plain dicts storage takes
(`MESSAGE_COLUMNS`, people rows). Media names follow Telegram Desktop's export (`voice_message`,
`video_file`, ...) so imported and collected messages read the same to the trainer.
"""

from __future__ import annotations

import re
from typing import Any

from telethon import utils
from telethon.tl import types

# Telegram's own account (login codes, service notifications): never a person to learn from.
SERVICE_USER_ID = 777000

# Media classes that are not a document, by the name Telegram Desktop's export gives them.
_MEDIA_NAMES: dict[type, str | None] = {
    types.MessageMediaPhoto: "photo",
    types.MessageMediaGeo: "location",
    types.MessageMediaGeoLive: "live_location",
    types.MessageMediaVenue: "venue",
    types.MessageMediaContact: "contact",
    types.MessageMediaPoll: "poll",
    types.MessageMediaDice: "dice",
    types.MessageMediaGame: "game",
    types.MessageMediaInvoice: "invoice",
    types.MessageMediaStory: "story",
    types.MessageMediaUnsupported: "unsupported",
    types.MessageMediaWebPage: None,  # a link preview: the message is its text
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _document_type(document: Any) -> str:
    attrs = getattr(document, "attributes", None) or []
    for attr in attrs:
        if isinstance(attr, types.DocumentAttributeSticker):
            return "sticker"
    for attr in attrs:
        if isinstance(attr, types.DocumentAttributeAudio):
            return "voice_message" if attr.voice else "audio_file"
        if isinstance(attr, types.DocumentAttributeVideo) and attr.round_message:
            return "video_message"
    if any(isinstance(a, types.DocumentAttributeAnimated) for a in attrs):
        return "animation"
    if any(isinstance(a, types.DocumentAttributeVideo) for a in attrs):
        return "video_file"
    return "file"


def media_type_of(message: Any) -> str | None:
    """What a message carries besides text: `photo`, `sticker`, `voice_message`, ..., or None.

    A service message (call, pin, screenshot) is `service:<action>`, e.g. `service:phone_call`.
    """
    action = getattr(message, "action", None)
    if action is not None:
        return "service:" + _snake(type(action).__name__.removeprefix("MessageAction"))
    media = getattr(message, "media", None)
    if media is None or isinstance(media, types.MessageMediaEmpty):
        return None
    if isinstance(media, types.MessageMediaDocument):
        return _document_type(media.document)
    for cls, name in _MEDIA_NAMES.items():
        if isinstance(media, cls):
            return name
    return _snake(type(media).__name__.removeprefix("MessageMedia"))


def sticker_emoji(message: Any) -> str | None:
    media = getattr(message, "media", None)
    document = getattr(media, "document", None) if isinstance(media, types.MessageMediaDocument) else None
    for attr in getattr(document, "attributes", None) or []:
        if isinstance(attr, types.DocumentAttributeSticker):
            return attr.alt or None
    return None


def _forwarded_from(message: Any) -> str | None:
    fwd = message.fwd_from
    if fwd is None:
        return None
    forward = getattr(message, "forward", None)  # Telethon's wrapper knows the entity when it was sent along
    entity = getattr(forward, "sender", None) or getattr(forward, "chat", None)
    if entity is not None:
        return utils.get_display_name(entity) or str(utils.get_peer_id(fwd.from_id))
    if fwd.from_name:
        return fwd.from_name
    return str(utils.get_peer_id(fwd.from_id)) if fwd.from_id else None


def message_to_row(message: Any, dialog_id: int, owner_id: int, keep_stickers: bool = True) -> dict[str, Any]:
    """One Telethon message of a one-to-one dialog → a `messages` row.

    The sender of an outgoing message is the owner; of an incoming one, the other person (private chats
    carry no `from_id` for incoming messages since layer 119, only the peer).
    """
    out = bool(message.out)
    sender = owner_id if out else (message.sender_id or dialog_id)
    media_type = media_type_of(message)
    text = message.message or None  # MessageService has no text; media-only messages have ""
    if text is None and media_type == "sticker" and keep_stickers:
        text = sticker_emoji(message)
    reply = message.reply_to
    same_chat_reply = isinstance(reply, types.MessageReplyHeader) and reply.reply_to_peer_id is None
    edited = message.edit_date if message.edit_date and not getattr(message, "edit_hide", None) else None
    return {
        "dialog_id": dialog_id,
        "id": message.id,
        "sender_id": sender,
        "date": int(message.date.timestamp()),
        "text": text,
        "out": int(out),
        "reply_to": reply.reply_to_msg_id if same_chat_reply else None,
        "forwarded": int(message.fwd_from is not None),
        "forwarded_from": _forwarded_from(message),
        "media_type": media_type,
        "edited": int(edited.timestamp()) if edited else None,
        "via_bot": int(bool(message.via_bot_id)),  # 1/0, as the Telegram Desktop import stores it
        "source": "telethon",
    }


def person_of(user: types.User) -> dict[str, Any]:
    """A Telethon user → a `people` row (storage keeps the slug stable across renames)."""
    username = user.username
    if not username and user.usernames:
        username = next((u.username for u in user.usernames if u.active), None)
    return {
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "username": username,
        "name": utils.get_display_name(user) or None,
    }


def skip_reason(entity: Any) -> str | None:
    """Why a dialog's entity is not a person the twin learns from, or None when it is one."""
    if not isinstance(entity, types.User):
        return "not a one-to-one chat"
    if entity.is_self:
        return "Saved Messages"
    if entity.bot:
        return "bot"
    if entity.deleted:
        return "deleted account"
    if entity.id == SERVICE_USER_ID:
        return "Telegram service account"
    return None
