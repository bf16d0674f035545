"""A fake Telegram account and client for the collector's tests and bench: only the network is fake.

`FakeAccount` holds users, chats and message histories; `FakeTelegramClient` serves them through the same
async methods the collector uses on a real TelegramClient (get_me, iter_dialogs, iter_messages, takeout,
connect, is_user_authorized, disconnect), returning real Telethon objects built offline
(`types.User`, `types.Message`/`MessageService` finished with `_finish_init`, `custom.Dialog`).

Requests are counted the way Telethon sends them: one `GetDialogsRequest` per page of 100 dialogs and one
`GetHistoryRequest` per page of 100 messages, with Telethon's stop rules (a page that is not a slice or
comes back short or empty ends the listing). Messages are kept as compact tuples and built into Telethon
objects only when a page is served, so an account of 200,000 messages fits in memory.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from telethon import errors, utils
from telethon._updates import EntityCache
from telethon.tl import custom, types

PAGE = 100  # Telegram's maximum page for both GetDialogs and GetHistory
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class InjectedCrash(RuntimeError):
    """Stands for the process dying mid-sync (power cut, kill -9, a bug)."""


@dataclass
class Spec:
    """One stored message: the fields a test sets; built into a Telethon object when served."""

    id: int
    date: dt.datetime
    text: str = ""
    out: bool = False
    media: Any = None
    action: Any = None
    fwd_from: Any = None
    reply_to_id: int | None = None
    via_bot_id: int | None = None
    edit_date: dt.datetime | None = None


class FakeAccount:
    """The owner's account: people, chats and histories. Message ids come from one account-wide
    counter, as in Telegram private chats, so one dialog's ids are not dense."""

    def __init__(self, me_id: int = 1000, first_name: str = "Olga", username: str | None = "olga"):
        self.me = types.User(id=me_id, is_self=True, first_name=first_name, username=username, access_hash=1)
        self.entities: dict[int, Any] = {me_id: self.me}
        self.peers: dict[int, Any] = {}
        self.history: dict[int, list[Spec]] = {}
        self.next_id = 1
        self.clock = START

    # -- building ---------------------------------------------------------------------------------
    def add_user(
        self, user_id: int, first_name: str = "", last_name: str | None = None, username: str | None = None, **flags
    ) -> types.User:
        """A user with a dialog; `flags` are User flags such as bot=True, deleted=True, is_self=True."""
        user = types.User(
            id=user_id,
            first_name=first_name or None,
            last_name=last_name,
            username=username,
            access_hash=user_id * 7,
            **flags,
        )
        if flags.get("is_self"):
            user = self.me
        self.entities[user_id] = user
        self.peers[user_id] = types.PeerUser(user_id)
        self.history.setdefault(user_id, [])
        return user

    def add_group(self, chat_id: int, title: str) -> int:
        chat = types.Chat(
            id=chat_id, title=title, photo=types.ChatPhotoEmpty(), participants_count=3, date=START, version=1
        )
        return self._add_chat(chat, types.PeerChat(chat_id))

    def add_channel(self, channel_id: int, title: str) -> int:
        channel = types.Channel(
            id=channel_id, title=title, photo=types.ChatPhotoEmpty(), date=START, broadcast=True, access_hash=channel_id
        )
        return self._add_chat(channel, types.PeerChannel(channel_id))

    def _add_chat(self, entity, peer) -> int:
        marked = utils.get_peer_id(peer)
        self.entities[marked] = entity
        self.peers[marked] = peer
        self.history.setdefault(marked, [])
        return marked

    def add_message(self, peer_id: int, text: str = "", *, out: bool = False, seconds_later: int = 60, **fields) -> int:
        """Append a message to `peer_id`'s history, `seconds_later` after the previous one in the account."""
        self.clock += dt.timedelta(seconds=seconds_later)
        spec = Spec(id=self.next_id, date=self.clock, text=text, out=out, **fields)
        self.next_id += 1
        self.history[peer_id].append(spec)
        return spec.id

    def add_messages(self, peer_id: int, n: int, *, seconds_apart: int = 60, prefix: str = "msg") -> list[int]:
        """`n` text messages, alternating between the other person and the owner."""
        return [
            self.add_message(peer_id, f"{prefix} {i}", out=bool(i % 2), seconds_later=seconds_apart) for i in range(n)
        ]

    def edit(self, peer_id: int, message_id: int, text: str, *, at: dt.datetime | None = None) -> None:
        spec = next(s for s in self.history[peer_id] if s.id == message_id)
        spec.text, spec.edit_date = text, at or self.clock

    def delete(self, peer_id: int, message_id: int) -> None:
        """Delete a message for everyone, as Telegram does: it is simply not served any more."""
        self.history[peer_id] = [s for s in self.history[peer_id] if s.id != message_id]

    def rename(self, user_id: int, first_name: str, username: str | None = None) -> None:
        self.entities[user_id].first_name = first_name
        self.entities[user_id].username = username

    def ids(self, peer_id: int) -> list[int]:
        return [s.id for s in self.history[peer_id]]

    def dialog_ids(self) -> list[int]:
        """Dialogs as Telegram lists them: the most recent message first (empty ones last)."""
        return sorted(self.history, key=lambda p: -(self.history[p][-1].id if self.history[p] else 0))

    # -- live updates (what the owner's client is pushed) -------------------------------------------
    def new_message(self, peer_id: int, text: str, *, out: bool = False, seconds_later: int = 5) -> Any:
        """A message sent now in `peer_id`'s chat (stored in the history too), as UpdateNewMessage."""
        self.add_message(peer_id, text, out=out, seconds_later=seconds_later)
        spec = self.history[peer_id][-1]
        return types.UpdateNewMessage(message=self.build(peer_id, spec, None), pts=spec.id, pts_count=1)

    @staticmethod
    def typing(user_id: int) -> Any:
        return types.UpdateUserTyping(user_id=user_id, action=types.SendMessageTypingAction())

    def draft(self, user_id: int, text: str) -> Any:
        """The owner's draft in a chat as another of their devices reports it (empty: cleared)."""
        draft = types.DraftMessage(message=text, date=self.clock) if text else types.DraftMessageEmpty()
        return types.UpdateDraftMessage(peer=types.PeerUser(user_id), draft=draft)

    # -- serving ----------------------------------------------------------------------------------
    def build(self, peer_id: int, spec: Spec, client) -> Any:
        peer = self.peers[peer_id]
        from_id = types.PeerUser(self.me.id) if spec.out or not isinstance(peer, types.PeerUser) else None
        reply = types.MessageReplyHeader(reply_to_msg_id=spec.reply_to_id) if spec.reply_to_id else None
        common = dict(id=spec.id, peer_id=peer, date=spec.date, out=spec.out, from_id=from_id, reply_to=reply)
        if spec.action is not None:
            msg = types.MessageService(action=spec.action, **common)
        else:
            msg = types.Message(
                message=spec.text,
                media=spec.media,
                fwd_from=spec.fwd_from,
                via_bot_id=spec.via_bot_id,
                edit_date=spec.edit_date,
                **common,
            )
        if client is not None:
            msg._finish_init(client, self.entities, utils.get_input_peer(self.entities[peer_id]))
        return msg


class FakeTelegramClient:
    """Serves a FakeAccount like a logged-in TelegramClient and counts requests by type.

    Flood waits can be planned (`plan_flood`): one not above `flood_sleep_threshold` is slept through
    (recorded in `slept`, as Telethon does), a longer one raises FloodWaitError. `crash_after` raises
    InjectedCrash once that many messages have been handed out.
    """

    def __init__(self, account: FakeAccount, *, authorized: bool = True, flood_sleep_threshold: int = 60):
        self.account = account
        self.authorized = authorized
        self.flood_sleep_threshold = flood_sleep_threshold
        self.request_counts: Counter[str] = Counter()
        self.slept: list[int] = []
        self.history_calls: list[dict[str, Any]] = []
        self.requests: list[Any] = []  # raw TL requests sent with client(request)
        self.handlers: list[Any] = []  # update handlers (add_event_handler)
        self.crash_after: int | None = None
        self.takeout_delay: int | None = None
        self.takeout_requests = 0
        self.takeout_finished: bool | None = None
        self.parse_mode = None
        self._self_id = account.me.id
        self._mb_entity_cache = EntityCache()
        self._floods: list[list] = []  # [request type, requests to let through first, seconds]
        self._handed_out = 0
        self._in_takeout = False

    def plan_flood(self, seconds: int, request: str = "GetHistoryRequest", after: int = 0) -> None:
        """The request of type `request` after the next `after` ones gets a FLOOD_WAIT of `seconds`."""
        self._floods.append([request, after, seconds])

    @property
    def history_requests(self) -> int:
        return self.request_counts["GetHistoryRequest"]

    async def request(self, kind: str) -> None:
        self.request_counts[kind] += 1
        self.takeout_requests += self._in_takeout
        for flood in self._floods:
            if flood[0] != kind:
                continue
            if flood[1] > 0:
                flood[1] -= 1
                continue
            self._floods.remove(flood)
            if flood[2] <= self.flood_sleep_threshold:
                self.slept.append(flood[2])  # Telethon sleeps and resends; the retry is served below
                return
            raise errors.FloodWaitError(request=None, capture=flood[2])

    def hand_out(self) -> None:
        if self.crash_after is not None and self._handed_out >= self.crash_after:
            self.crash_after = None
            raise InjectedCrash(f"injected crash after {self._handed_out} messages")
        self._handed_out += 1

    # -- the TelegramClient surface the collector uses ----------------------------------------------
    async def __call__(self, request) -> Any:
        """A raw TL request (SaveDraftRequest): recorded in `requests`, answered True."""
        await self.request(type(request).__name__)
        self.requests.append(request)
        return True

    def add_event_handler(self, callback, event=None) -> None:
        self.handlers.append(callback)

    async def push(self, update) -> None:
        """Telegram pushing an update: every handler gets it, as events.Raw hands it over."""
        for handler in self.handlers:
            await handler(update)

    async def get_entity(self, peer) -> Any:
        await self.request("GetUsersRequest")
        return self.account.entities[utils.get_peer_id(peer)]

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def is_user_authorized(self) -> bool:
        return self.authorized

    async def get_me(self, input_peer: bool = False):
        await self.request("GetUsersRequest")
        return self.account.me if self.authorized else None

    def iter_dialogs(self, limit: int | None = None, **unsupported) -> _DialogPages:
        if limit is not None or unsupported:
            raise NotImplementedError("the fake lists all dialogs, like the collector")
        return _DialogPages(self)

    def iter_messages(
        self, entity, limit=None, *, min_id=0, max_id=0, offset_date=None, reverse=False, wait_time=None, **unsupported
    ) -> _HistoryPages:
        if not reverse or limit is not None or unsupported:
            raise NotImplementedError("the fake reads history oldest first, like the collector")
        call = dict(
            peer=utils.get_peer_id(entity), min_id=min_id, max_id=max_id, offset_date=offset_date, wait_time=wait_time
        )
        self.history_calls.append(call)
        return _HistoryPages(self, **call)

    def takeout(self, finalize: bool = True, **kinds) -> _Takeout:
        return _Takeout(self, finalize)


class _Pages:
    """Telethon's request iterators: one request per page (`_load` fills `_buffer`, sets `_done`)."""

    _buffer: list
    _done: bool

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._buffer and not self._done:
            await self._load()
        if not self._buffer:
            raise StopAsyncIteration
        self._handing_out()
        return self._buffer.pop(0)

    def _handing_out(self) -> None:
        """Called before each item leaves (history pages count it, for injected crashes)."""

    async def _load(self) -> None:
        raise NotImplementedError


class _DialogPages(_Pages):
    """Telethon's _DialogsIter: `total` is known after the first page."""

    def __init__(self, client: FakeTelegramClient):
        self.client, self.total = client, None
        self._order = client.account.dialog_ids()
        self._buffer: list = []
        self._offset, self._done = 0, False

    async def _load(self) -> None:
        await self.client.request("GetDialogsRequest")
        account = self.client.account
        page = self._order[self._offset : self._offset + PAGE]
        self._offset += len(page)
        self.total = len(self._order)
        for peer_id in page:
            history = account.history[peer_id]
            top = account.build(peer_id, history[-1], self.client) if history else None
            raw = types.Dialog(
                peer=account.peers[peer_id],
                top_message=top.id if top else 0,
                read_inbox_max_id=0,
                read_outbox_max_id=0,
                unread_count=0,
                unread_mentions_count=0,
                unread_reactions_count=0,
                unread_poll_votes_count=0,
                notify_settings=types.PeerNotifySettings(),
            )
            self._buffer.append(custom.Dialog(self.client, raw, account.entities, top))
        is_slice = len(self._order) > PAGE  # messages.dialogs (not a slice) when everything fits
        self._done = not page or len(page) < PAGE or not is_slice


class _HistoryPages(_Pages):
    """Telethon's _MessagesIter in reverse: pages of 100 oldest first above `min_id` (or from
    `offset_date`), stopping at `max_id`, at a short or empty page, or when no slice was needed."""

    def __init__(self, client, peer, min_id, max_id, offset_date, wait_time):
        self.client, self.peer = client, peer
        self.max_id = max_id or float("inf")
        self.offset_date = offset_date
        self._last = min_id
        self._buffer: list = []
        self._done = False

    def _handing_out(self) -> None:
        self.client.hand_out()

    async def _load(self) -> None:
        await self.client.request("GetHistoryRequest")
        account = self.client.account
        history = account.history[self.peer]
        start = bisect.bisect_right(history, self._last, key=lambda s: s.id)
        newer = (s for s in history[start:] if self.offset_date is None or s.date >= self.offset_date)
        page = list(itertools.islice(newer, PAGE))
        self._done = not page or len(history) <= PAGE
        for spec in page:
            if spec.id >= self.max_id:
                self._done = True
                break
            self._buffer.append(account.build(self.peer, spec, self.client))
            self._last = spec.id


class _Takeout:
    """client.takeout(): InitTakeoutSession on enter (or TakeoutInitDelayError), Finish on exit."""

    def __init__(self, client: FakeTelegramClient, finalize: bool):
        self.client, self.finalize = client, finalize

    async def __aenter__(self) -> FakeTelegramClient:
        await self.client.request("InitTakeoutSessionRequest")
        if self.client.takeout_delay:
            raise errors.TakeoutInitDelayError(request=None, capture=self.client.takeout_delay)
        self.client._in_takeout = True
        return self.client

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.client._in_takeout = False
        if self.finalize:
            await self.client.request("FinishTakeoutSessionRequest")
            self.client.takeout_finished = exc_type is None
