"""An import that fails takes back only what it wrote itself: a sync (the real one, against a fake account)
that stored messages in the same dialog while the import was writing keeps them, and nothing is left as a
gap the next sync would skip. Real SQLite, real Telethon objects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collector import telegram_export
from collector.telegram_export import import_export
from collector.telethon_sync import sync
from core.settings import Settings
from storage import Storage
from tests.fake_telegram import FakeAccount, FakeTelegramClient

FULL = Path(__file__).resolve().parent / "fixtures" / "full_account_export.json"  # Алиса 2001: ids 1-12
ALICE = 2001


def test_a_failed_import_keeps_what_a_sync_stored_meanwhile_and_leaves_no_gap(tmp_path, monkeypatch):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", owner_id=1000)
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    account = FakeAccount(me_id=1000)
    account.add_user(ALICE, "Алиса", username="alisa")
    account.add_messages(ALICE, 15, prefix="привет")  # ids 1-15: the export's 1-12 and three newer
    synced = []

    def sync_meanwhile(pacer, n):  # after the import's first batch of Alice's chat, the bot's sync runs
        if not synced:
            other = Storage(settings.db_path)  # another connection, as another process would have
            synced.append(asyncio.run(sync(FakeTelegramClient(account), other, settings, progress=False)))
            other.close()

    upsert_people = Storage.upsert_people

    def disk_full(self, people):  # the import's last write fails; the sync's own writes go through
        if self is store:
            raise OSError("No space left on device")
        return upsert_people(self, people)

    monkeypatch.setattr(telegram_export, "BATCH_ROWS", 4)
    monkeypatch.setattr(telegram_export.Pacer, "wrote", sync_meanwhile)
    monkeypatch.setattr(Storage, "upsert_people", disk_full)
    with pytest.raises(OSError, match="No space"):
        import_export(store, FULL, owner_id=None, include_groups=False, keep_stickers=True, gap_seconds=3600)
    monkeypatch.undo()
    assert synced  # the sync ran between two batches of the import
    ids = [m["id"] for m in store.messages(ALICE)]
    assert ids == list(range(5, 16))  # the sync's rows stay; the import's own (1-4) went
    assert store.dialog(ALICE) is not None and store.sessions()
    asyncio.run(sync(FakeTelegramClient(account), store, settings, progress=False))  # the next sync
    assert [m["id"] for m in store.messages(ALICE)] == list(range(1, 16))  # no gap
