"""Who the twin plays in a chat, who may pick which persona, and what name a user's turns carry.

The owner may pick any persona; everyone else only those the owner published. The default persona is
the owner's own slug. A user's turns carry their persona slug when storage knows them (as in the training
data), else a slug made from their first name.
"""

from __future__ import annotations

from typing import Any

from aiogram.types import User

from core.personas import slug_base
from storage import Storage

# The owner talking to their own twin: the twin plays the owner, so the owner's turns need another name.
SELF_TALK_PARTNER = "friend"


def owner_slug(store: Storage, owner_id: int) -> str:
    """The owner's persona: their slug in the data, else the name storage would give an unknown id."""
    return store.owner_slug(owner_id) or slug_base(None, None, owner_id)


def speaker_slug(store: Storage, user: User) -> str:
    """The name a user's turns carry in the prompt: their persona slug if known, else from their name."""
    person = store.person(user.id)
    return person["slug"] if person else slug_base(None, user.first_name, user.id)


def choices(store: Storage, user_id: int, owner_id: int) -> list[dict[str, Any]]:
    """The personas `user_id` may pick (with message counts), most active first; the owner's first."""
    mine = owner_slug(store, owner_id)
    rows = [p for p in store.personas() if user_id == owner_id or p["published"] or p["slug"] == mine]
    rows.sort(key=lambda p: p["slug"] != mine)
    if not any(p["slug"] == mine for p in rows):
        rows.insert(0, {"slug": mine, "name": None, "messages": 0, "published": 1})
    return rows


def may_play(store: Storage, slug: str, user_id: int, owner_id: int) -> bool:
    """Whether `slug` is among `choices` for this user, in one lookup (every reply of a chat asks)."""
    persona, owner = store.persona_and_owner(slug, owner_id)
    mine = owner["slug"] if owner else slug_base(None, None, owner_id)
    return slug == mine or (persona is not None and (user_id == owner_id or bool(persona["published"])))


def chat_persona(store: Storage, chat_id: int, user_id: int, owner_id: int) -> str:
    """The persona the twin plays in this chat: the stored pick while this user may still have it
    (the owner may unpublish it later), else the owner's own."""
    picked = store.chat_persona(chat_id)
    if picked and (user_id == owner_id or may_play(store, picked, user_id, owner_id)):
        return picked
    return owner_slug(store, owner_id)


def partner_name(speaker: str, persona: str) -> str:
    """The user's name in the prompt, unless it is the persona's own (the owner chatting with themselves)."""
    return SELF_TALK_PARTNER if speaker == persona else speaker
