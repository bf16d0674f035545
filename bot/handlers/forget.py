"""/forget NAME: after a confirm button, delete everything of a person (their messages, their adapters and
the reports that quoted them; see storage.forget), exclude them from syncs and imports, and retrain in full."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.chats import Conversations
from bot.jobs import Jobs
from core.errors import UserError
from core.settings import Settings
from engine.base import Engine
from storage import Storage
from storage.forget import ForgetReport
from trainer.forgetting import ForgetIncomplete, forget_person


class ForgetButton(CallbackData, prefix="forget"):
    person_id: int
    confirm: bool


def _versions(versions: list[int]) -> str:
    return ", ".join(f"{v:04d}" for v in versions)


def _question(slug: str, messages: int, sessions: int, trained_on: list[int]) -> str:
    adapters = f" It also deletes the adapters trained on them: {_versions(trained_on)}." if trained_on else ""
    return (
        f"Forget {slug}? This deletes {messages} messages in {sessions} sessions, their chats with me and "
        f"their access, and they are never collected again.{adapters} Then I retrain from scratch. "
        "This cannot be undone."
    )


async def ask(message: Message, command: CommandObject, store: Storage) -> None:
    slug = (command.args or "").strip().lstrip("@").lower()
    if not slug:
        raise UserError("whom? e.g. /forget sasha (/personas lists the names)")
    preview = await asyncio.to_thread(store.forget_preview, slug)  # counts their messages: off the event loop
    buttons = [
        [
            InlineKeyboardButton(
                text=f"Forget {preview.slug}",
                callback_data=ForgetButton(person_id=preview.person_id, confirm=True).pack(),
            ),
            InlineKeyboardButton(
                text="Cancel", callback_data=ForgetButton(person_id=preview.person_id, confirm=False).pack()
            ),
        ]
    ]
    await message.answer(
        _question(preview.slug, preview.messages, preview.sessions, preview.trained_on),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=buttons),
    )


async def confirmed(
    query: CallbackQuery,
    callback_data: ForgetButton,
    store: Storage,
    settings: Settings,
    jobs: Jobs,
    conversations: Conversations,
    engine: Engine | None = None,
) -> None:
    if not callback_data.confirm:
        await query.message.edit_text("Nothing was forgotten.")
        await query.answer()
        return
    await query.answer()
    # A second tap (or an old button) finds them gone: it must not stop the retrain the first one started.
    if await asyncio.to_thread(store.person, callback_data.person_id) is None:
        await query.message.edit_text("Already forgotten; the retrain without them goes on.")
        return
    # A running round has read their data and holds the training lock: it goes, and a full round follows.
    stopped = await jobs.cancel_training()
    left: list[str] = []
    async with conversations.forgetting(callback_data.person_id):
        try:
            report = await asyncio.to_thread(forget_person, store, settings, callback_data.person_id)
        except ForgetIncomplete as exc:  # their rows are gone: the rest goes on, and the owner is told
            report, left = exc.report, exc.left
    if engine is not None and report.trained_on:
        await engine.drop(report.trained_on)
    jobs.retrain_full()
    await query.message.edit_text("\n".join(_outcome(report, stopped, left)))


def _outcome(report: ForgetReport, stopped: bool, left: list[str]) -> list[str]:
    """What the owner is told after a forget: what went, what serves now, what could not be deleted."""
    lines = [
        f"Forgot {report.slug}: {report.messages} messages and {report.sessions} sessions deleted; "
        "they are not collected again."
    ]
    if stopped:
        lines.append("The training round that was running had read their data: it was stopped.")
    if report.trained_on:
        lines.append(f"Adapters trained on them are deleted: {_versions(report.trained_on)}.")
    if report.was_active is not None:
        now = f"adapter {report.now_active:04d}" if report.now_active else "the base model"
        lines.append(f"The active adapter {report.was_active:04d} was one of them: I answer with {now} now.")
    else:
        lines.append("No active adapter was trained on their data.")
    lines += [f"Error: {why}" for why in left]
    lines.append("Retraining from scratch.")
    return lines


def router() -> Router:
    r = Router(name="owner-forget")
    r.message.register(ask, Command("forget"))
    r.callback_query.register(confirmed, ForgetButton.filter())
    return r
