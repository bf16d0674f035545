"""Recovery: a hung engine, a trainer killed mid-step while an adapter serves, owner commands in disguise.
After each, the twin is as it was and the next thing asked of it works."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from bot.chats import ENGINE_FAILED
from bot.menu import OWNER_COMMANDS
from core.settings import Settings
from storage import Storage
from tests.bot_fakes import BOT_USERNAME, OWNER, TwinUnderTest
from tests.train_corpus import Corpus
from trainer.config import TrainConfig
from trainer.rounds import RoundOptions
from trainer.runner import run_training_subprocess
from trainer.train import LOCK, run_round

FRIEND, OTHER, STRANGER = 2000, 2001, 3000


@pytest.fixture
def twin(tmp_path):
    t = TwinUnderTest(tmp_path / "data", bot_reply_timeout=0.3)
    t.store.upsert_people([{"id": OWNER, "first_name": "Olga", "username": "olga"}])
    t.store.allow(user_id=FRIEND)
    t.store.allow(user_id=OTHER)
    yield t
    t.close()


async def test_a_hung_engine_costs_one_line_in_bounded_time_and_the_next_message_is_answered(twin):
    real_reply = twin.engine.reply

    async def hanging_reply(turns, persona, partner, adapter, memory=None):
        if turns[-1].messages[-1] == "hang":
            await asyncio.sleep(3600)  # a generation that never ends
        return await real_reply(turns, persona, partner, adapter)

    twin.engine.reply = hanging_reply
    started = time.monotonic()
    await twin.feed(twin.update(FRIEND, "hang"))
    await twin.say(OTHER, "hello")  # another chat is answered while the first one's engine call hangs
    assert twin.session.texts(OTHER) == ["olga re: hello"]
    await twin.settle(timeout=5)
    assert time.monotonic() - started < 3
    assert twin.session.texts(FRIEND) == [ENGINE_FAILED]
    await twin.say(FRIEND, "are you there?")
    assert twin.session.texts(FRIEND) == [ENGINE_FAILED, "olga re: are you there?"]


def _disguises(command: str) -> list[str]:
    return [f"/{command.upper()} sasha", f"/{command}@{BOT_USERNAME} sasha", f"/{command}@{BOT_USERNAME}"]


@pytest.mark.parametrize("command", sorted(OWNER_COMMANDS))
async def test_owner_commands_in_other_spellings_are_refused_to_others_too(twin, command):
    before = list(twin.store.conn.iterdump())
    for text in _disguises(command):
        await twin.say(FRIEND, text)
        await twin.say(STRANGER, text)
    await asyncio.sleep(0.05)
    assert list(twin.store.conn.iterdump()) == before
    assert twin.engine.calls == [] and twin.jobs.running() == []
    assert not twin.session.texts(STRANGER), "a stranger got an answer"
    assert all(not text.startswith("olga") for text in twin.session.texts(FRIEND)), "model output to a command"


# -- a training round killed mid-step while an adapter serves --------------------------------------------
KNOBS = "lora_r = 8\nlora_alpha = 16\nlearning_rate = 3e-3\nepochs = 1\npack_tokens = 256\n"
QUICK = TrainConfig(lora_r=8, lora_alpha=16, learning_rate=3e-3, epochs=1, pack_tokens=256, max_steps=2)


@pytest.mark.slow
def test_a_round_killed_mid_step_keeps_the_active_adapter_frees_the_lock_and_the_next_round_works(
    tmp_path, tiny_model_dir, monkeypatch
):
    # One thread for the trainer child: a tiny model on a busy 2-core box is far slower split over threads.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    toml = tmp_path / "train.toml"
    toml.write_text(KNOBS)
    settings = Settings(
        data_dir=tmp_path / "data", owner_id=1, base_model=str(tiny_model_dir), train_config=toml, _env_file=None
    )
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    corpus = Corpus(store)
    corpus.add(12, 3)
    run_round(settings, QUICK)  # in-process: the rounds around the killed one need no subprocess of their own
    assert store.active_adapter()["version"] == 1
    adapter_files = sorted(p.name for p in (settings.adapters_dir / "0001").iterdir())
    corpus.add(6)

    def kill_mid_round(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 2:
            os.kill(store.lock_holder(LOCK)["pid"], signal.SIGKILL)

    killed = asyncio.run(run_training_subprocess(settings, RoundOptions(max_steps=50), kill_mid_round))
    assert killed.status == "error" and killed.returncode == -signal.SIGKILL
    assert store.active_adapter()["version"] == 1 and [a["version"] for a in store.adapters()] == [1]
    assert sorted(p.name for p in (settings.adapters_dir / "0001").iterdir()) == adapter_files
    assert store.lock_holder(LOCK) is None, "a dead round's lock is stale"

    after = run_round(settings, QUICK)
    assert after.version == 2
    statuses = [r["status"] for r in store.runs()]
    assert statuses == ["succeeded", "failed", "succeeded"], "the killed run is recorded failed"
    assert "died" in store.runs()[1]["error"]
    assert not [p for p in settings.adapters_dir.iterdir() if p.name.startswith(".tmp")], "leftovers removed"
