"""Loop lag, for tests and bench/bot.py: a heartbeat on the event loop, and a big twin.db built fast.

`Heartbeat` ticks every few milliseconds on the bot's event loop; a gap between two ticks much longer than the
tick is time the loop could not run anything (a blocking call on it, a long GC pass). Every update, reply and
job of the bot waits that long too.

`build_big_store`: an import of a million messages takes minutes (conversion, counts); here the messages go in
through storage's bulk insert and the sessions with one executemany, in one transaction (memory is off: no index
to fill). Sessions are cut as the product cuts them (every SESSION_MESSAGES messages a silence longer than the
gap) and stored directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path

from core.sessions import session_id, split_of
from storage import Storage

# Messages per conversation: after each, a silence longer than any session gap.
SESSION_MESSAGES = 20
# Mixed scripts, as real chats are (the text is only stored here, never searched).
TEXTS = ("привет, как дела?", "ok see you at 7", "你好，明天见", "lol 😂 that was fun", "а ты где сейчас?")
# The heartbeat's period: short enough to see a 100 ms stall clearly, long enough to cost the loop nothing.
TICK_S = 0.005


class Heartbeat:
    """`async with Heartbeat() as beat:` ticks on the running loop; `beat.gaps` are the seconds between
    consecutive ticks, `beat.longest` the longest. Like `twin serve` after start-up, it freezes what exists
    on entry (gc.freeze) so GC passes stay short, and unfreezes on exit."""

    def __init__(self, tick: float = TICK_S):
        self.tick = tick
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Heartbeat:
        gc.collect()
        gc.freeze()
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self.gaps.append(time.perf_counter() - self._last)  # the gap still open counts too
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.unfreeze()

    async def _beat(self) -> None:
        self._last = time.perf_counter()
        while True:
            await asyncio.sleep(self.tick)
            now = time.perf_counter()
            self.gaps.append(now - self._last)
            self._last = now

    @property
    def longest(self) -> float:
        return max(self.gaps, default=0.0)


def build_big_store(path: Path, n_messages: int, owner_id: int, partners: int = 200) -> Storage:
    """twin.db at `path` with `n_messages` in one-to-one dialogs of `owner_id` with `partners` people."""
    store = Storage(path)
    start = int(time.time()) - 400 * 86400
    people = [{"id": owner_id, "first_name": "Olga"}] + [
        {"id": 10_000 + p, "first_name": f"Друг{p}", "username": f"friend{p}"} for p in range(partners)
    ]
    store.upsert_people(people)
    per_dialog = n_messages // partners
    with store.transaction() as c:
        for p in range(partners):
            dialog = 10_000 + p
            c.execute(
                "INSERT INTO dialogs (id, type, name, person_id, watermark) VALUES (?, 'personal_chat', ?, ?, ?)",
                (dialog, f"Друг{p}", dialog, per_dialog),
            )
            dates = [start + (i // SESSION_MESSAGES) * 86400 + (i % SESSION_MESSAGES) * 60 for i in range(per_dialog)]
            store.insert_many_messages(  # storage's own insert: it keeps the per-sender counts
                [
                    (dialog, i + 1, (dialog, owner_id)[i % 2], dates[i], TEXTS[i % len(TEXTS)], i % 2)
                    + (None, 0, None, None, None, 0, "export")
                    for i in range(per_dialog)
                ]
            )
            c.executemany(
                'INSERT INTO sessions (id, dialog_id, first_message_id, last_message_id, start, "end", n_messages,'
                " n_turns, closed, split, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    (
                        sid := session_id(dialog, first + 1),
                        dialog,
                        first + 1,
                        last + 1,
                        dates[first],
                        dates[last],
                        last - first + 1,
                        last - first + 1,
                        split_of(sid),
                        sid,
                    )
                    for first in range(0, per_dialog, SESSION_MESSAGES)
                    for last in [min(first + SESSION_MESSAGES, per_dialog) - 1]
                ),
            )
    store.set_meta("owner_id", owner_id)
    return store
