"""Ordinary messages: queued for the chat's next reply round (bot.chats.Conversations)."""

from __future__ import annotations

import asyncio

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.types import Message, MessageEntity

from bot.chats import Conversations, Incoming
from bot.personas import speaker_slug
from storage import Storage


def message_text(message: Message) -> str | None:
    """What the twin reads of a message: its text or caption, or a sticker's emoji (as in training)."""
    if message.text or message.caption:
        return message.text or message.caption
    if message.sticker and message.sticker.emoji:
        return message.sticker.emoji
    return None


def cut_mention(text: str, entities: list[MessageEntity] | None, username: str | None) -> str | None:
    """`text` without the first mention of @username, as Telegram marked it (an entity, so "@twinbot2" or an
    e-mail address is not one); None when it is not mentioned."""
    for entity in entities or []:
        if username and entity.type == "mention" and entity.extract_from(text).lower() == f"@{username.lower()}":
            utf16 = text.encode("utf-16-le")  # entity offsets count UTF-16 code units
            start, end = 2 * entity.offset, 2 * (entity.offset + entity.length)
            return (utf16[:start] + utf16[end:]).decode("utf-16-le").strip()
    return None


async def addressed_in_group(message: Message, bot: Bot, text: str) -> tuple[bool, str]:
    """In a group the twin answers only when mentioned or replied to; the mention is cut from the text."""
    me = await bot.me()
    entities = message.entities if message.text else message.caption_entities
    if (cut := cut_mention(text, entities, me.username)) is not None:
        return True, cut
    reply = message.reply_to_message
    return bool(reply and reply.from_user and reply.from_user.id == me.id), text


async def on_message(message: Message, bot: Bot, store: Storage, conversations: Conversations) -> None:
    """Queue the message for its chat's next reply round (storage is read off the event loop)."""
    text = message_text(message)
    if not text:
        return
    addressed = True
    if message.chat.type != ChatType.PRIVATE:
        addressed, text = await addressed_in_group(message, bot, text)
    conversations.submit(
        Incoming(
            chat_id=message.chat.id,
            user_id=message.from_user.id,
            speaker=await asyncio.to_thread(speaker_slug, store, message.from_user),
            text=text,
            addressed=addressed,
        )
    )


def router() -> Router:
    r = Router(name="chat")
    r.message.filter(F.chat.type.in_({ChatType.PRIVATE, ChatType.GROUP, ChatType.SUPERGROUP}))
    # Commands are never conversation: unknown ones get a hint in private chats, and in groups they may
    # be meant for another bot.
    r.message.register(on_message, F.text | F.caption | F.sticker, ~F.text.startswith("/"))
    return r
