"""Bench the bot's own overhead per update: everything `twin serve` does for a message except the engine.

200 chats × 5 messages arrive at once (as long polling hands them over: one task per update, in arrival
order) through the real Dispatcher, middlewares, storage (SQLite file, WAL) and reply rounds. Only the Bot
API session is faked (no network) and the engine is a stand-in that takes a fixed time per reply.

Overhead of an update = the time the event loop spent running the bot's code for it: its Dispatcher pass
(access, ordering, routing, queueing) plus the whole reply round that answered it (storage, prompt, typing,
sending, every message of the burst). A round that answered several queued messages counts fully for each.
Time waiting (for the engine, or for the loop while it runs other chats) is not overhead: it is measured
by attributing each event-loop callback to the update or round whose context it runs in.
Goal: p99 < 20 ms.

With --import-messages N a `twin import` of a generated N-message export (bench/import.py's) runs in another
process on the same database, and the 200 × 5 waves repeat for as long as it writes. Then it also prints the
longest single wait of the bot for the database's write lock (its storage calls run off the event loop, so
that is the longest any update waited on the import).

    python bench/bot.py                         # 200 chats × 5 messages, engine 50 ms
    python bench/bot.py --chats 50 --messages 3 --engine-ms 10
    python bench/bot.py --import-messages 1000000
    python bench/bot.py --memory-messages 1000000   # recall's share of each reply on a 1M-message database
    python bench/bot.py --personas-messages 1000000 # personas() and may_play on a 1M-message database
    python bench/bot.py --loop-lag --sync-messages 50000 --big-messages 1000000   # loop lag per workload

With --personas-messages N a database of N messages in PERSONA_DIALOGS personal chats (a session every
PERSONA_SESSION_EVERY messages) is built, and personas() and may_play are timed beside the whole-history
query personas() ran before the counts (its plan is unchanged: the same indexes). Goal: < 50 ms.

With --loop-lag a heartbeat on the event loop (tests/loop_lag.py) measures the gaps between its ticks while, in
turn, a sync stores --sync-messages new messages, /personas and /status run on a --big-messages database, and a
training round is started and stopped; a friend writes every 200 ms meanwhile. Per workload it prints loop lag
p50/p99/max beside the time each of the friend's messages waited for its reply.

With --memory-messages N the N-message export is imported first (the bot's database then holds it, memory
index included: its import time, size and the index's build time alone are printed), the chats are the
owner's personal dialogs in it, every message is one of the export's phrases (so recall finds many
matches: the hardest case), and the time of each reply's recall is printed beside the bot's overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import contextvars
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.chats import Conversations  # noqa: E402
from collector.telegram_export import import_export  # noqa: E402
from core.format import MemoryBlock  # noqa: E402
from storage import Storage  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.bot_fakes import OWNER, TwinUnderTest  # noqa: E402

GOAL_P99_MS = 20.0
# --personas-messages: chats as many as the held-out account's, a quiet hour after every few messages.
PERSONA_DIALOGS, PERSONA_SESSION_EVERY, GOAL_PERSONAS_MS = 600, 10, 50.0
HISTORY_PERSONAS = (  # personas() before the counts, for the side-by-side figure
    "SELECT p.id, p.slug, p.name, p.username, p.published,"
    " (SELECT count(*) FROM messages m WHERE m.sender_id = p.id) AS messages,"
    " (SELECT count(DISTINCT s.id) FROM sessions s JOIN messages m ON m.dialog_id = s.dialog_id"
    "   AND m.id BETWEEN s.first_message_id AND s.last_message_id WHERE m.sender_id = p.id) AS sessions"
    " FROM people p ORDER BY messages DESC, p.slug"
)
FIRST_USER = 10_000
# The import in another process, as `twin import` runs it.
IMPORT_CHILD = """
import sys
from pathlib import Path
from collector.telegram_export import import_export
from storage import Storage
summary = import_export(Storage(Path(sys.argv[1])), Path(sys.argv[2]), owner_id=None, include_groups=True,
                        keep_stickers=True, gap_seconds=3600, progress=False)
print(summary.messages_added)
"""
LOCK_WAITS: list[float] = []  # seconds each write transaction of the bot waited for the write lock

# What the running callback works for: ("update", text) in a Dispatcher pass, ("round", texts) in a round.
WORKING_FOR: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("working_for", default=None)
SPENT: dict[tuple, float] = defaultdict(float)  # wall seconds of loop time per update / round
CPU: dict[tuple, float] = defaultdict(float)  # the same in this thread's CPU time (no preemption, no I/O wait)


def attribute_loop_time() -> None:
    """Charge every event-loop callback's run time to WORKING_FOR in the callback's context."""
    run = asyncio.events.Handle._run

    def timed_run(handle):
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return run(handle)
        finally:
            key = handle._context.get(WORKING_FOR) if handle._context is not None else None
            if key is not None:
                SPENT[key] += time.perf_counter() - started
                CPU[key] += time.thread_time() - cpu

    asyncio.events.Handle._run = timed_run


class TimedConversations(Conversations):
    """Conversations that mark each reply round (for the attribution), remember what it answered and time
    each recall."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds: list[tuple[int, tuple[str, ...]]] = []
        self.recalls: list[tuple[float, float, int]] = []  # (seconds, CPU seconds, exchanges) per reply

    def recall(self, chat_id, user_id, persona, turns):
        started, cpu = time.perf_counter(), time.thread_time()  # it runs on a worker thread: its own CPU
        recalled = super().recall(chat_id, user_id, persona, turns)
        self.recalls.append((time.perf_counter() - started, time.thread_time() - cpu, len(recalled)))
        return recalled

    async def reply_round(self, chat_id, batch):
        texts = tuple(m.text for m in batch)
        WORKING_FOR.set(("round", texts))  # the worker task's context: its child tasks inherit it
        self.rounds.append((chat_id, texts))
        await super().reply_round(chat_id, batch)


class Engine:
    """Sleeps `seconds` per reply, like a generation the bot only waits for."""

    rejected: dict[int, str] = {}

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def reply(self, turns, persona, partner, adapter, memory=None):
        await asyncio.sleep(self.seconds)
        return [f"re: {turns[-1].messages[-1]}"]

    async def load(self, adapter) -> bool:
        return True

    def memory_block(self, recalled, budget):
        return MemoryBlock(tuple(recalled))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def time_lock_waits() -> None:
    """Record how long each write transaction of this process waited for SQLite's write lock."""
    begin = Database._begin_immediate

    def timed_begin(self):
        started = time.perf_counter()
        try:
            return begin(self)
        finally:
            LOCK_WAITS.append(time.perf_counter() - started)

    Database._begin_immediate = timed_begin


def bench_import_module():
    """bench/import.py (its export generator and phrases)."""
    if "bench_import" in sys.modules:
        return sys.modules["bench_import"]
    spec = importlib.util.spec_from_file_location("bench_import", ROOT / "bench" / "import.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def import_with_memory(data_dir: Path, n_messages: int) -> tuple[list[int], list[str]]:
    """Import an N-message export into data_dir/twin.db and print the memory index's cost; returns the
    owner's personal-chat partners and the export's phrases."""
    module = bench_import_module()
    data_dir.mkdir(parents=True)
    export = module.write_export(data_dir, n_messages)
    store = Storage(data_dir / "twin.db")
    store.turn_memory_index(True)  # memory on: the bench recalls
    started = time.perf_counter()
    summary = import_export(
        store, export, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=3600, progress=False
    )
    imported = time.perf_counter() - started
    export.unlink()
    size = lambda: store.query("PRAGMA page_count")[0][0] * store.query("PRAGMA page_size")[0][0]  # noqa: E731
    total = size()
    store.turn_memory_index(False)  # the index's share: its pages are free once it is dropped
    index = store.query("PRAGMA freelist_count")[0][0] * store.query("PRAGMA page_size")[0][0]
    started = time.perf_counter()
    store.turn_memory_index(True)
    built = time.perf_counter() - started
    indexed = store.query("SELECT count(*) FROM memory_source")[0][0]
    partners = [r[0] for r in store.query("SELECT person_id FROM dialogs WHERE type = 'personal_chat'")]
    store.close()
    print(
        f"import of {summary.messages_added:,} messages, memory index included: {imported:.0f} s; database "
        f"{total / 2**20:.0f} MiB, of which the index {index / 2**20:.0f} MiB ({indexed:,} messages indexed); "
        f"the index alone builds in {built:.0f} s"
    )
    return partners, list(module.PHRASES)


def start_import(db_path: Path, folder: Path, n_messages: int) -> subprocess.Popen:
    module = bench_import_module()
    started = time.perf_counter()
    export = module.write_export(folder, n_messages)
    print(f"generated a {n_messages:,}-message export in {time.perf_counter() - started:.0f} s; importing it")
    return subprocess.Popen(
        [sys.executable, "-c", IMPORT_CHILD, str(db_path), str(export)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def stored_messages(twin: TwinUnderTest) -> int:
    return await asyncio.to_thread(lambda: twin.store.query("SELECT count(*) FROM messages")[0][0])


def message_text(uid: int, k: int, phrases: list[str]) -> str:
    """The k-th message of chat `uid`: numbered (to check order), with a phrase of the export when given."""
    return f"chat {uid} message {k}" + (f": {phrases[(uid + k) % len(phrases)]}" if phrases else "")


async def run(
    chats: int, messages: int, engine_seconds: float, import_messages: int = 0, memory_messages: int = 0
) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        users, phrases, owner = list(range(FIRST_USER, FIRST_USER + chats)), [], OWNER
        if memory_messages:
            users, phrases = import_with_memory(Path(tmp) / "data", memory_messages)
            owner = bench_import_module().OWNER_ID
        twin = TwinUnderTest(Path(tmp) / "data", owner_id=owner)
        twin.conversations = TimedConversations(twin.settings, twin.store, Engine(engine_seconds), twin.bot)
        twin.dp.workflow_data.update(conversations=twin.conversations)
        twin.store.upsert_people([{"id": owner, "first_name": "Olga"}])
        for uid in users:
            twin.store.allow(user_id=uid)
        await warm_up(twin)
        child = start_import(twin.settings.db_path, Path(tmp), import_messages) if import_messages else None
        if child is not None:
            while child.poll() is None and not await stored_messages(twin):  # until it writes
                await asyncio.sleep(0.05)
        LOCK_WAITS.clear()
        wave, waves_while_writing, updates = 0, 0, []

        async def feed(update) -> None:
            WORKING_FOR.set(("update", update.message.text))
            await twin.feed(update)

        started = time.perf_counter()
        while True:  # one wave; with an import, waves go on while it writes
            before = await stored_messages(twin)
            batch = [
                twin.update(uid, message_text(uid, wave * messages + k, phrases))
                for k in range(messages)
                for uid in users
            ]
            updates += batch
            await asyncio.gather(*(feed(u) for u in batch))
            await twin.settle(timeout=600)
            wave += 1
            waves_while_writing += child is not None and before < await stored_messages(twin)
            if child is None or child.poll() is not None:
                break
        wall = time.perf_counter() - started
        imported = None
        if child is not None:
            out, err = child.communicate()
            imported = out.strip() if child.returncode == 0 else f"FAILED: {err[-500:]}"
        rounds = [r for r in twin.conversations.rounds if r[0] in users]
        overhead = per_update(SPENT, rounds)
        cpu = per_update(CPU, rounds)
        problems = check_answers(twin, rounds, users, messages * wave, phrases)
        recalls = twin.conversations.recalls
        twin.close()

    p50, p99 = percentile(overhead, 50), percentile(overhead, 99)
    if imported is not None:
        print(
            f"twin import of {import_messages:,} messages in another process: {imported} added; "
            f"{wave} waves of updates, {waves_while_writing} of them while it was writing"
        )
        print(
            f"longest wait for the database's write lock: {max(LOCK_WAITS) * 1000:.1f} ms "
            f"(p99 {percentile(LOCK_WAITS, 99) * 1000:.1f} ms over {len(LOCK_WAITS)} writes)"
        )
    print(
        f"{chats} chats × {messages} messages × {wave} = {len(updates)} updates, "
        f"engine {engine_seconds * 1000:.0f} ms/reply"
    )
    print(f"reply rounds: {len(rounds)}; wall time {wall:.2f} s ({len(updates) / wall:.0f} updates/s)")
    print(
        f"bot overhead per update: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(overhead):.2f} ms "
        f"(goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'})"
    )
    print(
        f"  of which CPU in this process: p50 {percentile(cpu, 50):.2f} ms, p99 {percentile(cpu, 99):.2f} ms "
        "(the rest: other processes on the cores, disk waits)"
    )
    if recalls:
        ms, cpu_ms = [r[0] * 1000 for r in recalls], [r[1] * 1000 for r in recalls]
        found = sum(1 for r in recalls if r[2])
        print(
            f"recall per reply (memory scope pair): p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} "
            f"ms, max {max(ms):.2f} ms over {len(ms)} replies, {found} of which recalled something "
            f"(goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if percentile(ms, 99) < GOAL_P99_MS else 'MISSED'})"
        )
        print(
            f"  of which CPU on its thread: p50 {percentile(cpu_ms, 50):.2f} ms, p99 {percentile(cpu_ms, 99):.2f} "
            f"ms (the rest: waiting for the cores, the disk, the event loop's other threads)"
        )
    print("every message answered, per-chat order kept" if not problems else "PROBLEMS:\n" + "\n".join(problems[:10]))
    return 0 if not problems and p99 < GOAL_P99_MS else 1


async def warm_up(twin: TwinUnderTest) -> None:
    """One exchange first (pydantic builds validators on first use: start-up, not per update), then the
    same gc.freeze() `twin serve` does after start-up."""
    twin.store.allow(user_id=1)
    await twin.say(1, "warm up")
    gc.collect()
    gc.freeze()


def per_update(spent: dict[tuple, float], rounds) -> list[float]:
    """Milliseconds per update: its Dispatcher pass plus the whole round that answered it."""
    return [(spent["update", t] + spent["round", texts]) * 1000 for _, texts in rounds for t in texts]


def check_answers(twin: TwinUnderTest, rounds, users: list[int], messages: int, phrases: list[str]) -> list[str]:
    """Every message was in exactly one round, rounds in order, and each round's reply went out in order."""
    answered: dict[int, list[str]] = defaultdict(list)
    for chat_id, texts in rounds:
        answered[chat_id] += texts
    problems = []
    for uid in users:
        sent = [message_text(uid, k, phrases) for k in range(messages)]
        if answered[uid] != sent:
            problems.append(f"chat {uid}: answered {answered[uid]}")
        lasts = [f"re: {texts[-1]}" for chat_id, texts in rounds if chat_id == uid]
        if twin.session.texts(uid) != lasts:
            problems.append(f"chat {uid}: replies {twin.session.texts(uid)} != rounds {lasts}")
    return problems


def bench_personas(n_messages: int) -> int:
    """Build an N-message database in PERSONA_DIALOGS chats, then time personas(), may_play and the old query."""
    from bot.personas import may_play

    with tempfile.TemporaryDirectory() as tmp:
        store, owner, per = Storage(Path(tmp) / "twin.db"), 1, max(1, n_messages // PERSONA_DIALOGS)
        started = time.perf_counter()
        store.upsert_people([{"id": owner, "first_name": "Olga"}])
        store.upsert_people([{"id": FIRST_USER + d, "first_name": f"Друг{d}"} for d in range(PERSONA_DIALOGS)])
        for d in range(PERSONA_DIALOGS):
            peer = FIRST_USER + d
            store.upsert_dialog({"id": peer, "type": "personal_chat", "name": f"Друг{d}", "person_id": peer})
            rows = [
                (peer, k, owner if k % 2 else peer, k * 60 + k // PERSONA_SESSION_EVERY * 7200, "привет 你好")
                + (0, None, 0, None, None, None, 0, "export")
                for k in range(1, per + 1)
            ]
            store.insert_many_messages(rows)
            store.rebuild_sessions(peer, 3600)
        built = time.perf_counter() - started
        sessions = store.query("SELECT count(*) FROM sessions")[0][0]
        print(
            f"built {per * PERSONA_DIALOGS:,} messages, {sessions:,} sessions in {PERSONA_DIALOGS} chats: {built:.0f} s"
        )
        slug = store.person(FIRST_USER)["slug"]
        timed = {}
        for name, call in (
            ("personas()", store.personas),
            ("may_play", lambda: may_play(store, slug, FIRST_USER + 1, owner)),
            ("personas() before the counts (whole-history query)", lambda: store.query(HISTORY_PERSONAS)),
        ):
            times = []
            for _ in range(3 if "before" not in name else 1):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1000)
            timed[name] = min(times)
            print(f"{name}: {min(times):.2f} ms")
        same = store.personas() == [dict(r) for r in store.query(HISTORY_PERSONAS)]
        store.close()
    met = timed["personas()"] < GOAL_PERSONAS_MS
    print(f"same counts as before: {same}; goal < {GOAL_PERSONAS_MS:.0f} ms: {'met' if met else 'MISSED'}")
    return 0 if same and met else 1


def lag_line(name: str, gaps: list[float], waits: list[float], wall: float) -> str:
    ms = sorted(g * 1000 for g in gaps)
    w = sorted(x * 1000 for x in waits) or [float("nan")]
    return (
        f"{name:<28} loop lag p50 {percentile(ms, 50):6.1f} p99 {percentile(ms, 99):7.1f} max {ms[-1]:7.1f} ms | "
        f"reply p50 {w[len(w) // 2]:6.1f} max {w[-1]:7.1f} ms over {len(waits)} | wall {wall:5.1f} s"
    )


async def loop_lag(sync_messages: int, big_messages: int) -> None:
    """The loop-lag table (see the module's doc)."""
    from tests.bot_fakes import fake_sync_client
    from tests.fake_telegram import FakeAccount
    from tests.loop_lag import Heartbeat, build_big_store
    from tests.test_bot_loop_lag import FRIEND, NetworkedClient, timed_reply

    async def measure(twin, name, start, done) -> None:
        waits, started = [], time.perf_counter()
        async with Heartbeat() as beat:
            await start()
            while not done():
                waits.append(await timed_reply(twin, FRIEND, "ты тут? 你好"))
                await asyncio.sleep(0.2)
            await twin.settle(timeout=3600)
        print(lag_line(name, beat.gaps, waits, time.perf_counter() - started), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        account = FakeAccount(me_id=OWNER)
        for p in range(10):
            account.add_user(20_000 + p, f"Друг{p}", username=f"friend{p}")
            account.add_messages(20_000 + p, sync_messages // 10, prefix="привет 你好")
        twin = TwinUnderTest(Path(tmp) / "sync", sync_client=fake_sync_client(NetworkedClient(account)))
        twin.store.allow(user_id=FRIEND)
        await measure(
            twin,
            f"sync of {sync_messages:,}",
            lambda: twin.feed(twin.update(OWNER, "/sync")),
            lambda: "sync" not in twin.jobs.running(),
        )
        twin.close()
        data = Path(tmp) / "big"
        data.mkdir()
        built = time.perf_counter()
        build_big_store(data / "twin.db", big_messages, OWNER).close()
        print(f"(a {big_messages:,}-message database built in {time.perf_counter() - built:.0f} s)")
        twin = TwinUnderTest(data)
        twin.store.allow(user_id=FRIEND)
        for command in ("/personas", "/status"):
            task: list[asyncio.Task] = []
            await measure(
                twin,
                f"{command} on {big_messages:,}",
                lambda c=command, t=task: (
                    t.append(asyncio.create_task(twin.feed(twin.update(OWNER, c)))) or asyncio.sleep(0)
                ),
                lambda t=task: t[0].done(),
            )
        twin.close()
        twin = TwinUnderTest(Path(tmp) / "round")
        twin.store.allow(user_id=FRIEND)
        stop_at = time.perf_counter() + 3.0

        async def stop_round() -> None:
            await twin.feed(twin.update(OWNER, "/retrain"))

        def round_done() -> bool:
            if time.perf_counter() > stop_at and "training" in twin.jobs.running():
                asyncio.ensure_future(twin.jobs.cancel_training())
            return "training" not in twin.jobs.running()

        await measure(twin, "round started, stopped at 3 s", stop_round, round_done)
        twin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chats", type=int, default=200)
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--engine-ms", type=float, default=50.0)
    p.add_argument("--import-messages", type=int, default=0, help="a twin import of this many messages meanwhile")
    p.add_argument("--memory-messages", type=int, default=0, help="chat with the personal chats of an N-message import")
    p.add_argument("--personas-messages", type=int, default=0, help="time personas() on an N-message database")
    p.add_argument("--loop-lag", action="store_true", help="loop lag while a sync, big reads and a round run")
    p.add_argument("--sync-messages", type=int, default=50_000, help="with --loop-lag: messages the sync stores")
    p.add_argument("--big-messages", type=int, default=1_000_000, help="with --loop-lag: the database's size")
    a = p.parse_args()
    if a.personas_messages:
        sys.exit(bench_personas(a.personas_messages))
    if a.loop_lag:
        asyncio.run(loop_lag(a.sync_messages, a.big_messages))
        return
    attribute_loop_time()
    time_lock_waits()
    sys.exit(asyncio.run(run(a.chats, a.messages, a.engine_ms / 1000, a.import_messages, a.memory_messages)))


if __name__ == "__main__":
    main()
