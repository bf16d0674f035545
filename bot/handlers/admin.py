"""The owner's access and data commands: /allow /deny /allowed /publish /unpublish /exclude /include /drafts.

Storage is read and written on a worker thread (asyncio.to_thread): a write may wait for another process's
transaction, and the event loop must go on serving every chat meanwhile.
"""

from __future__ import annotations

import asyncio
import re

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from collector.drafts import DRAFTS_MODE_KEY
from core.errors import UserError
from storage import Storage

USERNAME = re.compile(r"^@?[A-Za-z][A-Za-z0-9_]{3,31}$")


def parse_target(args: str | None, store: Storage) -> tuple[int | None, str | None]:
    """`123` (a user or group id), `@username`, or a persona name → (user_id, username)."""
    arg = (args or "").strip()
    if re.fullmatch(r"-?\d+", arg):
        return int(arg), None
    if not arg.startswith("@") and (person := store.person(arg.lower())):
        return int(person["id"]), person.get("username")
    if USERNAME.match(arg):
        return None, arg.lstrip("@")
    raise UserError(
        "give a Telegram user id, a group id (negative), an @username or a persona name, e.g. /allow @sasha"
    )


def _who(user_id: int | None, username: str | None) -> str:
    return " ".join(x for x in (str(user_id) if user_id else None, f"@{username}" if username else None) if x)


async def allow(message: Message, command: CommandObject, store: Storage) -> None:
    await message.answer(await asyncio.to_thread(allow_answer, store, command.args))


def allow_answer(store: Storage, args: str | None) -> str:
    user_id, username = parse_target(args, store)
    store.allow(user_id=user_id, username=username)
    return f"{_who(user_id, username)} may talk to me now."


async def deny(message: Message, command: CommandObject, store: Storage) -> None:
    await message.answer(await asyncio.to_thread(deny_answer, store, command.args))


def deny_answer(store: Storage, args: str | None) -> str:
    user_id, username = parse_target(args, store)
    removed = store.deny(user_id=user_id, username=username)
    who = _who(user_id, username)
    return f"{who} may no longer talk to me." if removed else f"{who} was not on the list."


async def allowed(message: Message, store: Storage) -> None:
    rows = await asyncio.to_thread(store.allowed)
    lines = [_who(r["user_id"], r["username"]) for r in rows]
    await message.answer("Allowed: " + ", ".join(lines) if lines else "Only you. /allow ID or @username adds someone.")


def _slug(command: CommandObject, example: str) -> str:
    slug = (command.args or "").strip().lstrip("@").lower()
    if not slug:
        raise UserError(f"which persona? e.g. /{command.command} {example} (/personas lists them)")
    return slug


async def publish(message: Message, command: CommandObject, store: Storage) -> None:
    slug = _slug(command, "sasha")
    await asyncio.to_thread(store.set_published, slug, True)
    await message.answer(f"Others may pick {slug} now (/persona {slug}).")


async def unpublish(message: Message, command: CommandObject, store: Storage) -> None:
    slug = _slug(command, "sasha")
    await asyncio.to_thread(store.set_published, slug, False)
    await message.answer(f"{slug} is yours only again; chats that picked it get your persona back.")


def set_excluded(store: Storage, slug: str, excluded: bool) -> dict:
    """The dialog with `slug`, now excluded from (or included in) syncs and training."""
    dialog = store.dialog_of(slug)
    store.set_excluded(dialog["id"], excluded)
    return dialog


async def exclude(message: Message, command: CommandObject, store: Storage) -> None:
    dialog = await asyncio.to_thread(set_excluded, store, _slug(command, "sasha"), True)
    await message.answer(f"Skipping {dialog['name'] or dialog['id']} when syncing and training from now on.")


async def include(message: Message, command: CommandObject, store: Storage) -> None:
    dialog = await asyncio.to_thread(set_excluded, store, _slug(command, "sasha"), False)
    await message.answer(f"Syncing and training on {dialog['name'] or dialog['id']} again.")


async def drafts(message: Message, command: CommandObject, store: Storage) -> None:
    await message.answer(await asyncio.to_thread(drafts_answer, store, command.args))


def drafts_answer(store: Storage, args: str | None) -> str:
    """/drafts on|off|only NAME…: whose chats the twin drafts in (read by the draft writer on every message)."""
    words = (args or "").lower().split()
    if words in (["on"], ["off"]):
        store.set_meta(DRAFTS_MODE_KEY, words[0])
        return "Drafts are on (for TWIN_DRAFTS_FOR)." if words[0] == "on" else "Drafts are off: I draft nothing."
    if len(words) > 1 and words[0] == "only":
        slugs = [store.require_person(w)["slug"] for w in words[1:]]
        store.set_meta(DRAFTS_MODE_KEY, " ".join(["only", *slugs]))
        return f"Drafts only in the chats with {', '.join(slugs)}."
    raise UserError("say /drafts on, /drafts off or /drafts only NAME…, e.g. /drafts only sasha")


def router() -> Router:
    r = Router(name="owner-admin")
    for name, handler in (
        ("allow", allow),
        ("deny", deny),
        ("allowed", allowed),
        ("publish", publish),
        ("unpublish", unpublish),
        ("exclude", exclude),
        ("include", include),
        ("drafts", drafts),
    ):
        r.message.register(handler, Command(name))
    return r
