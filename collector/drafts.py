"""Drafts: the twin writes the owner's reply into the owner's own chat as a Telegram draft, never sent.

The owner's Telethon client hands every live update to `DraftWriter.on_update` (telethon.events.Raw). In a
one-to-one chat with a person the twin may draft for, each message is stored as the collector stores it
(telethon_rows + telethon_sync.save_batch: watermark kept). When the other person's burst ends (no message
and no typing for TWIN_DRAFTS_QUIET_SECONDS), the twin's reply (the engine, the core format, memory and
decoding the bot uses) is saved as the chat's draft with SaveDraftRequest. The owner decides: what they send
next closes the draft's record as accepted, edited (with the edit distance) or, with nothing sent within the
session gap, ignored.

A draft that is not the twin's last one is the owner's own: it is never overwritten or cleared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from telethon import events, utils
from telethon.tl import types
from telethon.tl.functions.messages import SaveDraftRequest

from collector.telethon_rows import message_to_row, person_of, skip_reason
from collector.telethon_sync import FLOOD_ERRORS, save_batch
from core.format import NO_MEMORY, ChatTurn
from core.recall import MemoryRequest, recall
from core.scrub import Scrubber
from core.sessions import live_turns
from core.settings import Settings
from engine.base import AdapterRef, Engine
from storage import Storage

log = logging.getLogger(__name__)

# Where `/drafts on|off|only NAME…` keeps the owner's choice; it overrides TWIN_DRAFTS_FOR until set to "on".
DRAFTS_MODE_KEY = "drafts_mode"


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance in characters (insert, delete, substitute), two rows at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def verdict_of(draft: str, sent: str) -> tuple[str, int]:
    """The owner's decision on a draft from what they sent next: accepted as is, or edited by this much."""
    distance = edit_distance(draft.strip(), sent.strip())
    return ("accepted" if distance == 0 else "edited"), distance


def may_draft(store: Storage, settings: Settings, person: dict[str, Any]) -> bool:
    """Whether the twin drafts in the owner's chat with `person`: /drafts (kept in meta) first, else
    TWIN_DRAFTS_FOR (everyone, the bot's allowlist, or persona slugs)."""
    mode = (store.get_meta(DRAFTS_MODE_KEY) or "on").split()
    if mode[0] == "off":
        return False
    if mode[0] == "only":
        return person["slug"] in mode[1:]
    rule = settings.drafts_for.strip().lower()
    if rule == "everyone":
        return True
    if rule == "allowlist":
        return store.is_allowed(person["id"], person.get("username"))
    return person["slug"] in {s.strip() for s in rule.split(",")}


def conversation(store: Storage, settings: Settings, dialog_id: int) -> list[ChatTurn]:
    """The chat's current conversation as the bot's prompt has it: the last session, bursts merged, the last
    TWIN_BOT_CONTEXT_TURNS turns, speakers by persona slug (core.sessions, as training reads sessions)."""
    rows = store.messages(dialog_id)
    slug_of = store.slugs({r["sender_id"] for r in rows if r["sender_id"] is not None})
    s = settings
    return live_turns(rows, slug_of, s.session_gap_seconds, s.bot_context_turns, s.zone, s.time_marks)


def active_adapter(store: Storage, settings: Settings) -> AdapterRef | None:
    """The active adapter when it belongs to TWIN_BASE_MODEL, else None (the base model answers)."""
    row = store.active_adapter()
    if row is None or not settings.fits_base_model(row["base_model"]):
        return None
    return AdapterRef.from_row(row, settings.data_dir)


def as_message(update: types.UpdateShortMessage) -> types.Message:
    """A short one-to-one message update as the Message it stands for."""
    return types.Message(
        id=update.id,
        peer_id=types.PeerUser(update.user_id),
        date=update.date,
        message=update.message,
        out=update.out,
        fwd_from=update.fwd_from,
        via_bot_id=update.via_bot_id,
        reply_to=update.reply_to,
        entities=update.entities,
    )


class DraftWriter:
    """Live updates in → stored messages, drafts saved on Telegram, decisions recorded. One per owner client."""

    def __init__(
        self,
        client: Any,
        store: Storage,
        settings: Settings,
        engine: Engine,
        *,
        dry_run: bool = False,
        say: Callable[[str], None] = print,
    ):
        self.client, self.store, self.settings, self.engine = client, store, settings, engine
        self.dry_run, self.say = dry_run, say
        self.owner_id = 0
        self.owner_slug = ""
        self._scrub = Scrubber(settings.scrub_words).scrub
        self._people: dict[int, Any] = {}  # user id → Telethon entity, those the twin may be in a chat with
        self._timers: dict[int, asyncio.Task] = {}  # dialog id → the burst's quiet timer (reset by each update)
        self._twin_text: dict[int, str] = {}  # dialog id → the twin's last draft there
        self._open: dict[int, int] = {}  # dialog id → the drafts row not decided yet
        self._shown: dict[int, str] = {}  # dialog id → the chat's draft as Telegram last reported it

    async def start(self) -> None:
        """Who the owner is, the drafts still open (a restart resumes them), and the update handler."""
        me = await self.client.get_me()
        self.owner_id = me.id
        await asyncio.to_thread(self.store.upsert_people, [person_of(me)])
        self.owner_slug = (await asyncio.to_thread(self.store.person, me.id))["slug"]
        for row in await asyncio.to_thread(self.store.open_drafts):
            self._open[row["dialog_id"]], self._twin_text[row["dialog_id"]] = row["id"], row["text"]
        await asyncio.to_thread(self.expire)
        self.client.add_event_handler(self.on_update, events.Raw)

    async def idle(self) -> None:
        """Wait until every pending burst has been answered (tests, shutdown)."""
        while self._timers:
            await asyncio.gather(*self._timers.values(), return_exceptions=True)

    async def on_update(self, update: Any) -> None:
        if isinstance(update, types.UpdateShortMessage):
            update = types.UpdateNewMessage(as_message(update), pts=update.pts, pts_count=update.pts_count)
        if isinstance(update, types.UpdateNewMessage) and isinstance(update.message, types.Message):
            await self.on_message(update.message)
        elif isinstance(update, types.UpdateUserTyping) and update.user_id in self._timers:
            if not isinstance(update.action, types.SendMessageCancelAction):
                self._restart_timer(update.user_id)
        elif isinstance(update, types.UpdateDraftMessage) and isinstance(update.peer, types.PeerUser):
            text = update.draft.message if isinstance(update.draft, types.DraftMessage) else ""
            self._shown[update.peer.user_id] = text

    async def on_message(self, message: types.Message) -> None:
        if not isinstance(message.peer_id, types.PeerUser) or not await self._is_person(message.peer_id.user_id):
            return
        dialog_id = message.peer_id.user_id
        if not await asyncio.to_thread(self._store_message, message, dialog_id):
            return
        if message.out:
            await self._owner_sent(dialog_id, message.message or "", message.id)
        else:
            self._restart_timer(dialog_id)

    async def _is_person(self, user_id: int) -> bool:
        """A person the twin may draft for: not a bot, Saved Messages or the service account."""
        if user_id not in self._people:
            entity = await self.client.get_entity(types.PeerUser(user_id))
            if skip_reason(entity) is not None:
                return False
            self._people[user_id] = entity
        return True

    def _store_message(self, message: types.Message, dialog_id: int) -> bool:
        """Store the message as the collector does; False when the chat is excluded, forgotten or not drafted."""
        entity = self._people[dialog_id]
        if self.store.forgotten()(dialog_id):
            return False
        dialog = self.store.dialog(dialog_id)
        if dialog is None:
            self.store.upsert_people([person_of(entity)])
            name = utils.get_display_name(entity)
            self.store.upsert_dialog({"id": dialog_id, "type": "personal_chat", "name": name, "person_id": dialog_id})
        elif dialog["excluded"]:
            return False
        row = message_to_row(message, dialog_id, self.owner_id, self.settings.keep_stickers)
        save_batch(self.store, dialog_id, [row], False)
        self.store.rebuild_sessions(dialog_id, self.settings.session_gap_seconds)
        return may_draft(self.store, self.settings, self.store.require_person(dialog_id))

    async def _owner_sent(self, dialog_id: int, text: str, message_id: int) -> None:
        """The owner answered: their reply decides the open draft; a twin's draft still shown is stale."""
        if timer := self._timers.pop(dialog_id, None):
            timer.cancel()
        draft_id = self._open.pop(dialog_id, None)
        twin_text = self._twin_text.pop(dialog_id, None)
        if draft_id is not None and twin_text is not None:
            verdict, distance = verdict_of(twin_text, text)
            await asyncio.to_thread(self.store.close_draft, draft_id, verdict, text, distance, message_id)
        if twin_text is not None and self._shown.get(dialog_id) == twin_text:
            await self._save_draft(dialog_id, "")

    def _restart_timer(self, dialog_id: int) -> None:
        if timer := self._timers.get(dialog_id):
            timer.cancel()
        self._timers[dialog_id] = asyncio.create_task(self._after_quiet(dialog_id))

    async def _after_quiet(self, dialog_id: int) -> None:
        try:
            await asyncio.sleep(self.settings.drafts_quiet_seconds)
        except asyncio.CancelledError:
            return
        del self._timers[dialog_id]  # from here on a new message starts a new timer; this draft still lands
        try:
            await self.draft(dialog_id)
        except Exception:  # one failed draft must not stop the writer
            log.exception("draft in dialog %d failed", dialog_id)

    async def draft(self, dialog_id: int) -> str | None:
        """Write the owner's reply to the conversation so far as the chat's draft; returns its text."""
        await asyncio.to_thread(self.expire)
        shown, mine = self._shown.get(dialog_id, ""), self._twin_text.get(dialog_id)
        if shown and shown != mine:
            log.info("dialog %d: the owner is writing a draft; leaving it", dialog_id)
            return None
        turns, adapter, recalled = await asyncio.to_thread(self._prompt_parts, dialog_id)
        if not turns or turns[-1].speaker == self.owner_slug:
            return None
        memory = self.engine.memory_block(recalled, self.settings.memory_tokens) if recalled else NO_MEMORY
        messages = await self.engine.reply(turns, self.owner_slug, turns[-1].speaker, adapter, memory)
        text = "\n".join(messages)  # a burst's messages on separate lines of one draft
        if not text.strip():
            return None
        if self.dry_run:
            self.say(f"{turns[-1].speaker}: {text}")
            return text
        if not await self._save_draft(dialog_id, text):
            return None
        if (stale := self._open.pop(dialog_id, None)) is not None:  # the friend wrote again: a newer draft
            await asyncio.to_thread(self.store.close_draft, stale, "ignored")
        version = adapter.version if adapter else None
        self._open[dialog_id] = await asyncio.to_thread(
            self.store.open_draft, dialog_id, self.owner_slug, version, text
        )
        self._twin_text[dialog_id] = self._shown[dialog_id] = text
        return text

    def _prompt_parts(self, dialog_id: int) -> tuple[list[ChatTurn], AdapterRef | None, list]:
        turns = conversation(self.store, self.settings, dialog_id)
        request = MemoryRequest.by_settings(self.settings, self.owner_id, self.owner_id, dialog_id, group=False)
        return turns, active_adapter(self.store, self.settings), recall(self.store, request, turns, self._scrub)

    async def _save_draft(self, dialog_id: int, text: str) -> bool:
        """SaveDraftRequest (an empty text clears the draft); a flood wait skips this draft, logged."""
        peer = utils.get_input_peer(self._people[dialog_id])
        try:
            await self.client(SaveDraftRequest(peer=peer, message=text))
        except FLOOD_ERRORS as exc:
            log.warning("flood wait of %d s saving a draft in dialog %d: skipped", exc.seconds, dialog_id)
            return False
        return True

    def expire(self, now: float | None = None) -> int:
        """Close as ignored the open drafts the owner left unanswered for a session gap; returns how many."""
        cutoff = (time.time() if now is None else now) - self.settings.session_gap_seconds
        expired = [r for r in self.store.open_drafts() if r["created_at"] < cutoff]
        for row in expired:
            self.store.close_draft(row["id"], "ignored")
            if self._open.get(row["dialog_id"]) == row["id"]:
                del self._open[row["dialog_id"]]
        return len(expired)


def stats_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`store.draft_stats()` as the owner reads it: one line per persona and adapter version."""
    if not rows:
        return ["drafts: none written yet (TWIN_DRAFTS=on or `twin drafts`)"]
    return [
        f"drafts as {r['persona']} with adapter {r['adapter_version'] or 'none (base model)'}: {r['written']} written,"
        f" {r['accepted']} accepted unchanged, {r['edited']} edited"
        + (f" (mean edit distance {r['mean_distance']:.0f})" if r["mean_distance"] is not None else "")
        + f", {r['ignored']} ignored"
        for r in rows
    ]


async def run_drafts(client: Any, store: Storage, settings: Settings, engine: Engine, **writer: Any) -> DraftWriter:
    """Catch up on what came while the twin was down (the normal sync: watermarks), then draft live."""
    from collector.telethon_sync import sync

    summary = await sync(client, store, settings, progress=False)
    log.info("drafts: caught up (%d new messages), listening", summary.new_messages)
    drafts = DraftWriter(client, store, settings, engine, **writer)
    await drafts.start()
    return drafts
