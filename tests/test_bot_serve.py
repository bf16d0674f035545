"""The parts of `twin serve` around the Dispatcher: scheduled jobs, webhook mode, graceful drain, bot setup."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from bot.delivery import build_bot
from bot.schedule import build_scheduler
from bot.webhook import WEBHOOK_PATH, run_webhook
from collector.telethon_client import NotLoggedIn
from core.errors import UserError
from core.settings import Settings
from tests.bot_api_stub import BotApiStub
from tests.bot_fakes import OWNER, TwinUnderTest
from tests.train_corpus import Corpus
from trainer.rounds import RoundOptions
from trainer.runner import TrainingOutcome

FRIEND = 2000


class CountingTraining:
    def __init__(self):
        self.calls = []

    async def __call__(self, settings, opts, on_progress):
        self.calls.append(opts)
        return TrainingOutcome("skipped", 0, final={"event": "skipped", "reason": "nothing new"})


@pytest.fixture
def twin(tmp_path):
    t = TwinUnderTest(tmp_path / "data", train=CountingTraining(), api_id=1, api_hash="x" * 32)
    t.store.allow(user_id=FRIEND)
    yield t
    t.close()


def test_scheduler_has_sync_and_training_jobs_from_settings(twin):
    jobs = {job.id for job in build_scheduler(twin.settings, twin.jobs).get_jobs()}
    assert jobs == {"sync", "training"}
    quiet = twin.settings.model_copy(update={"sync_interval_minutes": 0, "train_interval_hours": 0})
    assert build_scheduler(quiet, twin.jobs).get_jobs() == []


async def test_a_scheduled_sync_that_keeps_failing_is_reported_once(twin):
    def broken(settings):
        raise NotLoggedIn("the Telegram session is not logged in: run `twin login`")

    twin.jobs._sync_client = broken
    for _ in range(3):
        assert twin.jobs.start_sync(scheduled=True)
        await twin.settle()
    assert twin.session.texts(OWNER) == ["Sync failed: the Telegram session is not logged in: run `twin login`"]


async def test_scheduled_training_waits_for_enough_new_sessions(twin):
    await twin.jobs.scheduled_training()
    await twin.settle()
    assert twin.jobs._train.calls == []
    Corpus(twin.store).add(twin.settings.train_min_new_sessions, 0)
    await twin.jobs.scheduled_training()
    await twin.settle()
    assert twin.jobs._train.calls == [RoundOptions()]
    assert twin.session.texts(OWNER) == []  # a scheduled round with nothing to report stays quiet


async def test_the_scheduled_round_follows_the_interval_or_cron_and_the_new_sessions_rule(twin):
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    from bot.schedule import MISFIRE_GRACE_S, training_trigger
    from trainer.rounds import training_needed

    job = build_scheduler(twin.settings, twin.jobs).get_job("training")
    assert isinstance(job.trigger, IntervalTrigger) and job.trigger.interval.total_seconds() == 24 * 3600
    assert job.max_instances == 1 and job.coalesce and job.misfire_grace_time == MISFIRE_GRACE_S
    nightly = twin.settings.model_copy(update={"train_cron": "0 4 * * *"})
    assert isinstance(build_scheduler(nightly, twin.jobs).get_job("training").trigger, CronTrigger)
    assert training_trigger(twin.settings.model_copy(update={"train_interval_hours": 0})) is None

    corpus = Corpus(twin.store)
    corpus.add(twin.settings.train_min_new_sessions - 1, 2)
    assert training_needed(twin.settings) == (False, 19, 20)
    await job.func()  # the tick itself: below the threshold it starts no trainer process
    await twin.settle()
    assert twin.jobs._train.calls == []
    corpus.add(1)
    await job.func()
    await twin.settle()
    assert twin.jobs._train.calls == [RoundOptions()]


async def test_drain_lets_a_reply_in_flight_go_out(twin):
    twin.engine.delay = 0.3
    await twin.feed(twin.update(FRIEND, "hi"))
    await asyncio.sleep(0.05)
    await twin.conversations.drain(timeout=5)
    assert twin.session.texts(FRIEND) == ["user1000 re: hi"]


def test_a_malformed_token_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not look like a bot token"):
        build_bot(Settings(_env_file=None, data_dir=tmp_path, bot_token="not-a-token"))


def test_a_self_hosted_bot_api_server_is_used_for_requests(tmp_path):
    bot = build_bot(Settings(_env_file=None, data_dir=tmp_path, bot_token="1:x", bot_api_url="http://127.0.0.1:8081/"))
    assert bot.session.api.api_url(bot.token, "getMe") == "http://127.0.0.1:8081/bot1:x/getMe"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhook_mode_answers_updates_posted_with_the_secret(tmp_path):
    port = _free_port()
    twin = TwinUnderTest(
        tmp_path / "data",
        bot_webhook_url="https://twin.example.org",
        bot_webhook_listen=f"127.0.0.1:{port}",
        bot_webhook_secret="s3cret-header",
    )
    twin.store.allow(user_id=FRIEND)
    stop = asyncio.Event()
    server = asyncio.create_task(run_webhook(twin.dp, twin.bot, twin.settings, stop))
    await asyncio.sleep(0.3)
    hook = twin.session.calls("setWebhook")[0].data
    assert hook["url"] == "https://twin.example.org" + WEBHOOK_PATH and hook["secret_token"] == "s3cret-header"
    update = twin.update(FRIEND, "hi via webhook").model_dump(mode="json", exclude_none=True, by_alias=True)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
            assert resp.status == 401
        async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-header"}) as resp:
            assert resp.status == 200
    await asyncio.sleep(0.1)
    await twin.settle()
    assert twin.session.texts(FRIEND) == ["user1000 re: hi via webhook"]
    stop.set()
    await server
    twin.close()


async def test_serve_with_a_token_telegram_refuses_says_so_in_one_line(tmp_path):
    stub = BotApiStub("999:the-right-token")
    url = await stub.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")} | {
        "TWIN_DATA_DIR": str(tmp_path / "data"),
        "TWIN_OWNER_ID": "1",
        "TWIN_BOT_TOKEN": "999:WRONG-secret-part",
        "TWIN_BOT_API_URL": url,
        "TWIN_BASE_MODEL": str(tmp_path / "no-model"),
    }
    twin = str(Path(sys.executable).with_name("twin"))
    proc = await asyncio.create_subprocess_exec(twin, "serve", cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    await stub.stop()
    text = (out + err).decode()
    assert proc.returncode == 1 and "Telegram refused TWIN_BOT_TOKEN" in text
    assert "Traceback" not in text and "WRONG-secret-part" not in text


async def test_twin_serve_answers_no_forged_webhook_post_and_dispatches_telegrams(tmp_path, tiny_model_dir):
    from storage import Storage

    token, forged_id, port = "4242:webhook-secret-part", 999000111, _free_port()
    stub = BotApiStub(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")} | {
        "TWIN_DATA_DIR": str(tmp_path / "data"),
        "TWIN_OWNER_ID": str(OWNER),
        "TWIN_BOT_TOKEN": token,
        "TWIN_BOT_API_URL": await stub.start(),
        "TWIN_BASE_MODEL": str(tiny_model_dir),
        "TWIN_ENGINE": "transformers",
        "TWIN_BOT_WEBHOOK_URL": "https://twin.example.org",
        "TWIN_BOT_WEBHOOK_LISTEN": f"127.0.0.1:{port}",  # no TWIN_BOT_WEBHOOK_SECRET
        "TWIN_SYNC_INTERVAL_MINUTES": "0",
        "TWIN_TRAIN_INTERVAL_HOURS": "0",
        "HF_HUB_OFFLINE": "1",
    }
    twin = str(Path(sys.executable).with_name("twin"))
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = await asyncio.create_subprocess_exec(twin, "serve", cwd=tmp_path, env=env, stderr=err)
    try:
        await stub.wait_for(lambda: stub.of("setWebhook"), 180)
        secret = str(stub.of("setWebhook")[0].params["secret_token"])
        assert len(secret) >= 32
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 1_700_000_000,
                "chat": {"id": OWNER, "type": "private", "first_name": "Owner"},
                "from": {"id": OWNER, "is_bot": False, "first_name": "Owner"},
                "text": f"/allow {forged_id}",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            },
        }
        url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        header = "X-Telegram-Bot-Api-Secret-Token"
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {header: "guessed"}):  # anyone can claim to be the owner: owner ids are no secret
                async with http.post(url, json=update, headers=headers) as resp:
                    assert resp.status == 401
            await asyncio.sleep(0.5)
            assert not Storage(tmp_path / "data" / "twin.db").is_allowed(forged_id)
            assert stub.texts(OWNER) == []
            async with http.post(url, json=update | {"update_id": 2}, headers={header: secret}) as resp:
                assert resp.status == 200  # the positive control: what Telegram sends is handled
        await stub.wait_for(lambda: stub.texts(OWNER), 30)
        assert Storage(tmp_path / "data" / "twin.db").is_allowed(forged_id)
        assert secret not in log.read_text()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)
        await stub.stop()
