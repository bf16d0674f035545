"""Faults: a collector killed with SIGKILL at random points, SQLite writers in several processes at once.
Whatever happens, nothing is lost, nothing is stored twice and nobody sees "database is locked"."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.telethon_sync import sync
from core.settings import Settings
from storage import Storage
from tests.fake_telegram import FakeAccount, FakeTelegramClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PEERS = {101: 1500, 102: 900, 103: 600, 104: 7}  # user id → messages: a large account, many batches


def big_account() -> FakeAccount:
    """The same account in every process (ids and dates come from the account's own counters)."""
    account = FakeAccount()
    for peer in PEERS:
        account.add_user(peer, f"Friend{peer}", username=f"friend{peer}")
    # Interleaved, as real chats are: every dialog's ids are sparse in the account-wide counter.
    for i in range(max(PEERS.values())):
        for peer, n in PEERS.items():
            if i < n:
                account.add_message(peer, f"message {i} to {peer}", out=bool(i % 2))
    return account


def _child_sync(data_dir: str) -> None:
    """Run in a subprocess: one full sync of `big_account` into `data_dir`, paced so a kill lands inside."""
    settings = Settings(_env_file=None, data_dir=Path(data_dir))
    store = Storage(settings.db_path)
    client = FakeTelegramClient(big_account())
    real_hand_out = client.hand_out

    def paced_hand_out():
        time.sleep(0.0005)  # a network's pace: >= 1.5 s a full run, longer than all the delays below together
        real_hand_out()

    client.hand_out = paced_hand_out
    print("started", flush=True)
    asyncio.run(sync(client, store, settings, progress=False))
    print("finished", flush=True)


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def test_sync_killed_at_random_points_then_rerun_has_every_message_once(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    settings.ensure_data_dir()
    Storage(settings.db_path)
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        child = _spawn(
            [
                "from tests.test_hardening_faults import _child_sync as c; import sys; c(sys.argv[1])",
                str(settings.data_dir),
            ]
        )
        try:
            assert child.stdout.readline().strip() == "started"
            time.sleep(rng.uniform(0.05, 0.6))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            child.wait(timeout=30)
            child.stdout.close()
    assert kills >= 3, "the kills must land while the sync runs"

    store = Storage(settings.db_path)
    partial = {peer: [m["id"] for m in store.messages(peer)] for peer in PEERS}
    account = big_account()
    for peer in PEERS:  # what a killed run left is a prefix of the history, oldest first, each message once
        assert partial[peer] == account.ids(peer)[: len(partial[peer])]
    assert sum(map(len, partial.values())) < sum(PEERS.values()), "some sync was killed before the end"

    asyncio.run(sync(FakeTelegramClient(account), store, settings, progress=False))
    for peer in PEERS:
        stored = store.messages(peer)
        assert [m["id"] for m in stored] == account.ids(peer), f"gap or duplicate in dialog {peer}"
        assert [m["text"] for m in stored] == [s.text for s in account.history[peer]]
        assert store.dialog(peer)["watermark"] == account.ids(peer)[-1]


# -- SQLite contention between processes ------------------------------------------------------------------
BOT_MESSAGES, TRAINING_RUNS, EXPORT_MESSAGES = 300, 60, 40_000


def _load_bench_import():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_import", ROOT / "bench" / "import.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _child_writer(role: str, db_path: str, go: str, arg: str = "") -> None:
    """Run in a subprocess: wait for `go` to exist, then write as the importer, the bot or the trainer would."""
    from collector.telegram_export import import_export

    store = Storage(Path(db_path))
    while not os.path.exists(go):
        time.sleep(0.005)
    if role == "import":
        summary = import_export(
            store, Path(arg), owner_id=None, include_groups=False, keep_stickers=True, gap_seconds=3600, progress=False
        )
        print(summary.messages_added, flush=True)
    elif role == "bot":
        for i in range(BOT_MESSAGES):
            store.add_bot_message(7, 7, "friend", f"hello {i}", from_twin=bool(i % 2))
            store.recent_bot_messages(7, since=0, limit=5)
    elif role == "train":
        for i in range(TRAINING_RUNS):
            store.acquire_lock("train")
            run_id = store.start_run(full=False)
            store.finish_run(run_id, "succeeded", n_sessions=i)
            store.release_lock("train")
    print("ok", flush=True)


def _spawn_writer(role: str, db_path: Path, go: Path, arg: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from tests.test_hardening_faults import _child_writer as w; import sys; w(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, role, str(db_path), str(go), arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_an_import_the_bot_and_a_trainer_writing_at_once_never_see_database_is_locked(tmp_path):
    export = _load_bench_import().write_export(tmp_path, EXPORT_MESSAGES)
    db_path, go = tmp_path / "twin.db", tmp_path / "go"
    Storage(db_path)
    children = [
        _spawn_writer("import", db_path, go, str(export)),
        _spawn_writer("bot", db_path, go),
        _spawn_writer("train", db_path, go),
    ]
    time.sleep(2.0)  # every child has imported its modules and opened the database
    go.touch()
    outputs = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert "locked" not in err and child.returncode == 0, err[-2000:]
        assert out.strip().endswith("ok")
    added = int(outputs[0][0].split()[0])
    store = Storage(db_path)
    assert added > EXPORT_MESSAGES // 2
    assert store.query("SELECT count(*) FROM messages")[0][0] == added
    assert [m["text"] for m in store.recent_bot_messages(7, since=0, limit=10_000)] == [
        f"hello {i}" for i in range(BOT_MESSAGES)
    ]
    runs = store.runs(limit=1000)
    assert len(runs) == TRAINING_RUNS and {r["status"] for r in runs} == {"succeeded"}
    assert store.lock_holder("train") is None


def _child_open(db_path: str, go: str) -> None:
    """Run in a subprocess: open (and so create and migrate) the database the moment `go` appears."""
    while not os.path.exists(go):
        time.sleep(0.001)
    Storage(Path(db_path)).add_bot_message(1, 1, "x", "hi", from_twin=False)
    print("ok", flush=True)


def test_processes_opening_a_new_database_at_once_all_get_the_schema(tmp_path):
    """The bot, a cron `twin collect` and a `twin train` may all be the first to open twin.db."""
    db_path, go = tmp_path / "data" / "twin.db", tmp_path / "go"
    db_path.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from tests.test_hardening_faults import _child_open as o; import sys; o(*sys.argv[1:])"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db_path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    time.sleep(2.0)
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0 and out.strip() == "ok", err[-2000:]
    store = Storage(db_path)
    assert store.query("SELECT count(*) FROM bot_messages")[0][0] == 4


IMPORT_UNDER_LOAD, CHATS_UNDER_LOAD = 200_000, 20


async def test_every_chat_is_answered_within_a_second_while_a_big_import_writes(tmp_path):
    """`twin import` of a big export in another process while the bot serves: no chat waits on the import
    (it writes in short transactions; the bot's storage calls run off the event loop)."""
    from tests.bot_fakes import OWNER, TwinUnderTest

    export = _load_bench_import().write_export(tmp_path, IMPORT_UNDER_LOAD)
    twin = TwinUnderTest(tmp_path / "data")
    twin.store.upsert_people([{"id": OWNER, "first_name": "Olga"}])
    users = [5000 + i for i in range(CHATS_UNDER_LOAD)]
    for uid in users:
        twin.store.allow(user_id=uid)
    await twin.say(users[0], "warm up")
    go = tmp_path / "go"
    child = _spawn_writer("import", twin.settings.db_path, go, str(export))
    await asyncio.sleep(2.0)  # the child has imported its modules
    go.touch()

    lag, running = [0.0], True

    async def watch_the_loop() -> None:  # how long the event loop was kept from running anything else
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lag[0] = max(lag[0], time.perf_counter() - t - 0.005)

    watcher = asyncio.create_task(watch_the_loop())
    waits, stored_meanwhile, i = [], set(), 0
    while child.poll() is None:
        uid, text = users[i % len(users)], f"message {i}"
        started = time.perf_counter()
        await twin.feed(twin.update(uid, text))
        while f"olga re: {text}" not in twin.session.texts(uid) and time.perf_counter() - started < 30:
            await asyncio.sleep(0.001)
        waits.append(time.perf_counter() - started)
        count = await asyncio.to_thread(lambda: twin.store.query("SELECT count(*) FROM messages")[0][0])
        stored_meanwhile.add(count)
        i += 1
        await asyncio.sleep(0.01)
    running = False
    await watcher
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and "locked" not in err, err[-2000:]
    total = int(out.split()[0])
    twin.close()
    assert len(waits) > 20 and max(waits) < 1.0, f"longest wait {max(waits):.2f} s over {len(waits)} updates"
    assert lag[0] < 0.25, f"the event loop stalled {lag[0]:.2f} s"
    assert any(0 < n < total for n in stored_meanwhile), "no update was answered while the import was writing"
