"""Incremental sync of the owner's one-to-one dialogs: fetch (Telethon), convert (telethon_rows), save.

Every run lists the dialogs (one request per 100) and reads history only where a dialog's newest message
id is above its stored watermark, oldest first from the watermark. Each batch of rows and the watermark
move in one transaction, so a crash at any point loses nothing and the rerun duplicates nothing.

Storage is written and read on a worker thread (asyncio.to_thread), one batch at a time: the bot runs this
sync on its event loop, which must go on serving every chat meanwhile, and a reply's own storage call waits
at most one batch's transaction.

    async with connected_client(settings) as client:
        summary = await sync(client, store, settings)

The client is passed in: the bot's scheduler passes its own, tests pass a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from telethon import errors

from collector.sync_lock import SyncGuard
from collector.sync_report import SyncProgress, SyncSummary
from collector.telethon_client import LOGIN_HINT, NotLoggedIn
from collector.telethon_rows import message_to_row, person_of, skip_reason
from core.errors import UserError
from core.settings import Settings
from storage import Storage
from storage.store import UnknownPersona

log = logging.getLogger(__name__)

# Rows per transaction: a crash re-fetches at most this many, and a reply's storage call waits for at most one
# batch's transaction (a few ms); larger batches mean fewer commits.
BATCH_SIZE = 200
# Seconds between two history pages of one dialog: Telethon's own pace for long reads. Incremental
# syncs rarely need a second page, so they never wait.
HISTORY_PAGE_WAIT = 1.0
# A takeout session has lower limits; Telethon's docs read it with no wait between pages.
TAKEOUT_PAGE_WAIT = 0.0
FLOOD_ERRORS = (errors.FloodWaitError, errors.FloodPremiumWaitError)


class TakeoutDelayed(UserError):
    """Telegram holds the takeout request until the owner confirms it (and a delay passes)."""


@dataclass
class DialogPlan:
    """One person's dialog as the list showed it, next to what storage already has."""

    id: int
    name: str
    entity: Any  # telethon.tl.types.User
    input_peer: Any
    top_id: int  # the newest message id, from the dialog list
    top_date: dt.datetime | None
    watermark: int  # highest message id stored
    fetch_new: bool
    refresh: bool


async def sync(
    client,
    store: Storage,
    settings: Settings,
    *,
    dialog: int | str | None = None,
    refresh_days: int = 0,
    takeout: bool = False,
    progress: bool = True,
    guard: SyncGuard | None = None,
) -> SyncSummary:
    """Pull what is new in the owner's private dialogs into storage; one sync at a time (SyncBusy).

    `dialog` (a dialog id or persona slug) limits the sync to one dialog; `refresh_days` re-reads the
    last N days to pick up edits; `takeout` reads through a takeout session (lower limits, for the
    first bulk download). The bot passes its own `guard`; without one, the lock file alone excludes
    other syncs.
    """
    async with guard or SyncGuard(settings.data_dir):
        return await _sync(client, store, settings, dialog, refresh_days, takeout, progress)


async def _sync(client, store, settings, dialog, refresh_days, takeout, progress) -> SyncSummary:
    started, before = time.monotonic(), _request_counts(client)
    summary = SyncSummary()
    me = await client.get_me()
    if me is None:
        raise NotLoggedIn(f"the Telegram session is not logged in: {LOGIN_HINT}")
    await asyncio.to_thread(remember_owner, store, settings, me, summary)
    only = await asyncio.to_thread(resolve_dialog, store, dialog) if dialog is not None else None
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=refresh_days) if refresh_days > 0 else None
    async with history_source(client, takeout) as source:
        try:
            plans = await plan_dialogs(source, store, summary, only=only, since=since)
        except FLOOD_ERRORS as exc:
            summary.flood_wait, plans = exc.seconds, []
        await asyncio.to_thread(save_dialogs, store, plans)
        todo = [p for p in plans if p.fetch_new or p.refresh]
        summary.unchanged = len(plans) - len(todo)
        wait = TAKEOUT_PAGE_WAIT if takeout else HISTORY_PAGE_WAIT
        with SyncProgress(progress, len(todo)) as bar:
            for i, plan in enumerate(todo):
                try:
                    await sync_dialog(source, store, settings, plan, summary, bar, me.id, since, wait)
                except FLOOD_ERRORS as exc:
                    log.warning("flood wait of %d s in dialog %d: stopping this sync", exc.seconds, plan.id)
                    summary.flood_wait, summary.flood_dialog = exc.seconds, plan.name
                    summary.dialogs_left = len(todo) - i
                    break
                except errors.RPCError as exc:
                    log.warning("dialog %d failed: %s", plan.id, type(exc).__name__)
                    summary.failed[plan.id] = type(exc).__name__
    await asyncio.to_thread(store.set_meta, "last_sync_at", int(time.time()))
    summary.requests = _request_counts(client) - before
    summary.seconds = time.monotonic() - started
    log.info("sync done: %d new messages in %d dialogs", summary.new_messages, summary.synced)
    return summary


def remember_owner(store: Storage, settings: Settings, me, summary: SyncSummary) -> None:
    """The owner is a person too (their persona is the twin); their id goes to meta owner_id."""
    store.upsert_people([person_of(me)])
    store.set_meta("owner_id", me.id)
    if settings.owner_id is not None and settings.owner_id != me.id:
        msg = (
            f"TWIN_OWNER_ID is {settings.owner_id} but the logged-in account is {me.id}: "
            "fix TWIN_OWNER_ID in .env (or log in with the right account)"
        )
        log.warning(msg)
        summary.warnings.append(msg)


def resolve_dialog(store: Storage, id_or_slug: int | str) -> int:
    """A dialog id from a persona slug, a person id or a dialog id (one not stored yet is taken as is)."""
    try:
        return int(store.dialog_of(id_or_slug)["id"])
    except UnknownPersona:
        if str(id_or_slug).lstrip("-").isdigit():
            return int(id_or_slug)
        raise


@contextlib.asynccontextmanager
async def history_source(client, takeout: bool) -> AsyncIterator[Any]:
    """The client itself, or a takeout session over it (finished when the sync ends)."""
    if not takeout:
        yield client
        return
    try:
        async with client.takeout(finalize=True, users=True) as session:
            yield session
    except errors.TakeoutInitDelayError as exc:
        raise TakeoutDelayed(
            f"Telegram holds the takeout request for {exc.seconds} s (~{exc.seconds / 3600:.1f} h): open "
            "Telegram, confirm the data export request in the service notifications (from 'Telegram'), "
            "then rerun `twin collect --takeout` after the delay, or run `twin collect` without --takeout"
        ) from None


async def iter_dialog_list(client) -> AsyncIterator[Any]:
    """Every dialog once. Stops at the count Telegram reports, saving the empty page Telethon would
    otherwise request after a full last page."""
    dialogs = client.iter_dialogs()
    n = 0
    async for d in dialogs:
        n += 1
        yield d
        if dialogs.total is not None and n >= dialogs.total:
            return


async def plan_dialogs(client, store, summary, *, only: int | None, since: dt.datetime | None):
    """The owner's person dialogs with what each needs: new messages, a refresh, or nothing."""
    dialogs, is_forgotten = await asyncio.to_thread(lambda: (store.dialogs(), store.forgotten()))
    stored = {d["id"]: d for d in dialogs}  # and is_forgotten: people the owner made the twin forget (/forget)
    plans: list[DialogPlan] = []
    async for d in iter_dialog_list(client):
        summary.dialogs_seen += 1
        if only is not None and d.id != only:
            continue
        reason = skip_reason(d.entity)
        if reason is not None:
            summary.skipped[reason] += 1
        elif stored.get(d.id, {}).get("excluded") or is_forgotten(d.entity.id):
            summary.excluded += 1
        else:
            wm = int(stored.get(d.id, {}).get("watermark") or 0)
            top = int(d.dialog.top_message or 0)
            refresh = since is not None and wm > 0 and d.date is not None and d.date >= since
            plans.append(DialogPlan(d.id, d.name, d.entity, d.input_entity, top, d.date, wm, top > wm, refresh))
        if only is not None:
            break  # found it: no need for more dialog pages
    if only is not None and not plans:
        if summary.excluded:
            raise UserError(f"dialog {only} is excluded: `twin include {only}` first")
        if sum(summary.skipped.values()):
            raise UserError(f"dialog {only} is not a one-to-one chat with a person: nothing to collect")
        raise UserError(f"no dialog {only} in your Telegram dialog list")
    return plans


def save_dialogs(store: Storage, plans: list[DialogPlan]) -> None:
    """Names and usernames of everyone listed (slugs stay), and their dialogs, in one transaction."""
    with store.transaction():
        store.upsert_people([person_of(p.entity) for p in plans])
        for p in plans:
            store.upsert_dialog({"id": p.id, "type": "personal_chat", "name": p.name, "person_id": p.entity.id})


async def sync_dialog(client, store, settings, plan, summary, bar, owner_id, since, wait) -> None:
    """New messages above the watermark, then (with --refresh-days) a re-read of recent stored ones: edits
    are applied, and messages deleted on Telegram are deleted here too."""
    before = summary.new_messages + summary.refreshed_messages + summary.deleted_messages
    reread: set[int] = set()

    def rows(messages: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
        return (message_to_row(m, plan.id, owner_id, settings.keep_stickers) async for m in messages)

    def new_saved(batch: list[dict[str, Any]]) -> None:
        summary.new_messages += len(batch)
        bar.saved(batch[-1]["id"], len(batch))

    def refreshed(batch: list[dict[str, Any]]) -> None:
        reread.update(row["id"] for row in batch)
        summary.refreshed_messages += len(batch)
        bar.saved(batch[-1]["id"], len(batch))

    bar.begin(plan.name, plan.watermark, plan.top_id)
    try:
        if plan.fetch_new:
            await save_messages(store, plan.id, rows(iter_new_messages(client, plan, wait)), False, new_saved)
        if plan.refresh:
            recent = iter_recent_messages(client, plan, since, wait)
            await save_messages(store, plan.id, rows(recent), True, refreshed)
            # Read whole: what was stored in that window and is not on Telegram any more was deleted there
            # (the window's first seconds are left out: Telegram's offset_date may or may not include them).
            window = (plan.id, int(since.timestamp()) + 2, plan.watermark)
            summary.deleted_messages += await asyncio.to_thread(delete_gone, store, window, reread)
    finally:
        if summary.new_messages + summary.refreshed_messages + summary.deleted_messages > before:
            await asyncio.to_thread(store.rebuild_sessions, plan.id, settings.session_gap_seconds)
        bar.end()
    summary.synced += 1


async def iter_new_messages(client, plan: DialogPlan, wait: float) -> AsyncIterator[Any]:
    """Messages above the watermark, oldest first, up to the newest id the dialog list showed.

    Stopping there spares the empty page Telethon would otherwise request to find the end; anything
    newer than the list is for the next sync.
    """
    history = client.iter_messages(plan.input_peer, min_id=plan.watermark, reverse=True, wait_time=wait)
    async for msg in history:
        yield msg
        if msg.id >= plan.top_id:
            return


async def iter_recent_messages(client, plan: DialogPlan, since: dt.datetime, wait: float) -> AsyncIterator[Any]:
    """Stored messages sent since `since` once more (edits), oldest first, up to the old watermark."""
    history = client.iter_messages(
        plan.input_peer, offset_date=since, max_id=plan.watermark + 1, reverse=True, wait_time=wait
    )
    async for msg in history:
        yield msg
        if msg.id >= plan.watermark:
            return


async def save_messages(
    store,
    dialog_id,
    rows: AsyncIterator[dict[str, Any]],
    replace: bool,
    on_saved: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Save rows (oldest first) in batches of BATCH_SIZE, each with its watermark.

    If fetching fails midway (a long flood wait, a dropped connection) what was received is saved
    first: it runs contiguously from the watermark, so the next run goes on from there.
    """
    batch: list[dict[str, Any]] = []
    try:
        async for row in rows:
            batch.append(row)
            if len(batch) >= BATCH_SIZE:
                done, batch = batch, []
                await asyncio.to_thread(save_batch, store, dialog_id, done, replace)
                on_saved(done)
    finally:
        if batch:
            done, batch = batch, []
            await asyncio.to_thread(save_batch, store, dialog_id, done, replace)
            on_saved(done)


def delete_gone(store: Storage, window: tuple[int, int, int], reread: set[int]) -> int:
    """Delete what a sync stored in `window` (dialog, since, max id) and did not read again: deleted on
    Telegram. Returns how many went."""
    gone = store.synced_ids_between(*window) - reread
    return store.delete_messages(window[0], gone) if gone else 0


def save_batch(store: Storage, dialog_id: int, rows: list[dict], replace: bool) -> None:
    """Rows and the watermark in one transaction: committed together or not at all."""
    with store.transaction():
        store.insert_messages(rows, replace=replace)
        store.advance_watermark(dialog_id, max(r["id"] for r in rows))


def _request_counts(client) -> Counter[str]:
    return Counter(getattr(client, "request_counts", None) or {})
