"""How many Telegram requests a sync costs, on a fake account of 500 dialogs and 200,000 messages.

    python bench/sync_requests.py [--dialogs 500] [--messages 200000]

Three runs against the same SQLite file: the first sync, a second with nothing new (goal: only the
dialog-list pages, ⌈dialogs/100⌉, and zero history requests) and one after 1,000 new messages in 3
dialogs. The fake client (tests/fake_telegram.py, shared with the tests) counts one request per page of
100 dialogs or 100 messages, with Telethon's stop rules.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.telethon_sync import sync  # noqa: E402
from core.settings import Settings  # noqa: E402
from storage import Storage  # noqa: E402
from tests.fake_telegram import FakeAccount, FakeTelegramClient  # noqa: E402

NEW_MESSAGES = {0: 500, 1: 300, 2: 200}  # dialog index → new messages: 1,000 in 3 dialogs


def build_account(dialogs: int, messages: int) -> tuple[FakeAccount, list[int]]:
    """`dialogs` people whose chats interleave (ids are account-wide, as in Telegram)."""
    account = FakeAccount()
    peers = [10_000 + i for i in range(dialogs)]
    for i, peer in enumerate(peers):
        account.add_user(peer, f"Friend{i}", username=f"friend{i}")
    for n in range(messages):
        account.add_message(peers[n % dialogs], f"message {n}", out=bool(n % 3 == 0), seconds_later=30)
    return account, peers


async def measure(label: str, account: FakeAccount, store: Storage, settings: Settings) -> list[str]:
    client = FakeTelegramClient(account)
    started = time.perf_counter()
    summary = await sync(client, store, settings, progress=False)
    seconds = time.perf_counter() - started
    counts = client.request_counts
    other = sum(counts.values()) - counts["GetDialogsRequest"] - counts["GetHistoryRequest"]
    return [
        label,
        str(counts["GetDialogsRequest"]),
        str(counts["GetHistoryRequest"]),
        str(other),
        str(sum(counts.values())),
        f"{summary.new_messages:,}",
        f"{seconds:.1f} s",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogs", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    account, peers = build_account(args.dialogs, args.messages)
    print(
        f"fake account: {args.dialogs} dialogs, {args.messages:,} messages (built in {time.perf_counter() - t0:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))
        store = Storage(settings.db_path)
        rows = [await measure("first sync", account, store, settings)]
        rows.append(await measure("second sync, nothing new", account, store, settings))
        for index, n in NEW_MESSAGES.items():
            account.add_messages(peers[index], n, prefix="new")
        rows.append(await measure("1,000 new in 3 dialogs", account, store, settings))
        stored = store.counts()["messages"]

    header = ["sync", "dialog pages", "history pages", "other", "requests", "new messages", "time"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        f"goal for a sync with nothing new: {-(-args.dialogs // 100)} dialog pages, 0 history pages; "
        f"'other' is get_me (1 request). Messages stored: {stored:,}."
    )


if __name__ == "__main__":
    asyncio.run(main())
