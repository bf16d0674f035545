import os
import subprocess
import sys

import pytest

from storage import LockHeld, Storage


@pytest.fixture
def store(tmp_path):
    return Storage(tmp_path / "t.db")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_while_holder_lives(store):
    store.acquire_lock("training")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(LockHeld, match="already running"):
            store.acquire_lock("training", pid=other.pid)
    finally:
        other.kill()
        other.wait()
    store.release_lock("training")
    assert store.lock_holder("training") is None


def test_lock_of_a_dead_process_is_stale_and_taken_over(store):
    store.acquire_lock("training", pid=_dead_pid())
    assert store.lock_holder("training") is None
    store.acquire_lock("training")
    assert store.lock_holder("training")["pid"] > 0


def test_runs_of_dead_processes_are_marked_failed(store):
    run = store.start_run(full=False, pid=_dead_pid())
    live = store.start_run(full=False)
    assert store.fail_dead_runs() == 1
    status = {r["id"]: r["status"] for r in store.runs()}
    assert status == {run: "failed", live: "running"}


def test_one_active_adapter_and_rollback(store):
    for v in (1, 2):
        store.add_adapter(
            {"version": v, "base_model": "m", "path": f"a/{v:04d}", "eval_loss": 1.0 / v}, [(f"s{v}", f"h{v}")]
        )
        store.activate_adapter(v)
    assert store.active_adapter()["version"] == 2
    store.activate_adapter(1, reason="rollback")
    assert [a["status"] for a in store.adapters()] == ["active", "retired"]
    assert store.trained_session_ids([2]) == {"s2"} and store.trained_content_hashes(1) == {"h1"}
    assert store.next_adapter_version() == 3


def test_leftovers_of_dead_rounds_go_and_stray_tmp_names_neither_stop_a_round_nor_go(store, tmp_path):
    from trainer.artifacts import remove_leftovers

    adapters = tmp_path / "adapters"
    dead, live = adapters / f".tmp-0002-{_dead_pid()}", adapters / f".tmp-0003-{os.getpid()}"
    stray = [adapters / ".tmp-old", adapters / ".tmp-0004-copy", adapters / ".tmp-"]  # the user's, not a round's
    orphan = adapters / "0007"  # a round died after the rename, before its row
    for folder in (dead, live, orphan, *stray):
        folder.mkdir(parents=True)
    assert sorted(remove_leftovers(store, adapters)) == sorted([dead, orphan])
    assert live.is_dir() and all(p.is_dir() for p in stray)
