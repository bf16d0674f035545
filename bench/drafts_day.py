"""A scripted day of drafts: 20 incoming bursts through the fake Telegram edge, the twin's drafts, the owner's
scripted answers, and the stats that result.

Everything between the edges is the product's: the DraftWriter gets real Telethon TL updates
(UpdateNewMessage, UpdateUserTyping, UpdateDraftMessage) and sends real SaveDraftRequests, storage is a real
SQLite file. The engine is the bot tests' double (a scripted reply per burst), or with --real the embedded
base model through the transformers engine (slow on CPU).

    python bench/drafts_day.py
    python bench/drafts_day.py --real
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telethon.tl.functions.messages import SaveDraftRequest  # noqa: E402

from collector.drafts import DraftWriter, stats_lines  # noqa: E402
from core.settings import Settings  # noqa: E402
from storage import Storage  # noqa: E402
from tests.bot_fakes import EngineDouble  # noqa: E402
from tests.fake_telegram import FakeAccount, FakeTelegramClient  # noqa: E402

FRIENDS = {11: "Anna", 12: "Bob", 13: "Cleo", 14: "Dima", 15: "Eve"}
# 20 bursts: (friend, their messages, what the owner does). "send" sends the draft as is, "edit:TEXT" sends
# TEXT instead, "ignore" sends nothing, "own:TEXT" means the owner was already writing TEXT as their draft.
DAY = [
    (11, ["morning!", "coffee later?"], "send"),
    (12, ["did you see the match"], "edit:yes, unreal last minute"),
    (13, ["can you send me the doc"], "send"),
    (14, ["hey", "are you around this weekend?"], "ignore"),
    (15, ["happy birthday to your mom 🎂"], "edit:thank you, I'll tell her ❤️"),
    (11, ["ok 4pm?"], "send"),
    (12, ["the ref was blind"], "own:haha totally"),
    (13, ["thanks", "got it"], "send"),
    (14, ["?"], "edit:sorry, busy week. Sunday?"),
    (15, ["she loved it"], "send"),
    (11, ["running 10 min late"], "edit:no worries"),
    (12, ["next match on friday", "watching at mine?"], "send"),
    (13, ["one more question about the budget"], "ignore"),
    (14, ["sunday works"], "send"),
    (15, ["also, the photos", "can you send them"], "edit:sending tonight"),
    (11, ["that was fun"], "send"),
    (12, ["bring snacks"], "own:deal, chips and salsa"),
    (13, ["never mind, found it"], "send"),
    (14, ["where do we meet"], "edit:the usual place at 2"),
    (15, ["got them, thanks!"], "send"),
]
REPLIES = ["sure, sounds good", "yes!! what a finish", "ok", "haha yes", "thanks!"]


def scripted_engine() -> EngineDouble:
    engine = EngineDouble()
    count = iter(range(10**6))
    engine.answer = lambda turns, persona: [REPLIES[next(count) % len(REPLIES)]]
    return engine


async def real_engine(settings: Settings):
    from engine.build import build_engine

    engine = build_engine(settings.model_copy(update={"engine": "transformers"}))
    await engine.start()
    return engine


async def day(real: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), drafts_quiet_seconds=0.05)
        settings.ensure_data_dir()
        store = Storage(settings.db_path)
        account = FakeAccount()
        for user_id, name in FRIENDS.items():
            account.add_user(user_id, name, username=name.lower())
        client = FakeTelegramClient(account)
        engine = await real_engine(settings) if real else scripted_engine()
        writer = DraftWriter(client, store, settings, engine)
        await writer.start()
        started = time.monotonic()
        for i, (friend, burst, action) in enumerate(DAY, 1):
            if action.startswith("own:"):
                await client.push(account.draft(friend, action[4:]))
            before = len(client.requests)
            for text in burst:
                await client.push(account.new_message(friend, text, seconds_later=30))
                await client.push(account.typing(friend))
            await writer.idle()
            saved = [r.message for r in client.requests[before:] if isinstance(r, SaveDraftRequest) and r.message]
            draft = saved[-1] if saved else None
            sent = {"send": draft, "ignore": None}.get(action, action.partition(":")[2])
            print(f"{i:2d}. {FRIENDS[friend]:5s}: {' / '.join(burst)}")
            why = "the owner was writing their own" if action.startswith("own:") else "the engine gave nothing"
            print(f"    draft: {draft!r}" if draft else f"    draft: none ({why})")
            print(f"    owner: {'sends ' + repr(sent) if sent else 'sends nothing'}")
            if sent:
                await client.push(account.draft(friend, ""))  # sending clears the chat's draft, on every device
                await client.push(account.new_message(friend, sent, out=True, seconds_later=20))
        writer.expire(now=time.time() + settings.session_gap_seconds + 1)  # the evening: unanswered drafts
        print(f"\n{len(DAY)} bursts in {time.monotonic() - started:.1f} s")
        print("\n".join(stats_lines(store.draft_stats())))
        verdicts = [(r["verdict"], r["distance"]) for r in (store.draft(i) for i in range(1, 100)) if r]
        print("verdicts:", ", ".join(f"{v}" + (f" ({d})" if v == "edited" else "") for v, d in verdicts))
        store.close()
        if real:
            await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="the embedded base model instead of scripted replies")
    asyncio.run(day(parser.parse_args().real))
