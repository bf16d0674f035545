"""The Telethon sync against a fake account (real Telethon objects, real SQLite): incremental, crash-safe,
polite to Telegram's rate limits."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from telethon.tl import types

from collector.sync_lock import SyncBusy, SyncGuard
from collector.telethon_rows import SERVICE_USER_ID
from collector.telethon_sync import BATCH_SIZE, TakeoutDelayed, sync
from core.errors import UserError
from core.settings import Settings
from storage import Storage
from tests.fake_telegram import FakeAccount, FakeTelegramClient, InjectedCrash

ALICE, BOB, CAROL = 101, 102, 103


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data")


@pytest.fixture
def store(settings) -> Storage:
    settings.ensure_data_dir()
    return Storage(settings.db_path)


@pytest.fixture
def account() -> FakeAccount:
    acc = FakeAccount()
    acc.add_user(ALICE, "Alice", username="alice")
    acc.add_user(BOB, "Bob", "Stone")
    acc.add_user(CAROL, "Кира")
    acc.add_messages(ALICE, 250)
    acc.add_messages(BOB, 40)
    acc.add_messages(CAROL, 5)
    return acc


async def run(account, store, settings, **kwargs):
    client = FakeTelegramClient(account)
    summary = await sync(client, store, settings, progress=False, **kwargs)
    return client, summary


def stored_ids(store, dialog_id) -> list[int]:
    return [m["id"] for m in store.messages(dialog_id)]


async def test_first_sync_stores_every_private_message_and_moves_the_watermarks(account, store, settings):
    client, summary = await run(account, store, settings)

    for peer in (ALICE, BOB, CAROL):
        assert stored_ids(store, peer) == account.ids(peer)
        assert store.dialog(peer)["watermark"] == account.ids(peer)[-1]
    assert summary.synced == 3 and summary.new_messages == 295
    # 250 → 3 pages, 40 → 1, 5 → 1; one dialog page; stopping at the newest id spares empty end pages
    assert client.history_requests == 5 and client.request_counts["GetDialogsRequest"] == 1
    assert store.dialog(ALICE)["person_id"] == ALICE and store.person(ALICE)["slug"] == "alice"
    assert store.get_meta("last_sync_at") is not None


async def test_second_sync_with_no_new_messages_makes_no_history_request(account, store, settings):
    await run(account, store, settings)
    client, summary = await run(account, store, settings)

    assert client.history_requests == 0
    assert summary.unchanged == 3 and summary.synced == 0 and summary.new_messages == 0
    assert "0 history" in summary.describe()


async def test_new_messages_in_one_dialog_are_fetched_from_its_watermark_only(account, store, settings):
    await run(account, store, settings)
    watermark = store.dialog(BOB)["watermark"]
    new = account.add_messages(BOB, 7, prefix="later")

    client, summary = await run(account, store, settings)

    assert client.history_calls == [
        {"peer": BOB, "min_id": watermark, "max_id": 0, "offset_date": None, "wait_time": 1.0}
    ]
    assert client.history_requests == 1 and summary.new_messages == 7 and summary.unchanged == 2
    assert stored_ids(store, BOB)[-7:] == new and store.dialog(BOB)["watermark"] == new[-1]


async def test_crash_between_batches_then_rerun_leaves_no_gap_and_no_duplicate(account, store, settings):
    account.add_messages(ALICE, 750)  # 1000 in all: five batches
    client = FakeTelegramClient(account)
    client.crash_after = 2 * BATCH_SIZE + 50

    with pytest.raises(InjectedCrash):
        await sync(client, store, settings, progress=False)
    saved = stored_ids(store, ALICE)
    assert saved == account.ids(ALICE)[: len(saved)]  # a contiguous prefix, oldest first
    assert store.dialog(ALICE)["watermark"] == saved[-1]

    client, _ = await run(account, store, settings)
    assert stored_ids(store, ALICE) == account.ids(ALICE)
    assert client.history_calls[0]["min_id"] == saved[-1]  # went on from the watermark, re-read nothing


async def test_crash_inside_a_batch_rolls_back_its_rows_and_watermark_together(account, store, settings, monkeypatch):
    account.add_messages(ALICE, 750)
    real_advance, calls = store.advance_watermark, []

    def dying_advance(dialog_id, message_id):
        calls.append(message_id)
        if len(calls) == 3:
            raise InjectedCrash("killed between insert and watermark")
        real_advance(dialog_id, message_id)

    monkeypatch.setattr(store, "advance_watermark", dying_advance)
    with pytest.raises(InjectedCrash):
        await sync(FakeTelegramClient(account), store, settings, progress=False)
    assert stored_ids(store, ALICE) == account.ids(ALICE)[: 2 * BATCH_SIZE]
    assert store.dialog(ALICE)["watermark"] == account.ids(ALICE)[2 * BATCH_SIZE - 1]

    monkeypatch.setattr(store, "advance_watermark", real_advance)
    await run(account, store, settings)
    assert stored_ids(store, ALICE) == account.ids(ALICE)


async def test_short_flood_wait_is_slept_through(account, store, settings):
    client = FakeTelegramClient(account, flood_sleep_threshold=60)
    client.plan_flood(seconds=20, after=1)

    summary = await sync(client, store, settings, progress=False)

    assert client.slept == [20]
    assert not summary.stopped and summary.new_messages == 295


async def test_long_flood_wait_stops_the_sync_with_progress_saved_and_reported(account, store, settings):
    assert account.dialog_ids() == [CAROL, BOB, ALICE]  # most recent first: 1 + 1 + 3 history pages
    client = FakeTelegramClient(account, flood_sleep_threshold=60)
    client.plan_flood(seconds=3600, after=3)  # Alice's second page

    summary = await sync(client, store, settings, progress=False)

    assert summary.stopped and summary.flood_wait == 3600 and summary.flood_dialog == "Alice"
    assert summary.dialogs_left == 1 and summary.synced == 2
    assert "wait 3600 s" in summary.describe() and "twin collect" in summary.describe()
    assert stored_ids(store, CAROL) == account.ids(CAROL) and stored_ids(store, BOB) == account.ids(BOB)
    assert stored_ids(store, ALICE) == account.ids(ALICE)[:100]
    assert store.dialog(ALICE)["watermark"] == account.ids(ALICE)[99]
    assert any(s["dialog_id"] == ALICE for s in store.sessions())  # sessions rebuilt for what was saved

    client, summary = await run(account, store, settings)
    assert not summary.stopped and client.history_requests == 2  # Alice's remaining 150 only
    assert all(stored_ids(store, p) == account.ids(p) for p in (ALICE, BOB, CAROL))


async def test_long_flood_wait_while_listing_dialogs_is_reported(account, store, settings):
    client = FakeTelegramClient(account)
    client.plan_flood(seconds=900, request="GetDialogsRequest")

    summary = await sync(client, store, settings, progress=False)

    assert summary.flood_wait == 900 and "while listing dialogs" in summary.describe()
    assert client.history_requests == 0 and store.dialogs() == []


async def test_bots_deleted_accounts_saved_messages_service_account_and_groups_are_skipped(store, settings):
    account = FakeAccount()
    account.add_user(ALICE, "Alice")
    account.add_user(200, "Helper", bot=True)
    account.add_user(201, deleted=True)
    account.add_user(account.me.id, is_self=True)
    account.add_user(SERVICE_USER_ID, "Telegram", verified=True, support=True)
    group, channel = account.add_group(7, "Family"), account.add_channel(8, "News")
    for peer in (ALICE, 200, 201, account.me.id, SERVICE_USER_ID, group, channel):
        account.add_messages(peer, 3)

    client, summary = await run(account, store, settings)

    assert [d["id"] for d in store.dialogs()] == [ALICE]
    assert {h["peer"] for h in client.history_calls} == {ALICE}
    assert summary.dialogs_seen == 7 and sum(summary.skipped.values()) == 6
    assert set(summary.skipped) == {
        "bot",
        "deleted account",
        "Saved Messages",
        "Telegram service account",
        "not a one-to-one chat",
    }
    assert {p["id"] for p in store.people()} == {ALICE, account.me.id}


async def test_excluded_dialog_is_untouched(account, store, settings):
    await run(account, store, settings)
    store.set_excluded(BOB, True)
    before = store.dialog(BOB)
    account.add_messages(BOB, 5)
    account.rename(BOB, "Robert")

    client, summary = await run(account, store, settings)

    assert client.history_calls == [] and summary.excluded == 1
    assert store.dialog(BOB) == before and len(stored_ids(store, BOB)) == 40


async def test_media_only_and_service_messages_are_stored_with_their_type(store, settings):
    account = FakeAccount()
    account.add_user(ALICE, "Alice")
    photo = types.MessageMediaPhoto(photo=types.PhotoEmpty(id=1))
    account.add_message(ALICE, "", media=photo)
    account.add_message(ALICE, "", out=True, action=types.MessageActionPhoneCall(call_id=5, duration=61))
    account.add_message(ALICE, "see above", reply_to_id=1)

    await run(account, store, settings)

    rows = store.messages(ALICE)
    assert [(r["text"], r["media_type"]) for r in rows] == [
        (None, "photo"),
        (None, "service:phone_call"),
        ("see above", None),
    ]
    assert rows[1]["sender_id"] == account.me.id and rows[2]["reply_to"] == 1


async def test_refresh_days_picks_up_edits_without_duplicating(account, store, settings):
    # Alice's chat runs up to now, so its last messages fall inside a two-day window.
    account.clock = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    old = account.add_messages(ALICE, 10, seconds_apart=86400 // 2)
    await run(account, store, settings)
    account.edit(ALICE, old[-1], "fixed typo", at=dt.datetime.now(dt.UTC))
    account.edit(ALICE, old[0], "too old to be re-read", at=dt.datetime.now(dt.UTC))

    client, summary = await run(account, store, settings)
    assert client.history_requests == 0  # without --refresh-days an edit costs nothing and is missed

    client, summary = await run(account, store, settings, refresh_days=2)

    rows = {m["id"]: m for m in store.messages(ALICE)}
    assert rows[old[-1]]["text"] == "fixed typo" and rows[old[-1]]["edited"] is not None
    assert rows[old[0]]["text"] == "msg 0"
    assert stored_ids(store, ALICE) == account.ids(ALICE)  # replaced in place, no duplicate
    assert 0 < summary.refreshed_messages <= 5 and summary.new_messages == 0
    assert {h["peer"] for h in client.history_calls} == {ALICE}  # Bob's and Kira's chats are older


async def test_refresh_days_deletes_what_was_deleted_on_telegram_in_that_window(account, store, settings):
    account.clock = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)
    ids = account.add_messages(ALICE, 10, seconds_apart=86400 // 2)
    await run(account, store, settings)
    account.delete(ALICE, ids[-2])  # inside the two-day window
    account.delete(ALICE, ids[0])  # older: not re-read, so not known to be deleted
    recent = int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp())
    store.insert_messages(
        [{"dialog_id": ALICE, "id": 10**9, "sender_id": ALICE, "date": recent, "text": "imported", "source": "export"}]
    )  # an import's id Telegram never had: not a deletion

    _, summary = await run(account, store, settings, refresh_days=2)
    assert summary.deleted_messages == 1 and "1 deleted on Telegram" in summary.describe()
    assert set(stored_ids(store, ALICE)) == {*account.ids(ALICE), ids[0], 10**9}
    # The sessions were cut again without it.
    assert sum(s["n_messages"] for s in store.sessions() if s["dialog_id"] == ALICE) == len(store.messages(ALICE))


async def test_refresh_days_and_new_messages_in_one_run(account, store, settings):
    account.clock = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    first = account.add_message(ALICE, "typo")
    await run(account, store, settings)
    account.edit(ALICE, first, "no typo")
    new = account.add_message(ALICE, "and more")

    client, summary = await run(account, store, settings, refresh_days=1)

    assert summary.new_messages == 1 and summary.refreshed_messages == 1
    assert [m["text"] for m in store.messages(ALICE)][-2:] == ["no typo", "and more"]
    assert stored_ids(store, ALICE)[-1] == new and client.history_requests == 2


async def test_owner_is_a_person_and_meta_owner_id(account, store, settings):
    await run(account, store, settings)

    assert store.get_meta("owner_id") == str(account.me.id)
    assert store.person(account.me.id)["slug"] == "olga"


async def test_owner_id_setting_that_disagrees_is_warned_about(account, store, tmp_path, caplog):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", owner_id=555)

    _, summary = await run(account, store, settings)

    assert "TWIN_OWNER_ID is 555" in summary.describe()
    assert "TWIN_OWNER_ID is 555" in caplog.text


async def test_renamed_person_keeps_their_persona_slug(account, store, settings):
    await run(account, store, settings)
    account.rename(ALICE, "Alicia", username="alicia")

    await run(account, store, settings)

    person = store.person(ALICE)
    assert person["slug"] == "alice" and person["username"] == "alicia" and person["name"] == "Alicia"


async def test_sessions_are_rebuilt_after_a_dialog_is_saved(account, store, settings):
    await run(account, store, settings)
    assert {s["dialog_id"] for s in store.sessions()} == {ALICE, BOB, CAROL}
    account.add_message(BOB, "a day later", seconds_later=86400)

    await run(account, store, settings)

    assert len([s for s in store.sessions() if s["dialog_id"] == BOB]) == 2


async def test_dialog_option_syncs_only_that_dialog(account, store, settings):
    await run(account, store, settings, dialog=str(BOB))
    assert stored_ids(store, BOB) == account.ids(BOB) and stored_ids(store, ALICE) == []
    account.add_messages(BOB, 2)
    account.add_messages(ALICE, 2)

    client, summary = await run(account, store, settings, dialog="bob")

    assert {h["peer"] for h in client.history_calls} == {BOB} and summary.new_messages == 2
    with pytest.raises(UserError, match="twin personas"):
        await run(account, store, settings, dialog="nobody")


async def test_takeout_reads_through_a_takeout_session_and_finishes_it(account, store, settings):
    client = FakeTelegramClient(account)

    await sync(client, store, settings, takeout=True, progress=False)

    assert client.takeout_finished is True and client.takeout_requests >= client.history_requests > 0
    assert {h["wait_time"] for h in client.history_calls} == {0.0}
    assert stored_ids(store, ALICE) == account.ids(ALICE)


async def test_takeout_init_delay_says_to_confirm_and_rerun(account, store, settings):
    client = FakeTelegramClient(account)
    client.takeout_delay = 86400

    with pytest.raises(TakeoutDelayed, match="confirm the data export request") as err:
        await sync(client, store, settings, takeout=True, progress=False)
    assert "86400 s" in str(err.value) and client.history_requests == 0


async def test_a_second_sync_while_one_runs_fails_fast(account, store, settings):
    guard = SyncGuard(settings.data_dir)
    async with guard:
        with pytest.raises(SyncBusy, match="already running"):
            await sync(FakeTelegramClient(account), store, settings, progress=False, guard=guard)
        with pytest.raises(SyncBusy, match="another sync is running"):
            await sync(FakeTelegramClient(account), store, settings, progress=False)
    _, summary = await run(account, store, settings)  # released afterwards
    assert summary.synced == 3


async def test_a_sync_in_another_process_holds_the_lock(account, store, settings):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys; from collector.sync_lock import SyncGuard\n"
            "async def main():\n    async with SyncGuard(sys.argv[1]):\n        print('held', flush=True)\n"
            "        sys.stdin.readline()\nasyncio.run(main())",
            str(settings.data_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SyncBusy, match=f"pid {holder.pid}"):
            await sync(FakeTelegramClient(account), store, settings, progress=False)
    finally:
        holder.communicate("\n", timeout=10)


async def test_progress_bar_does_not_get_in_the_way(account, store, settings):
    summary = await sync(FakeTelegramClient(account), store, settings, progress=True)
    assert summary.new_messages == 295


async def test_a_sync_and_an_import_of_the_same_chat_cut_the_same_sessions(account, store, settings, tmp_path):
    """The collector stores media-only and service messages, an import skips them: they must not move
    session boundaries either way (here a photo two hours later would otherwise open a session early)."""
    import orjson

    from collector.telegram_export import import_export

    account.history[ALICE].clear()
    account.add_message(ALICE, "are you home?")
    account.add_message(ALICE, "yes", out=True)
    account.add_message(ALICE, media=types.MessageMediaPhoto(photo=None), seconds_later=2 * 3600)
    account.add_message(ALICE, action=types.MessageActionChatEditTitle(title="x"), seconds_later=60)
    account.add_message(ALICE, "look at this", seconds_later=30 * 60)
    account.add_message(ALICE, "nice", out=True)
    await run(account, store, settings, dialog=ALICE)

    def exported(spec) -> dict:
        sender = account.me.id if spec.out else ALICE
        msg = {
            "id": spec.id,
            "type": "service" if spec.action else "message",
            "text": spec.text,
            "date_unixtime": str(int(spec.date.timestamp())),
            "from_id": f"user{sender}",
        }
        return msg | ({"photo": "(File not included)"} if spec.media else {})

    messages = [exported(s) for s in account.history[ALICE]]
    chat = {"name": "Alice", "type": "personal_chat", "id": ALICE, "messages": messages}
    (tmp_path / "result.json").write_bytes(orjson.dumps(chat))
    imported = Storage(tmp_path / "imported.db")
    import_export(
        imported,
        tmp_path / "result.json",
        owner_id=account.me.id,
        include_groups=False,
        keep_stickers=True,
        gap_seconds=settings.session_gap_seconds,
        progress=False,
    )

    def cut(s: Storage) -> list[tuple]:
        return [(x["id"], x["start"], x["end"], x["n_messages"], x["content_hash"]) for x in s.sessions()]

    assert len(store.messages(ALICE)) == 6 and len(imported.messages(ALICE)) == 4
    assert cut(store) == cut(imported) and len(cut(store)) == 2
