"""The event loop only waits on the network: while the bot syncs, runs big reads, starts or stops a round or
starts vLLM, a heartbeat on its loop never stalls past LAG_LIMIT_S, and no command or job touches storage on
the loop's thread (real Dispatcher, real storage and jobs; the Bot API, Telegram and vLLM's core faked).

The big database here holds BIG_MESSAGES (bench/bot.py measures the same commands at 1,000,000): /personas
runs the same query on it, and it already takes several times LAG_LIMIT_S there when run on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bot.handlers.forget import ForgetButton
from bot.menu import OWNER_COMMANDS, PUBLIC_COMMANDS
from storage.db import Database
from tests.bot_fakes import OWNER, TwinUnderTest, fake_sync_client
from tests.fake_telegram import FakeAccount, FakeTelegramClient
from tests.loop_lag import Heartbeat, build_big_store

# The longest the loop may stall: a human does not notice it, and every chat's next step waits that long.
LAG_LIMIT_S = 0.100
FRIEND = 10_001  # a partner in the big database, and allowed to talk to the twin
BIG_MESSAGES = 200_000
SYNC_MESSAGES, SYNC_DIALOGS = 50_000, 10


@pytest.fixture(scope="session")
def big_data_dir(tmp_path_factory):
    """A data dir whose twin.db holds BIG_MESSAGES messages in 200 dialogs (built once, read only)."""
    data = tmp_path_factory.mktemp("big") / "data"
    data.mkdir(mode=0o700)
    store = build_big_store(data / "twin.db", BIG_MESSAGES, OWNER)
    store.allow(user_id=FRIEND)
    store.close()
    return data


class NetworkedClient(FakeTelegramClient):
    """The fake Telegram client with a round trip per request, as on a network: the sync's fetches let the
    loop run other things, and only its own work between them can stall it."""

    async def request(self, kind: str) -> None:
        await asyncio.sleep(0.001)
        await super().request(kind)


def lag_report(beat: Heartbeat) -> str:
    slow = sorted(beat.gaps)[-5:]
    return f"longest gaps between heartbeat ticks: {', '.join(f'{g * 1000:.0f} ms' for g in slow)}"


async def timed_reply(twin: TwinUnderTest, user_id: int, text: str) -> float:
    """Seconds from a user's message to the twin's reply in that chat."""
    before = len(twin.session.texts(user_id))
    started = time.perf_counter()
    await twin.feed(twin.update(user_id, text))
    while len(twin.session.texts(user_id)) == before:
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def test_the_loop_never_stalls_while_a_sync_stores_50000_messages(tmp_path):
    account = FakeAccount(me_id=OWNER)
    for p in range(SYNC_DIALOGS):
        account.add_user(20_000 + p, f"Друг{p}", username=f"friend{p}")
        account.add_messages(20_000 + p, SYNC_MESSAGES // SYNC_DIALOGS, prefix="привет 你好")
    twin = TwinUnderTest(tmp_path / "data", sync_client=fake_sync_client(NetworkedClient(account)))
    twin.store.allow(user_id=FRIEND)
    try:
        async with Heartbeat() as beat:
            await twin.feed(twin.update(OWNER, "/sync"))
            replies = []
            while "sync" in twin.jobs.running():
                replies.append(await timed_reply(twin, FRIEND, "ты тут?"))
                await asyncio.sleep(0.2)
            await twin.settle(timeout=600)
        assert twin.store.counts()["messages"] == SYNC_MESSAGES
        assert "Sync done" in twin.session.texts(OWNER)[-1]
        assert replies, "the sync ended before a message could be sent during it"
        assert beat.longest < LAG_LIMIT_S, lag_report(beat)
    finally:
        twin.close()


@pytest.mark.parametrize("command", ["/personas", "/status", "/start", "/persona", "/forget friend7"])
async def test_the_loop_never_stalls_on_a_command_reading_a_big_database(big_data_dir, command):
    twin = TwinUnderTest(big_data_dir)
    try:
        async with Heartbeat() as beat:
            await twin.feed(twin.update(OWNER, command))
            await twin.settle()
        assert twin.session.texts(OWNER), f"{command} got no answer"
        assert beat.longest < LAG_LIMIT_S, lag_report(beat)
    finally:
        twin.close()


async def test_the_loop_never_stalls_while_a_round_starts_and_is_stopped(tmp_path):
    twin = TwinUnderTest(tmp_path / "data")  # the real round: `python -m evaluation.round` in a subprocess
    try:
        async with Heartbeat() as beat:
            await twin.feed(twin.update(OWNER, "/retrain"))
            await asyncio.sleep(1.0)
            assert await twin.jobs.cancel_training()
            await twin.settle()
        assert beat.longest < LAG_LIMIT_S, lag_report(beat)
    finally:
        twin.close()


async def test_the_loop_never_stalls_while_vllm_starts(tmp_path, tiny_model_dir, monkeypatch):
    """vLLM's AsyncLLM takes a while to build (its engine core process loads the model): here a stand-in
    that blocks for a second in its place, at vLLM's own boundary (AsyncLLM.from_engine_args)."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from engine.vllm_engine import VLLMEngine

    built_on: list[threading.Thread] = []

    class SlowAsyncLLM:
        model_config = None

        def shutdown(self) -> None:
            pass

    def slow_build(cls, args, *rest, **kw):
        built_on.append(threading.current_thread())
        time.sleep(1.0)
        return SlowAsyncLLM()

    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(slow_build))
    twin = TwinUnderTest(tmp_path / "data")
    engine = VLLMEngine(twin.settings.model_copy(update={"base_model": str(tiny_model_dir)}))
    try:
        async with Heartbeat() as beat:
            starting = asyncio.create_task(engine.start())
            await asyncio.sleep(0.2)
            assert await timed_reply(twin, OWNER, "hey") < 0.5  # the bot answers while the engine starts
            await starting
        assert built_on and built_on[0] is not threading.main_thread()
        assert beat.longest < LAG_LIMIT_S, lag_report(beat)
    finally:
        await engine.close()
        twin.close()


class Training:
    """The trainer's subprocess as the bot sees it: its writes happen in another process (here a thread)."""

    def __init__(self, store):
        self.store = store

    async def __call__(self, settings, opts, on_progress):
        from trainer.runner import TrainingOutcome

        def write() -> int:
            version = self.store.next_adapter_version()
            self.store.add_adapter(
                {"version": version, "base_model": "tiny", "path": f"adapters/{version:04d}", "status": "candidate"}, []
            )
            self.store.activate_adapter(version)
            return version

        version = await asyncio.to_thread(write)
        await on_progress({"event": "step", "step": 1, "of": 1, "loss": 2.0})
        final = {"event": "done", "version": version, "promoted": True, "eval_loss": 1.0}
        return TrainingOutcome("done", 0, version=version, promoted=True, eval_loss=1.0, final=final)


async def test_no_command_or_job_touches_storage_on_the_event_loop(tmp_path, monkeypatch):
    account = FakeAccount(me_id=OWNER)
    account.add_user(FRIEND, "Саша", username="sasha")
    account.add_messages(FRIEND, 30)
    twin = TwinUnderTest(tmp_path / "data", sync_client=fake_sync_client(FakeTelegramClient(account)))
    twin.jobs._train = Training(twin.store)
    twin.store.allow(user_id=FRIEND)
    await twin.say(OWNER, "/sync")  # people and messages to work on (checked below too)
    await twin.say(OWNER, "/retrain")
    await twin.say(OWNER, "/retrain")
    on_loop: list[str] = []
    loop_thread = threading.get_ident()
    for name in ("query", "transaction"):
        original = getattr(Database, name)

        def guarded(self, *args, _original=original, _name=name, **kwargs):
            if threading.get_ident() == loop_thread:
                on_loop.append(f"{_name}{args[:1]}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Database, name, guarded)
    args = {"allow": "5555", "deny": "5555", "rollback": "1", "forget": "sasha", "why": "sasha", "persona": "sasha"}
    commands = [f"/{c} {args.get(c, 'sasha')}" for c in [*PUBLIC_COMMANDS, *OWNER_COMMANDS]]
    for text in ["hi, привет", *commands, "/allowed", "/status", "/sync", "/retrain", "/rollback"]:
        checked = len(on_loop)
        await twin.say(OWNER, text)
        await twin.say(FRIEND, "как дела?")
        assert on_loop[checked:] == [], f"{text} called storage on the event loop: {on_loop[checked:]}"
    await twin.feed(twin.button(OWNER, ForgetButton(person_id=FRIEND, confirm=True).pack()))
    await twin.settle()
    assert on_loop == [], f"/forget's button called storage on the event loop: {on_loop}"
    assert any("Forgot sasha" in s.data["text"] for s in twin.session.calls("editMessageText"))
    twin.close()
