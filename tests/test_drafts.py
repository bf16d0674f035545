"""Drafts in the owner's own chats: real Telethon TL updates in, real SaveDraftRequests out, through the fake
network edge (tests/fake_telegram.py); storage is real SQLite, the engine the bot tests' double."""

from __future__ import annotations

import time

import pytest
from telethon.tl.functions.messages import SaveDraftRequest

from collector.drafts import DraftWriter, edit_distance
from collector.telethon_sync import sync
from core.settings import Settings
from storage import Storage
from tests.bot_fakes import EngineDouble
from tests.fake_telegram import FakeAccount, FakeTelegramClient

ANNA, BOB = 11, 12


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", drafts_quiet_seconds=0.05)


@pytest.fixture
def store(settings):
    settings.ensure_data_dir()
    s = Storage(settings.db_path)
    yield s
    s.close()


@pytest.fixture
def account() -> FakeAccount:
    account = FakeAccount()
    account.add_user(ANNA, "Anna", username="anna")
    account.add_user(BOB, "Bob", username="bob")
    return account


async def started(account, store, settings) -> tuple[DraftWriter, FakeTelegramClient]:
    client = FakeTelegramClient(account)
    writer = DraftWriter(client, store, settings, EngineDouble())
    await writer.start()
    return writer, client


def drafts(client, user_id: int) -> list[str]:
    """The drafts saved in one chat, in order (an empty one clears it)."""
    return [r.message for r in client.requests if isinstance(r, SaveDraftRequest) and r.peer.user_id == user_id]


async def test_a_burst_gets_one_draft_after_the_quiet(account, store, settings):
    writer, client = await started(account, store, settings)
    for text in ("hi", "are you free", "tonight?"):
        await client.push(account.new_message(ANNA, text))
        await client.push(account.typing(ANNA))
    assert drafts(client, ANNA) == []  # still typing: the burst goes on
    await writer.idle()
    assert drafts(client, ANNA) == ["olga re: tonight?"]
    assert writer.engine.calls[0]["turns"][-1].messages == ("hi", "are you free", "tonight?")
    assert [m["text"] for m in store.messages(ANNA)] == ["hi", "are you free", "tonight?"]
    assert store.dialog(ANNA)["watermark"] == account.ids(ANNA)[-1]  # stored as the collector stores
    assert [(d["dialog_id"], d["text"], d["persona"]) for d in store.open_drafts()] == [
        (ANNA, "olga re: tonight?", "olga")
    ]


async def test_the_owners_own_draft_is_never_overwritten_or_cleared(account, store, settings):
    writer, client = await started(account, store, settings)
    await client.push(account.draft(ANNA, "I was going to say"))
    await client.push(account.new_message(ANNA, "hello?"))
    await client.push(account.new_message(BOB, "yo"))
    await writer.idle()
    assert drafts(client, ANNA) == [] and drafts(client, BOB) == ["olga re: yo"]
    await client.push(account.draft(BOB, "olga re: yo, and more"))  # the owner edits the twin's draft
    await client.push(account.new_message(BOB, "still there?"))
    await writer.idle()
    assert drafts(client, BOB) == ["olga re: yo"]


async def test_groups_channels_bots_saved_messages_excluded_and_forgotten_dialogs_get_no_draft(
    account, store, settings
):
    group, channel = account.add_group(500, "Family"), account.add_channel(600, "News")
    account.add_user(13, "Helper", bot=True)
    account.add_user(14, "Eve", username="eve")
    account.add_user(15, "Gone", username="gone")
    account.add_user(account.me.id, is_self=True)  # Saved Messages
    await sync(FakeTelegramClient(account), store, settings, progress=False)
    store.set_excluded(14, True)
    store.forget_person(15, settings.session_gap_seconds)
    writer, client = await started(account, store, settings)
    for peer in (group, channel, 13, account.me.id, 14, 15):
        await client.push(account.new_message(peer, "anyone?"))
    await writer.idle()
    assert client.requests == [] and store.open_drafts() == []
    assert store.messages(14) == [] and store.messages(15) == [] and store.person(15) is None


async def test_the_owners_reply_closes_the_draft_accepted_edited_or_ignored(account, store, settings):
    account.add_user(13, "Cleo", username="cleo")
    writer, client = await started(account, store, settings)
    for peer in (ANNA, BOB, 13):
        await client.push(account.new_message(peer, f"ping {peer}"))
    await writer.idle()
    await client.push(account.new_message(ANNA, "olga re: ping 11", out=True))
    await client.push(reply := account.new_message(BOB, "olga: ping back", out=True))
    assert writer.expire(now=time.time() + settings.session_gap_seconds + 1) == 1
    rows = {r["dialog_id"]: r for r in (store.draft(i) for i in range(1, 4))}
    assert (rows[ANNA]["verdict"], rows[ANNA]["owner_text"], rows[ANNA]["distance"]) == (
        "accepted",
        "olga re: ping 11",
        0,
    )
    assert (rows[BOB]["verdict"], rows[BOB]["distance"], rows[BOB]["reply_message_id"]) == (
        "edited",
        edit_distance("olga re: ping 12", "olga: ping back"),
        reply.message.id,  # the preference stage finds the reply, and its context, by it
    )
    assert (rows[13]["verdict"], rows[13]["owner_text"]) == ("ignored", None)
    stats = store.draft_stats()
    assert [(s["written"], s["accepted"], s["edited"], s["ignored"]) for s in stats] == [(3, 1, 1, 1)]


async def test_a_restart_resumes_open_drafts_and_catches_up_without_duplicates(account, store, settings):
    writer, client = await started(account, store, settings)
    await client.push(account.new_message(ANNA, "call me"))
    await writer.idle()
    # Down: the friend writes twice more; the next start syncs them (watermarks), then listens again.
    account.add_message(ANNA, "hello??")
    account.add_message(ANNA, "ok later")
    summary = await sync(FakeTelegramClient(account), store, settings, progress=False)
    assert summary.new_messages == 2
    assert [m["id"] for m in store.messages(ANNA)] == account.ids(ANNA)
    writer2, client2 = await started(account, store, settings)
    await client2.push(account.new_message(ANNA, "olga re: call me", out=True))
    assert store.draft(1)["verdict"] == "accepted"
    assert len(store.messages(ANNA)) == 4


async def test_a_long_flood_wait_skips_the_draft_and_the_writer_goes_on(account, store, settings):
    writer, client = await started(account, store, settings)
    client.plan_flood(3600, "SaveDraftRequest")
    await client.push(account.new_message(ANNA, "hi"))
    await writer.idle()
    assert drafts(client, ANNA) == [] and store.open_drafts() == []
    await client.push(account.new_message(ANNA, "hello?"))
    await writer.idle()
    assert drafts(client, ANNA) == ["olga re: hello?"] and len(store.open_drafts()) == 1


def test_edit_distance_counts_inserts_deletes_and_substitutions():
    assert [edit_distance(*p) for p in (("", "abc"), ("kitten", "sitting"), ("same", "same"))] == [3, 3, 0]


def test_drafts_stats_and_status_print_the_owners_verdicts_per_adapter(tmp_path, store, settings):
    from typer.testing import CliRunner

    from twin.cli import app

    store.close_draft(store.open_draft(ANNA, "olga", 3, "see you"), "edited", "see you!", 1)
    store.open_draft(BOB, "olga", 3, "ok")
    env = {"TWIN_DATA_DIR": str(settings.data_dir)}
    for args in (["drafts", "--stats"], ["status"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        assert "drafts as olga with adapter 3: 2 written, 0 accepted unchanged, 1 edited" in result.output


async def test_a_dry_run_prints_the_draft_and_saves_nothing(account, store, settings):
    client, said = FakeTelegramClient(account), []
    writer = DraftWriter(client, store, settings, EngineDouble(), dry_run=True, say=said.append)
    await writer.start()
    await client.push(account.new_message(ANNA, "привет! 你好"))
    await writer.idle()
    assert said == ["anna: olga re: привет! 你好"]
    assert client.requests == [] and store.open_drafts() == []


async def test_the_twins_draft_still_shown_is_cleared_when_the_owner_answers_otherwise(account, store, settings):
    writer, client = await started(account, store, settings)
    await client.push(account.new_message(ANNA, "lunch?"))
    await writer.idle()
    await client.push(account.new_message(ANNA, "can't today, sorry", out=True))  # sent from another device
    assert drafts(client, ANNA) == ["olga re: lunch?", ""]  # the stale draft is cleared
