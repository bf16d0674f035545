"""`twin serve` as a real process against a Bot API stand-in on 127.0.0.1, with the vLLM engine on a tiny
model and the real trainer subprocess. Two starts in all (each vLLM start costs 20-70 s on 2 cores)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from bot.chats import ENGINE_FAILED
from bot.handlers.guard import REFUSAL
from storage import Storage
from tests.bot_api_stub import BotApiStub
from tests.train_corpus import Corpus

pytestmark = pytest.mark.slow

TOKEN = "123456:E2E-secret-token-part"
API_HASH = "e2e0fa4e5ec4e7a5b0c0ffee00ba5e11"
OWNER, FRIEND, STRANGER = 1, 2, 777  # the corpus' owner is alice (id 1); bob is 2
START_TIMEOUT = 300  # a vLLM start on 2 busy cores
REPLY_TIMEOUT = 120
TRAIN_TIMEOUT = 600
# A few quick steps at a high rate: the adapter must change the tiny model's output (the engine's smoke
# check refuses one that does not), and the first adapter is promoted.
TRAIN_KNOBS = """lora_r = 8
lora_alpha = 16
learning_rate = 0.02
epochs = 1
pack_tokens = 256
lora_dropout = 0.0
max_steps = 3
"""


class Serve:
    """One `twin serve` process; its log (stderr) goes to a file the test reads."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path):
        self.env, self.cwd, self.log_path = env, cwd, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, stub: BotApiStub) -> None:
        twin = str(Path(sys.executable).with_name("twin"))
        with self.log_path.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(twin, "serve", cwd=self.cwd, env=self.env, stderr=log)
        polls = len(stub.of("getUpdates"))
        await self.until(stub, lambda: len(stub.of("getUpdates")) > polls, START_TIMEOUT)

    async def until(self, stub: BotApiStub, predicate, timeout: float):
        """Wait for `predicate` on the stub, failing at once (with the log) if the process dies."""
        waiter = asyncio.ensure_future(stub.wait_for(predicate, timeout))
        died = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
        died.cancel()
        if waiter not in done:
            waiter.cancel()
            pytest.fail(f"twin serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return waiter.result()

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 120)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def fake_session() -> str:
    """A well-formed Telethon StringSession (random auth key) for a data centre at a closed local port: a
    sync with it gets as far as connecting, then fails."""
    from telethon.crypto import AuthKey
    from telethon.sessions import StringSession

    session = StringSession()
    session.set_dc(2, "127.0.0.1", 9)
    session.auth_key = AuthKey(os.urandom(256))
    return session.save()


SESSION = fake_session()


@pytest.fixture
def env(tmp_path, tiny_model_dir) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    Corpus(Storage(data / "twin.db")).add(12, 3)
    (tmp_path / "train.toml").write_text(TRAIN_KNOBS)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return keep | {
        "TWIN_DATA_DIR": str(data),
        "TWIN_OWNER_ID": str(OWNER),
        "TWIN_BOT_TOKEN": TOKEN,
        "TWIN_API_ID": "12345",
        "TWIN_API_HASH": API_HASH,
        "TWIN_SESSION": SESSION,
        "TWIN_BASE_MODEL": str(tiny_model_dir),
        "TWIN_ENGINE": "vllm",
        "TWIN_VLLM_MAX_MODEL_LEN": "1024",
        "TWIN_TRAIN_CONFIG": str(tmp_path / "train.toml"),
        "TWIN_BOT_TYPING_DELAY": "0",
        "TWIN_SYNC_INTERVAL_MINUTES": "0",
        "TWIN_TRAIN_INTERVAL_HOURS": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }


async def ask(serve: Serve, stub: BotApiStub, user: int, text: str, timeout: float = REPLY_TIMEOUT) -> str:
    """Send `text` as `user` and return the first message the bot sends back to that chat."""
    before = len(stub.texts(user))
    await stub.push_text(user, text, first_name={OWNER: "Alice", FRIEND: "Bob"}.get(user, "Eve"))
    await serve.until(stub, lambda: len(stub.texts(user)) > before, timeout)
    return stub.texts(user)[before]


def replies_logged(log: str) -> list[tuple[str, str]]:
    """(persona, adapter) of each reply round in the serve log."""
    return re.findall(r"chat 1: \d+ message\(s\) as (\w+) with adapter (.+?) in ", log)


async def test_twin_serve_end_to_end(env, tmp_path):
    stub = BotApiStub(TOKEN)
    env["TWIN_BOT_API_URL"] = await stub.start()
    serve = Serve(env, tmp_path, tmp_path / "serve.log")
    try:
        await serve.start(stub)
        assert {c.params["scope"]["type"] for c in stub.of("setMyCommands")} == {"default", "chat"}

        reply = await ask(serve, stub, OWNER, "hey")
        assert reply != ENGINE_FAILED and stub.of("sendChatAction", OWNER)

        await stub.push_text(STRANGER, "hello, who are you?")
        assert await ask(serve, stub, OWNER, "/allow 2") == "2 may talk to me now."
        assert await ask(serve, stub, FRIEND, "/retrain") == REFUSAL
        assert await ask(serve, stub, OWNER, "/persona bob") == "From now on I'm bob in this chat."
        assert stub.texts(STRANGER) == []  # no model output, no line (TWIN_BOT_STRANGER_REPLY is empty)
        assert Storage(Path(env["TWIN_DATA_DIR"]) / "twin.db").adapters() == []  # the refused /retrain did nothing

        assert (await ask(serve, stub, OWNER, "/retrain")).startswith("Training a new adapter")
        finished = ("Adapter ", "Training failed", "Training finished")
        await serve.until(stub, lambda: any(t.startswith(finished) for t in stub.texts(OWNER)), TRAIN_TIMEOUT)
        result = next(t for t in stub.texts(OWNER) if t.startswith(finished))
        assert result.startswith("Adapter 0001: eval loss") and "promoted" in result and "not promoted" not in result
        assert not any("is not served" in t or "failed" in t for t in stub.texts(OWNER))

        reply = await ask(serve, stub, OWNER, "hey again")
        assert reply != ENGINE_FAILED
        assert replies_logged(serve.log())[-1] == ("bob", "1")  # the new adapter, playing bob
        assert await serve.stop() == 0
        assert "stopped" in serve.log()

        await serve.start(stub)  # a restart remembers the chat's persona and serves the active adapter
        assert (await ask(serve, stub, OWNER, "/persona")).startswith("Here I'm bob.")
        assert await ask(serve, stub, OWNER, "and now?") != ENGINE_FAILED
        assert replies_logged(serve.log())[-1] == ("bob", "1")
        assert (await ask(serve, stub, OWNER, "/sync")).startswith("Syncing")  # the fake session fails to connect
        await serve.until(stub, lambda: any(t.startswith("Sync failed") for t in stub.texts(OWNER)), REPLY_TIMEOUT)
        assert await serve.stop() == 0
        told = "\n".join(stub.texts(OWNER))
        for text in (serve.log(), told):  # the whole run's log, and everything the bot said
            assert TOKEN.split(":")[1] not in text and API_HASH not in text
            assert SESSION not in text and SESSION[10:40] not in text
    finally:
        if serve.proc and serve.proc.returncode is None:
            serve.proc.kill()
            await serve.proc.wait()
        await stub.stop()
