"""/forget NAME: after a confirm button, delete a person's data, exclude their dialog, retrain in full,
and tell the owner once no active adapter was trained on them."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.jobs import Jobs
from bot.reporting import OwnerReports
from core.errors import UserError
from core.settings import Settings
from storage import Storage


class ForgetButton(CallbackData, prefix="forget"):
    person_id: int
    confirm: bool


def _question(slug: str, messages: int, sessions: int, trained_on: list[int]) -> str:
    adapters = f" Adapters trained on them: {', '.join(map(str, trained_on))}." if trained_on else ""
    return (f"Forget {slug}? This deletes {messages} messages in {sessions} sessions, excludes the dialog "
            f"from syncs and retrains from scratch.{adapters} This cannot be undone.")  # fmt: skip


async def ask(message: Message, command: CommandObject, store: Storage) -> None:
    slug = (command.args or "").strip().lstrip("@").lower()
    if not slug:
        raise UserError("whom? e.g. /forget sasha (/personas lists the names)")
    preview = store.forget_preview(slug)
    buttons = [[
        InlineKeyboardButton(text=f"Forget {preview.slug}",
                             callback_data=ForgetButton(person_id=preview.person_id, confirm=True).pack()),
        InlineKeyboardButton(text="Cancel",
                             callback_data=ForgetButton(person_id=preview.person_id, confirm=False).pack()),
    ]]  # fmt: skip
    await message.answer(
        _question(preview.slug, preview.messages, preview.sessions, preview.trained_on),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=buttons),
    )


def adapter_check(store: Storage, reports: OwnerReports, slug: str, session_ids: list[str]):
    """A check for after each training round: reports (once) when the active adapter has no trace of them."""

    async def check() -> bool:
        active = store.active_adapter()
        if active and active["version"] in store.adapters_trained_on(session_ids):
            return False
        await reports.say(f"No active adapter was trained on {slug}'s data any more.")
        return True

    return check


async def confirmed(query: CallbackQuery, callback_data: ForgetButton, store: Storage, settings: Settings,
                    jobs: Jobs) -> None:  # fmt: skip
    if not callback_data.confirm:
        await query.message.edit_text("Nothing was forgotten.")
        await query.answer()
        return
    report = store.forget_person(callback_data.person_id, settings.session_gap_seconds)
    check = adapter_check(store, jobs.reports, report.slug, report.session_ids)
    lines = [f"Forgot {report.slug}: {report.messages} messages and {report.sessions} sessions deleted, "
             "their dialog is excluded from syncs."]  # fmt: skip
    active = store.active_adapter()
    if active and active["version"] in report.trained_on:
        jobs.after_training.append(check)
        lines.append(f"The active adapter {active['version']:04d} was trained on them: retraining from scratch, "
                     "I'll tell you when no active adapter has their data.")  # fmt: skip
    elif "training" in jobs.running():  # the round running now read their data before it was deleted
        jobs.after_training.append(check)
        lines.append("No active adapter was trained on their data, but the round running now read it: "
                     "retraining from scratch after it, I'll tell you when it is done.")  # fmt: skip
    else:
        lines.append("No active adapter was trained on their data. Retraining from scratch anyway.")
    jobs.retrain_full()
    await query.message.edit_text("\n".join(lines))
    await query.answer()


def router() -> Router:
    r = Router(name="owner-forget")
    r.message.register(ask, Command("forget"))
    r.callback_query.register(confirmed, ForgetButton.filter())
    return r
