"""Load: 200 chats × 5 messages arrive at once through the real Dispatcher (engine double, faked Bot API
session). Every message is answered, once, in its chat's order; strangers among them get nothing; memory
stays bounded."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections import defaultdict

import pytest

from tests.bot_fakes import OWNER, TwinUnderTest

pytestmark = pytest.mark.slow

CHATS, MESSAGES, STRANGERS = 200, 5, 20
FIRST_USER, FIRST_STRANGER = 10_000, 90_000
PEAK_BYTES = 32 * 2**20  # ~10 MiB measured for the whole burst of 1,100 updates: 3x headroom


async def test_200_chats_of_5_messages_are_all_answered_in_order_with_bounded_memory(tmp_path):
    twin = TwinUnderTest(tmp_path / "data")
    twin.engine.delay = 0.005  # a generation the bot only waits for; rounds of many chats overlap
    twin.store.upsert_people([{"id": OWNER, "first_name": "Olga", "username": "olga"}])
    users = list(range(FIRST_USER, FIRST_USER + CHATS))
    strangers = list(range(FIRST_STRANGER, FIRST_STRANGER + STRANGERS))
    for uid in users:
        twin.store.allow(user_id=uid)
    await twin.say(users[0], "warm up")  # first-use costs (routers, prepared statements) out of the count
    twin.engine.calls.clear()
    twin.session.sent.clear()

    updates = [twin.update(uid, f"chat {uid} message {k}") for k in range(MESSAGES) for uid in users + strangers]
    tracemalloc.start()
    try:
        await asyncio.gather(*(twin.feed(u) for u in updates))  # as long polling hands them over
        await twin.settle(timeout=240)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    heard: dict[int, list[str]] = defaultdict(list)  # chat → messages the engine was asked to answer
    for call in twin.engine.calls:
        last = call["turns"][-1].messages
        heard[int(last[0].split()[1])] += list(last)
    for uid in users:
        assert heard[uid] == [f"chat {uid} message {k}" for k in range(MESSAGES)], f"chat {uid}"
        texts = twin.session.texts(uid)
        assert texts and texts[-1] == f"olga re: chat {uid} message {MESSAGES - 1}", f"chat {uid}: {texts}"
        assert len(texts) == len(set(texts)), f"chat {uid} got a reply twice"
    for uid in strangers:
        assert uid not in heard and not twin.session.texts(uid), "a stranger got model output"
    assert peak < PEAK_BYTES, f"peak {peak / 2**20:.1f} MiB"
    twin.close()
