"""The owner's model and data jobs: /status /sync /retrain /adapters /rollback, and /why (what a reply recalled).

Storage and the adapter folders are read on a worker thread (asyncio.to_thread), never on the event loop:
counting a big database takes a while, and every chat waits for the loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import FSInputFile, Message

from bot.chats import Conversations
from bot.delivery import split_text
from bot.jobs import Jobs
from collector.drafts import stats_lines
from core.errors import UserError
from core.paths import artifact_path
from core.settings import Settings
from engine.base import AdapterRef
from evaluation.headline import describe as describe_report
from storage import Storage
from trainer.registry import ROUND_RUNNING, adapter_listing
from trainer.registry import rollback as activate_earlier


def _when(unix: str | int | None) -> str:
    return dt.datetime.fromtimestamp(int(float(unix))).strftime("%Y-%m-%d %H:%M") if unix else "never"


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "—"


def status_text(store: Storage, settings: Settings, running: list[str], busy_chats: int) -> str:
    """/status: data counts, last sync and import, the active adapter and its figures, what is running."""
    c, s = store.counts(), store.session_counts(settings.session_gap_seconds)
    lines = [
        f"People: {c['people']}; dialogs: {c['dialogs']} ({c['dialogs_excluded']} excluded)",
        f"Messages: {c['messages']}; sessions: {s['closed']} closed, {s['open']} open",
        f"Last sync: {_when(store.get_meta('last_sync_at'))}; last import: {_when(store.get_meta('last_import_at'))}",
    ]
    active = store.active_adapter()
    if active and not settings.fits_base_model(active["base_model"]):
        lines.append(
            f"Active adapter: {active['version']:04d}, trained on {active['base_model']}, not on "
            "TWIN_BASE_MODEL: I answer with the base model until /retrain"
        )
    elif active:
        lines.append(
            f"Active adapter: {active['version']:04d} (eval loss {_loss(active['eval_loss'])}, "
            f"base {_loss(active['base_eval_loss'])}, {active['n_sessions'] or 0} sessions)"
        )
        if report := store.eval_report(active["version"]):
            lines.append(f"Evaluation: {describe_report(report['figures'])}")
    else:
        lines.append("Active adapter: none, I answer with the base model (/retrain)")
    lines.append(f"Running: {', '.join(running) or 'nothing'}; chats being answered: {busy_chats}")
    return "\n".join(lines + stats_lines(store.draft_stats()))


def loss_curve(store: Storage, settings: Settings) -> Path | None:
    """The active adapter's loss-curve image, when its folder has one."""
    active = store.active_adapter()
    if not active or not active.get("path"):
        return None
    folder = AdapterRef.from_row(active, settings.data_dir).path
    images = sorted(folder.glob("*.png")) if folder.is_dir() else []
    return images[0] if images else None


def report_plot(store: Storage, settings: Settings) -> Path | None:
    """The active adapter's evaluation summary plot (loss, style, questions per persona), when it has one."""
    active = store.active_adapter()
    report = store.eval_report(active["version"]) if active else None
    plot = artifact_path(report["path"], settings.data_dir) / "summary.png" if report else None
    return plot if plot is not None and plot.is_file() else None


def status_parts(
    store: Storage, settings: Settings, running: list[str], busy_chats: int
) -> tuple[str, Path | None, Path | None]:
    """/status's text, loss curve and evaluation plot."""
    return status_text(store, settings, running, busy_chats), loss_curve(store, settings), report_plot(store, settings)


async def status(
    message: Message, store: Storage, settings: Settings, jobs: Jobs, conversations: Conversations
) -> None:
    # What runs is read here, on the loop that changes it; the rest on a worker thread.
    args = (store, settings, jobs.running(), conversations.busy_chats)
    text, image, plot = await asyncio.to_thread(status_parts, *args)
    await message.answer(text)
    if image:
        await message.answer_photo(FSInputFile(image), caption="Loss curve of the active adapter")
    if plot:
        await message.answer_photo(FSInputFile(plot), caption="Evaluation: base model / previous / active adapter")


async def sync(message: Message, jobs: Jobs) -> None:
    if jobs.start_sync():
        await message.answer("Syncing… I'll report when it is done.")
    else:
        await message.answer("A sync is running already; I'll report when it is done.")


async def retrain(message: Message, jobs: Jobs) -> None:
    if jobs.start_training():
        await message.answer("Training a new adapter… I'll report progress here.")
    else:
        await message.answer("A training round is running already; I'll report when it is done.")


def adapters_text(store: Storage) -> str:
    rows = adapter_listing(store)
    if not rows:
        return "No adapters yet: /retrain trains the first one."
    lines = [
        f"{r['version']:04d} {r['status']}: eval loss {_loss(r['eval_loss'])} (base {_loss(r['base_eval_loss'])}), "
        f"{r['n_sessions'] or 0} sessions, {_when(r['created_at'])}"
        for r in rows
    ]
    return "\n".join(lines)


async def list_adapters(message: Message, store: Storage) -> None:
    await message.answer(await asyncio.to_thread(adapters_text, store))


async def rollback(message: Message, command: CommandObject, store: Storage, jobs: Jobs) -> None:
    arg = (command.args or "").strip()
    if arg and not arg.isdigit():
        raise UserError("give an adapter version, e.g. /rollback 3 (/adapters lists them)")
    if "training" in jobs.running():
        raise UserError(ROUND_RUNNING)
    old, new = await asyncio.to_thread(activate_earlier, store, int(arg) if arg else None)
    was = f" (was {old:04d})" if old else ""
    await message.answer(f"Adapter {new:04d} is active now{was}; the next reply uses it.")


def why_text(store: Storage, conversations: Conversations, owner_id: int, who: str = "") -> str:
    """The memory block the last reply in a chat was shown: the owner's own chat, or `who`'s private chat
    (a persona name or a user id)."""
    chat_id, where = owner_id, "in this chat"
    if who:
        person = store.person(who.lstrip("@").lower())
        if person is None and not who.lstrip("-").isdigit():
            raise UserError(f"no person {who!r}: /personas lists the names")
        chat_id = person["id"] if person else int(who)
        where = f"to {person['slug'] if person else chat_id}"
    memory = conversations.last_memory.get(chat_id)
    if memory is None or not memory.recalled:
        return f"No memory was used for the last reply {where}."
    return f"The last reply {where} recalled {len(memory.recalled)} earlier exchange(s):\n\n{memory.text}"


async def why(message: Message, command: CommandObject, store: Storage, conversations: Conversations) -> None:
    who = (command.args or "").strip()
    text = await asyncio.to_thread(why_text, store, conversations, conversations.owner_id, who)
    for piece in split_text(text):
        await message.answer(piece)


def router() -> Router:
    r = Router(name="owner-model")
    r.message.register(status, Command("status"))
    r.message.register(sync, Command("sync"))
    r.message.register(retrain, Command("retrain"))
    r.message.register(list_adapters, Command("adapters"))
    r.message.register(rollback, Command("rollback"))
    r.message.register(why, Command("why"))
    return r
