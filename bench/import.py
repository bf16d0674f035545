"""Bench `twin import`: generate a realistic full-account Telegram Desktop export, then time
orjson.loads of it and import_export of it into a fresh database, with memory off (no index: the default)
and on (the memory index built as it imports). Goals: import / loads ≤ 2 with memory off, ≤ 2.5 on.

    python bench/import.py                   # 1,000,000 messages
    python bench/import.py --messages 50000  # a quick run
    python bench/import.py --keep out/       # keep result.json and the two databases in out/
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.telegram_export import import_export  # noqa: E402
from storage import Storage  # noqa: E402

OWNER_ID = 1_000_001
GOAL_RATIO = {False: 2.0, True: 2.5}  # by memory on: the index costs at most half a parse more
NOT_INCLUDED = "(File not included. Change data exporting settings to download.)"

# (chat type, number of chats, share of all messages): personal chats carry most of a real account.
CHAT_MIX = [
    ("personal_chat", 60, 0.80),
    ("private_group", 3, 0.04),
    ("private_supergroup", 3, 0.05),
    ("public_supergroup", 1, 0.02),
    ("private_channel", 1, 0.02),
    ("public_channel", 2, 0.03),
    ("bot_chat", 3, 0.01),
    ("saved_messages", 1, 0.03),
]
PHRASES = [
    "hi",
    "ok",
    "see you tomorrow",
    "lol",
    "did you see the game last night?",
    "I'll call you later",
    "привет! как дела?",
    "нормально, а у тебя?",
    "давай завтра в семь",
    "спасибо 🙏",
    "😂😂😂",
    "你好",
    "我们明天见",
    "can you send me the address please",
    "running 10 min late, sorry",
    "that's a great idea, let's do it this weekend",
    "ну ты даёшь",
    "where are you?",
    "👍",
    "I think the meeting moved to Thursday, not sure though, can you check with Anna?",
]
NAMES = ["Anna", "Boris", "Carol", "Dmitry", "Elena", "Fang", "George", "Hana", "Ivan", "Julia", "Kai"]


def text_value(rng: random.Random) -> tuple[object, list[dict]]:
    """A `text` as Telegram writes it (mostly a string, sometimes parts) and its text_entities."""
    text = " ".join(rng.choice(PHRASES) for _ in range(rng.choice((1, 1, 1, 2, 3))))
    if rng.random() < 0.9:
        return text, [{"type": "plain", "text": text}]
    link = {"type": "link", "text": "https://example.com/p/" + str(rng.randrange(10**6))}
    bold = {"type": "bold", "text": rng.choice(PHRASES)}
    return [text + " ", bold, " ", link], [{"type": "plain", "text": text + " "}, bold, link]


def service_message(msg_id: int, date: int, actor: tuple[str, int]) -> dict:
    return {
        "id": msg_id,
        "type": "service",
        "date": "2023-01-01T00:00:00",
        "date_unixtime": str(date),
        "actor": actor[0],
        "actor_id": f"user{actor[1]}",
        "action": "phone_call",
        "duration_seconds": 42,
        "discard_reason": "hangup",
        "text": "",
        "text_entities": [],
    }


def message(rng: random.Random, msg_id: int, date: int, sender: tuple[str, int]) -> dict:
    """One message of a random kind: text, sticker, photo (some with a caption), voice, service..."""
    roll = rng.random()
    if roll < 0.02:
        return service_message(msg_id, date, sender)
    if roll < 0.022:
        return {"id": msg_id, "type": "unsupported"}
    msg = {"id": msg_id, "type": "message", "date": "2023-01-01T00:00:00", "date_unixtime": str(date)}
    msg["from"], msg["from_id"] = sender[0], f"user{sender[1]}"
    if rng.random() < 0.04:
        msg["edited"], msg["edited_unixtime"] = "2023-01-01T00:05:00", str(date + 300)
    if rng.random() < 0.02:
        msg["forwarded_from"] = rng.choice(NAMES + [None])
    if rng.random() < 0.06 and msg_id > 1:
        msg["reply_to_message_id"] = rng.randrange(1, msg_id)
    text, entities = text_value(rng)
    if roll < 0.062:
        msg.update(file=NOT_INCLUDED, thumbnail=NOT_INCLUDED, media_type="sticker", sticker_emoji="😂")
        text, entities = "", []
    elif roll < 0.092:
        msg.update(photo=NOT_INCLUDED, width=1280, height=960)
        text, entities = (text, entities) if roll < 0.072 else ("", [])
    elif roll < 0.102:
        msg.update(file=NOT_INCLUDED, media_type="voice_message", mime_type="audio/ogg", duration_seconds=7)
        text, entities = "", []
    msg["text"], msg["text_entities"] = text, entities
    return msg


def chat(rng: random.Random, kind: str, chat_id: int, n: int, people: list[tuple[str, int]]) -> dict:
    owner = ("Owner Person", OWNER_ID)
    members = [owner] + people
    date, sender = 1_600_000_000 + rng.randrange(10**7), owner
    messages = []
    for msg_id in range(1, n + 1):
        # Quick replies inside a conversation, now and then hours or days of silence.
        date += rng.choice((3, 10, 30, 60, 120)) if rng.random() < 0.95 else rng.randrange(3600, 5 * 86400)
        if rng.random() < 0.4:
            sender = rng.choice(members)
        messages.append(message(rng, msg_id, date, sender))
    name = "Saved Messages" if kind == "saved_messages" else people[0][0] if kind == "personal_chat" else None
    return {"name": name or f"{kind} {chat_id}", "type": kind, "id": chat_id, "messages": messages}


def generate(n_messages: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    chats, next_id = [], 5_000_000
    for kind, count, share in CHAT_MIX:
        weights = [1 / (i + 1) for i in range(count)]  # Zipf: a few chats hold most of the messages
        for w in weights:
            next_id += 1
            n = max(1, int(n_messages * share * w / sum(weights)))
            size = 1 if kind in ("personal_chat", "bot_chat") else 8
            people = [(f"{rng.choice(NAMES)} {next_id}", next_id * 10 + k) for k in range(size)]
            if kind == "personal_chat":
                people = [(people[0][0], next_id)]  # a personal chat's id is the peer's user id
            chats.append(chat(rng, kind, next_id, n, people))
    return {
        "about": "Here is the data you requested.",
        "personal_information": {
            "user_id": OWNER_ID,
            "first_name": "Owner",
            "last_name": "Person",
            "phone_number": "+1 555 0100",
            "username": "@owner",
        },
        "chats": {"about": "This page lists all chats from this export.", "list": chats},
    }


def write_export(folder: Path, n_messages: int) -> Path:
    path = folder / "result.json"
    data = generate(n_messages)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


@dataclass
class Timing:
    wall: float
    cpu: float  # CPU time of this process: steadier than wall time when other jobs share the machine

    def __truediv__(self, other: Timing) -> str:
        return f"{self.wall / other.wall:.2f} wall, {self.cpu / other.cpu:.2f} CPU"


@contextmanager
def timing() -> Iterator[Timing]:
    result = Timing(0.0, 0.0)
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    result.wall, result.cpu = time.perf_counter() - wall, time.process_time() - cpu


def time_loads(path: Path, gc_enabled: bool = True, repeat: int = 2) -> Timing:
    """Best of `repeat` plain orjson.loads of the file (the baseline); optionally with the cyclic GC off."""
    raw = path.read_bytes()
    best = Timing(float("inf"), float("inf"))
    for _ in range(repeat):
        if not gc_enabled:
            gc.disable()
        with timing() as took:
            data = orjson.loads(raw)
        gc.enable()
        del data
        gc.collect()
        best = Timing(min(best.wall, took.wall), min(best.cpu, took.cpu))
    return best


def time_import(path: Path, db_path: Path, memory: bool) -> tuple[Timing, str, float]:
    """Import into a fresh database with the memory index on or off; the timing, summary and MiB on disk."""
    store = Storage(db_path)
    store.turn_memory_index(memory)  # an empty database: nothing to build yet
    with timing() as took:
        summary = import_export(
            store, path, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=3600, progress=False
        )
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return took, summary.describe(), db_path.stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the generated export")
    parser.add_argument("--keep", type=Path, help="write result.json and both databases here and keep them")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with timing() as took:
            path = write_export(folder, args.messages)
        print(f"generated {args.messages:,} messages, {path.stat().st_size / 1e6:,.0f} MB in {took.wall:.1f}s")
        loads, loads_no_gc = time_loads(path), time_loads(path, gc_enabled=False)
        print(f"orjson.loads: {loads.wall:.2f}s ({loads.cpu:.2f}s CPU)")
        # import_export pauses the cyclic GC while it parses and converts; this shows what that is worth.
        print(f"orjson.loads with the GC paused: {loads_no_gc.wall:.2f}s ({loads_no_gc.cpu:.2f}s CPU)")
        for memory in (False, True):
            imported, summary, mib = time_import(path, folder / f"twin-memory-{'on' if memory else 'off'}.db", memory)
            if not memory:
                print(summary)
            print(
                f"memory {'on ' if memory else 'off'}: import_export {imported.wall:.2f}s ({imported.cpu:.2f}s CPU),"
                f" database {mib:.0f} MiB; import / loads: {imported / loads} (goal ≤ {GOAL_RATIO[memory]});"
                f" / loads without GC: {imported / loads_no_gc}"
            )


if __name__ == "__main__":
    main()
