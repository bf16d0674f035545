"""The memory index costs only while memory is on: with memory off an import writes no index at all; turning
memory on builds it once in bulk; an import with memory on indexes each batch in bulk and its undo takes the
words back out; the index keeps no second copy of the text (real SQLite, the real import of a real export).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import telegram_export
from collector.telegram_export import import_export
from core.format import ChatTurn, memory_text
from core.recall import MemoryRequest, recall
from core.settings import Settings
from storage import Storage, open_storage
from tests.test_memory import index_is_consistent, index_texts

FULL = Path(__file__).resolve().parent / "fixtures" / "full_account_export.json"
OWNER, ANNA = 1000, 2001


def settings(tmp_path: Path, scope: str) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", memory_scope=scope)


def import_full(store: Storage) -> None:
    import_export(store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=3600, progress=False)


def index_tables(store: Storage) -> list[str]:
    return [t for t in store.db.table_names() if t.startswith("memory") and t != "memory_dialogs"]


def recalled(store: Storage, partner: int, question: str) -> str:
    request = MemoryRequest(OWNER, OWNER, partner, "owner", k=5, gap_seconds=3600)
    return memory_text(recall(store, request, [ChatTurn("someone", (question,))]))


def test_an_import_with_memory_off_indexes_nothing(tmp_path):
    store = open_storage(settings(tmp_path, "off"))
    import_full(store)
    assert store.counts()["messages"] > 0
    assert index_tables(store) == [] and not store.memory_index_on()
    assert store.query("SELECT count(*) FROM memory_dialogs")[0][0] == 0
    assert store.query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'memory%'") == []


def test_turning_memory_on_builds_the_index_once_and_recall_finds_words_in_any_script(tmp_path):
    open_storage(settings(tmp_path, "off")).close()
    import_full(store := open_storage(settings(tmp_path, "off")))
    store.close()
    store = open_storage(settings(tmp_path, "pair"))  # memory on: built here, in bulk
    assert store.memory_index_on() and index_is_consistent(store)
    assert not store.turn_memory_index(True)  # already built: opening again builds nothing
    assert index_texts(store, "закат") == ["Смотри, какой закат", "Ссылка: https://example.com/закат"]
    assert index_texts(store, "最近怎") == ["你好！最近怎么样？"]
    assert index_texts(store, "account") == ["hello from an account that no longer exists"]
    anna = store.query("SELECT dialog_id FROM messages WHERE text = 'Смотри, какой закат'")[0][0]
    assert "закат" in recalled(store, anna, "какой был закат?")
    store.close()
    store = open_storage(settings(tmp_path, "off"))  # memory off again: the index goes
    assert index_tables(store) == [] and store.query("SELECT count(*) FROM memory_dialogs")[0][0] == 0


def test_an_import_with_memory_on_indexes_every_batch_in_bulk(tmp_path, monkeypatch):
    monkeypatch.setattr(telegram_export, "BATCH_ROWS", 3)  # many transactions, each indexed at its end
    store = open_storage(settings(tmp_path, "pair"))
    import_full(store)
    assert index_texts(store, "закат") == ["Смотри, какой закат", "Ссылка: https://example.com/закат"]
    assert index_texts(store, "рубля") == []  # forwarded: not their words
    assert index_is_consistent(store)
    import_full(store)  # again: nothing new, nothing indexed twice
    assert index_is_consistent(store)
    # After the import the triggers are back: a sync's message is indexed as it is stored.
    anna = store.query("SELECT dialog_id FROM messages WHERE text = 'Смотри, какой закат'")[0][0]
    store.insert_messages([{"dialog_id": anna, "id": 10**6, "date": 1, "sender_id": OWNER, "text": "закат снова"}])
    assert "закат снова" in index_texts(store, "закат") and index_is_consistent(store)


def test_a_failed_import_with_memory_on_takes_its_words_back_out_of_the_index(tmp_path, monkeypatch):
    monkeypatch.setattr(telegram_export, "BATCH_ROWS", 3)
    store = open_storage(settings(tmp_path, "pair"))

    def fail(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "upsert_people", fail)  # after every message was written and indexed
    with pytest.raises(RuntimeError):
        import_full(store)
    assert store.counts()["messages"] == 0
    assert index_texts(store, "закат") == [] and index_is_consistent(store)


def test_the_index_keeps_no_second_copy_of_the_text(tmp_path):
    store = open_storage(settings(tmp_path, "pair"))
    secret = "Зеппелин-лабораторию 飞艇实验室 zeppelinlaboratory"
    store.upsert_dialog({"id": ANNA, "type": "personal_chat", "name": "Anna", "person_id": ANNA})
    store.insert_messages([{"dialog_id": ANNA, "id": 1, "date": 1, "sender_id": ANNA, "text": secret}])
    assert index_texts(store, "飞艇实") == [secret]
    assert "memory_content" not in store.db.table_names()
    stored = b"".join(bytes(r[0]) for r in store.query("SELECT block FROM memory_data") if r[0] is not None)
    assert all(part.encode() not in stored for part in secret.split())
