"""Reads never queue: each thread reads on its own connection, beside a long read of another thread and beside
an open write transaction, which reads its own writes (real SQLite files in WAL mode, real threads)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage import Storage

ANNA = 2001
# Long enough for a read or a write that does not wait on anything, however loaded the machine.
PROMPT_S = 5


@pytest.fixture
def held_read(monkeypatch):
    """SQL `hold()` on every connection opened meanwhile: a read that stays open until `release` is set."""
    entered, release = threading.Event(), threading.Event()
    real = sqlite3.connect

    def hold() -> int:
        entered.set()
        return int(release.wait(30))

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.create_function("hold", 0, hold)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield entered, release
    release.set()


def test_a_long_read_holds_up_neither_another_threads_read_nor_a_write(tmp_path, held_read):
    entered, release = held_read
    store = Storage(tmp_path / "twin.db")
    store.upsert_people([{"id": ANNA, "first_name": "Анна"}])
    long_read = threading.Thread(target=store.query, args=("SELECT hold()",))
    long_read.start()
    assert entered.wait(PROMPT_S)
    with ThreadPoolExecutor(2) as others:
        read = others.submit(store.person, ANNA)
        write = others.submit(store.set_meta, "greeting", "你好")
        try:
            assert read.result(timeout=PROMPT_S)["first_name"] == "Анна"
            write.result(timeout=PROMPT_S)
            assert others.submit(store.get_meta, "greeting").result(timeout=PROMPT_S) == "你好"
        finally:
            release.set()
    long_read.join(PROMPT_S)
    assert not long_read.is_alive()
    store.close()


def test_reads_beside_an_open_write_see_the_last_commit_and_the_writer_sees_its_own(tmp_path):
    store = Storage(tmp_path / "twin.db")
    store.set_meta("city", "Москва")
    inside, finish, seen_inside = threading.Event(), threading.Event(), []

    def write() -> None:
        with store.transaction():
            store.set_meta("city", "北京")
            seen_inside.append(store.get_meta("city"))
            inside.set()
            finish.wait(30)

    writer = threading.Thread(target=write)
    writer.start()
    assert inside.wait(PROMPT_S)
    with ThreadPoolExecutor(1) as reader:
        try:
            assert reader.submit(store.get_meta, "city").result(timeout=PROMPT_S) == "Москва"
        finally:
            finish.set()
    writer.join(PROMPT_S)
    assert seen_inside == ["北京"] and store.get_meta("city") == "北京"
    store.close()


def test_every_threads_read_connection_is_closed_with_the_database(tmp_path):
    store = Storage(tmp_path / "twin.db")
    store.set_meta("k", "v")
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: store.get_meta("k"), range(8))) == ["v"] * 8
        store.close()
        for failed in [pool.submit(store.get_meta, "k") for _ in range(4)]:
            with pytest.raises(sqlite3.ProgrammingError):
                failed.result(timeout=PROMPT_S)
    with pytest.raises(sqlite3.ProgrammingError):
        store.get_meta("k")


def test_reads_cannot_write(tmp_path):
    store = Storage(tmp_path / "twin.db")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.query("INSERT INTO meta (key, value) VALUES ('sneaked', 'in')")
    assert store.get_meta("sneaked") is None
    store.close()


def test_an_in_memory_database_is_one_database_for_every_thread():
    store = Storage(":memory:")
    store.set_meta("note", "Привет")
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: store.get_meta("note"), range(4))) == ["Привет"] * 4
    store.close()
