"""Every engine for real on the tiny model: vLLM in-process, a vLLM server process, transformers.

Each engine starts once (module-scoped, one at a time) and runs the same behaviour tests. The adapters
are tiny "parrots" trained here to answer with a known burst, so a reply shows which adapter served it.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import pytest_asyncio

from core.format import ChatTurn
from core.settings import Settings
from engine.base import AdapterRef
from engine.decoding import PROBE, Sampling
from storage import Storage
from tests.adapters import misnamed_adapter, train_parrot_adapter, zero_adapter

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

V1 = ("ok see you", "bring the book")
V2 = ("see you", "lol 😂")
CHAT = [ChatTurn("friend", ("hey how are you?",))]
GREEDY = Sampling(temperature=0, top_p=1.0, max_new_tokens=24)


@pytest.fixture(scope="session")
def adapters_store(tiny_model_dir, tmp_path_factory) -> Storage:
    """Adapters 1 (says V1), 2 (says V2), 3 (zero weights) and 4 (module names of another model)."""
    data = tmp_path_factory.mktemp("engine-data")
    store = Storage(data / "twin.db")
    for version, make in (
        (1, lambda p: train_parrot_adapter(tiny_model_dir, p, V1)),
        (2, lambda p: train_parrot_adapter(tiny_model_dir, p, V2, seed=1)),
        (3, lambda p: zero_adapter(tiny_model_dir, p)),
        (4, lambda p: misnamed_adapter(data / "adapters" / "0001", p)),
    ):
        path = make(data / "adapters" / f"{version:04d}")
        store.add_adapter({"version": version, "path": str(path), "base_model": str(tiny_model_dir)}, [])
    return store


def ref(store: Storage, version: int | None = None) -> AdapterRef:
    """The adapter the bot would pass: the active one, or a given version."""
    row = store.adapter(version) if version else store.active_adapter()
    return AdapterRef.from_row(row)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["transformers", "vllm", "remote"])
async def engine(request, tiny_model_dir, adapters_store):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    settings = Settings(
        _env_file=None, base_model=str(tiny_model_dir), vllm_dtype="float32", vllm_max_model_len=256, vllm_max_loras=3
    )
    refs = [ref(adapters_store, v) for v in (1, 2, 3, 4)]
    server = None
    if request.param == "transformers":
        from engine.transformers_engine import TransformersEngine

        eng = TransformersEngine(settings, GREEDY)
    elif request.param == "vllm":
        from engine.vllm_engine import VLLMEngine

        eng = VLLMEngine(settings, GREEDY, refs)
    else:
        from engine.remote import RemoteEngine, start_local_server

        server, url = start_local_server(settings, max_lora_rank=16)
        eng = RemoteEngine(settings.model_copy(update={"engine_url": url}), GREEDY)
    await eng.start()
    yield eng
    await eng.close()
    if server is not None:
        from engine.remote import stop_local_server

        stop_local_server(server)


async def test_reply_is_the_active_adapters_burst(engine, adapters_store):
    adapters_store.activate_adapter(1)
    assert await engine.reply(CHAT, "owner", "friend", ref(adapters_store)) == list(V1)


async def test_prompt_sent_to_the_model_is_the_training_rendering(engine, adapters_store):
    sent = []
    generate = engine.generate

    async def recording(prompt_ids, adapter, sampling):
        sent.append(list(prompt_ids))
        return await generate(prompt_ids, adapter, sampling)

    engine.generate = recording
    try:
        turns = [*CHAT, ChatTurn("owner", V1), ChatTurn("friend", ("let's meet at 7 pm tomorrow", "ok?"))]
        reply = await engine.reply(turns, "owner", "friend", ref(adapters_store, 1))
    finally:
        del engine.generate
    trained = engine.format.render([*turns, ChatTurn("owner", tuple(reply))]).ids
    assert reply and trained[: len(sent[-1])] == sent[-1]


async def test_a_promoted_adapter_serves_the_next_request_while_one_in_flight_finishes_on_the_old(
    engine, adapters_store
):
    adapters_store.activate_adapter(1)
    await engine.load(ref(adapters_store))
    in_flight = asyncio.create_task(engine.reply(CHAT, "owner", "friend", ref(adapters_store)))
    await asyncio.sleep(0)
    adapters_store.activate_adapter(2)  # the trainer promotes adapter 2; the engine keeps running
    assert await engine.reply(CHAT, "owner", "friend", ref(adapters_store)) == list(V2)
    assert await in_flight == list(V1)
    assert await engine.reply(CHAT, "owner", "friend", ref(adapters_store)) == list(V2)


async def test_32_concurrent_chats_all_get_their_adapters_reply(engine, adapters_store):
    adapters = [ref(adapters_store, 1 + i % 2) for i in range(32)]
    replies = await asyncio.gather(*[engine.reply(CHAT, "owner", "friend", a) for a in adapters])
    assert replies == [list(V1) if a.version == 1 else list(V2) for a in adapters]
    if hasattr(engine, "batch_sizes"):  # transformers: the requests were batched, not run one by one
        assert max(engine.batch_sizes) > 1


async def test_min_p_near_one_leaves_only_the_likeliest_token_on_every_engine(engine):
    prompt = engine.format.prompt(CHAT, "owner")
    greedy = await engine.generate(prompt, None, GREEDY)
    hot = Sampling(temperature=1.5, top_p=1.0, min_p=0.999, max_new_tokens=24, seed=3)
    assert (await engine.generate(prompt, None, hot)).token_ids == greedy.token_ids


async def test_smoke_check_refuses_an_adapter_with_zero_weights(engine, adapters_store):
    probe = await engine.generate(engine.format.prompt(CHAT, "owner"), None, PROBE)
    assert len(probe.logprobs) == len(probe.token_ids) > 0  # the check compares log-probabilities too
    zero = ref(adapters_store, 3)
    assert not await engine.load(zero)
    assert "base model" in engine.rejected[3]
    previous = engine._good[-1] if engine._good else None
    reply = await engine.reply(CHAT, "owner", "friend", zero)  # served by the last good adapter instead
    assert previous is not None and reply == list(V1 if previous.version == 1 else V2)
    assert 1 not in engine.rejected and 2 not in engine.rejected


async def test_smoke_check_refuses_an_adapter_whose_modules_match_nothing_and_serving_goes_on(engine, adapters_store):
    assert not await engine.load(ref(adapters_store, 4))
    assert engine.rejected[4]
    assert await engine.reply(CHAT, "owner", "friend", ref(adapters_store, 1)) == list(V1)


async def test_remote_server_keeps_only_the_adapter_in_use_loaded(engine, adapters_store):
    if engine.name != "remote":
        pytest.skip("only the remote engine loads adapters into a server by name")
    await engine.reply(CHAT, "owner", "friend", ref(adapters_store, 1))
    await engine.reply(CHAT, "owner", "friend", ref(adapters_store, 2))
    async with engine._http.get(f"{engine.url}/v1/models") as resp:
        served = {m["id"] for m in (await resp.json())["data"]}
    assert "twin-0002" in served and "twin-0001" not in served


async def test_200_chats_of_5_messages_through_the_real_dispatcher_are_all_answered_in_order(
    engine, adapters_store, tmp_path
):
    """The load case on each real engine: 1,000 messages from 200 chats at once. Each chat's messages reach
    the engine in order, with the active adapter, and every reply the engine makes is delivered, in order.

    A reply the engine drops (degenerate twice: the tiny model loops now and then when a batch of 200 shifts
    its greedy path) leaves the message in the context of the chat's next round; a few may be."""
    from collections import defaultdict

    from tests.bot_fakes import OWNER, TwinUnderTest

    chats, messages = 200, 5
    asked: dict[int, list[tuple[str, ...]]] = defaultdict(list)  # chat → the last turn of each round
    made: dict[int, list[str]] = defaultdict(list)  # chat → every message the engine made for it
    adapters: set[int | None] = set()

    class Noting:
        """The real engine, noting what each reply round was asked and what it answered."""

        rejected = engine.rejected

        async def reply(self, turns, persona, partner, adapter, memory=None):
            chat = int(turns[-1].messages[0].split()[1])
            asked[chat].append(turns[-1].messages)
            adapters.add(adapter.version if adapter else None)
            replies = await engine.reply(turns, persona, partner, adapter, *([memory] if memory else []))
            made[chat] += replies
            return replies

        def __getattr__(self, name):
            return getattr(engine, name)

    twin = TwinUnderTest(tmp_path / "data", engine=Noting(), bot_reply_timeout=300.0)
    twin.store.upsert_people([{"id": OWNER, "first_name": "Owner", "username": "owner"}])  # persona "owner"
    twin.store.add_adapter({"version": 1, "path": adapters_store.adapter(1)["path"], "status": "active"}, [])
    users = range(10_000, 10_000 + chats)
    for uid in users:
        twin.store.allow(user_id=uid)
    updates = [twin.update(uid, f"chat {uid} message {k}") for k in range(messages) for uid in users]
    try:
        await asyncio.gather(*(twin.feed(u) for u in updates))
        await twin.settle(timeout=600)
    finally:
        twin.close()
    assert adapters == {1}
    for uid in users:
        seen = list(dict.fromkeys(m for turn in asked[uid] for m in turn))  # each message where it first came
        assert seen == [f"chat {uid} message {k}" for k in range(messages)], f"chat {uid}: {asked[uid]}"
        assert asked[uid][-1][-1] == f"chat {uid} message {messages - 1}"
        assert twin.session.texts(uid) == made[uid], f"chat {uid}"  # all delivered, in order, nothing else
    unanswered = [uid for uid in users if not made[uid]]
    assert len(unanswered) <= chats // 20, f"{len(unanswered)} chats got no reply at all"


async def test_a_killed_vllm_core_is_replaced_and_the_next_reply_works(engine, adapters_store):
    """Last in the module: it kills the engine's core process (as the OOM killer would)."""
    if engine.name != "vllm":
        pytest.skip("only the in-process vLLM engine has a core process to restart")
    import signal

    adapters_store.activate_adapter(1)
    (core,) = engine._llm.engine_core.resources.engine_manager.processes
    os.kill(core.pid, signal.SIGKILL)
    for _ in range(100):  # vLLM's monitor thread notices within a moment
        if engine._llm.errored:
            break
        await asyncio.sleep(0.1)
    assert engine._llm.errored
    # Requests arriving while the new engine starts wait for it: all are answered, by one restart.
    replies = await asyncio.gather(*(engine.reply(CHAT, "owner", "friend", ref(adapters_store)) for _ in range(3)))
    assert replies == [list(V1)] * 3 and engine.restarts == 1
