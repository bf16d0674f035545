"""Real people's chats for tests and benches: the `chitchat-dataset` corpus (MIT; 7,168 English conversations,
258k messages between 1,315 people, real timestamps and bursts) as a Telegram Desktop `result.json`.

One prolific sender is the owner; each person they talked with becomes a personal chat holding every
conversation the two had, with the real timestamps. Names are made up (the corpus has only ids).

    python -m tests.chitchat OUT/result.json                       # the top sender and all 142 partners
    python -m tests.chitchat OUT/result.json --partners 5 --conversations 40
    twin import OUT/result.json                                    # the export names its owner (id 1000)
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings
    from storage import Storage

OWNER_ID = 1000
FIRST_PARTNER_ID = 2001
OWNER_NAME = ("Casey", "Owner")
# Made-up first names for partners, in order of how often they talked with the owner.
NAMES = (
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Riley",
    "Jamie",
    "Drew",
    "Quinn",
    "Avery",
    "Parker",
    "Reese",
    "Skyler",
    "Rowan",
    "Emerson",
    "Finley",
    "Hayden",
    "Kendall",
    "Logan",
    "Peyton",
)


@dataclass
class ChitchatExport:
    path: Path
    owner_id: int
    owner_slug: str
    partners: dict[str, int] = field(default_factory=dict)  # partner name → conversations
    messages: int = 0


@lru_cache(maxsize=1)
def load_corpus() -> dict:
    """The corpus as shipped: conversation id → {"messages": [burst, ...], ...}, each message
    {"sender", "text", "timestamp"}."""
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("chitchat-dataset is not installed: scripts/setup.sh dev installs it")
    return json.loads((Path(spec.submodule_search_locations[0]) / "dataset.json").read_text())


def senders_by_activity(corpus: dict) -> list[str]:
    """Senders, the one in most conversations first."""
    counts: Counter[str] = Counter()
    for conv in corpus.values():
        counts.update({m["sender"] for burst in conv["messages"] for m in burst})
    return [s for s, _ in counts.most_common()]


def partner_name(i: int) -> str:
    return NAMES[i % len(NAMES)] + (f" {i // len(NAMES) + 1}" if i >= len(NAMES) else "")


def _stamp(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _message(msg_id: int, unix: int, name: str, user_id: int, text: str) -> dict:
    return {
        "id": msg_id,
        "type": "message",
        "date": dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "date_unixtime": str(unix),
        "from": name,
        "from_id": f"user{user_id}",
        "text": text,
        "text_entities": [{"type": "plain", "text": text}],
    }


def chitchat_export(
    out: Path, owner_rank: int = 0, partners: int | None = None, conversations: int | None = None
) -> ChitchatExport:
    """Write the owner's chats (the `owner_rank`-th most active sender) as a Telegram Desktop export at `out`.

    `partners`: only the N people the owner talked with most; `conversations`: at most N conversations in
    all, the earliest of each partner first, spread over the partners (small exports for fast tests)."""
    corpus = load_corpus()
    owner = senders_by_activity(corpus)[owner_rank]
    by_partner: dict[str, list[dict]] = defaultdict(list)
    for conv in sorted(corpus.values(), key=lambda c: c["messages"][0][0]["timestamp"]):
        people = {m["sender"] for burst in conv["messages"] for m in burst}
        if owner in people and len(people) == 2:
            by_partner[next(iter(people - {owner}))].append(conv)
    ranked = sorted(by_partner, key=lambda p: (-len(by_partner[p]), p))[:partners]
    chosen = _spread(ranked, by_partner, conversations)
    owner_name = " ".join(OWNER_NAME)
    chats, result = [], ChitchatExport(Path(out), OWNER_ID, OWNER_NAME[0].lower())
    for i, partner in enumerate(ranked):
        name, user_id = partner_name(i), FIRST_PARTNER_ID + i
        people = {owner: (owner_name, OWNER_ID), partner: (name, user_id)}
        messages = [
            _message(n, _stamp(m["timestamp"]), *people[m["sender"]], m["text"])
            for n, m in enumerate(
                sorted(
                    (m for conv in chosen[partner] for burst in conv["messages"] for m in burst if m["text"]),
                    key=lambda m: m["timestamp"],
                ),
                start=1,
            )
        ]
        chats.append({"name": name, "type": "personal_chat", "id": user_id, "messages": messages})
        result.partners[name] = len(chosen[partner])
        result.messages += len(messages)
    export = {
        "about": "chitchat-dataset (MIT) as a Telegram Desktop export, written by tests/chitchat.py",
        "personal_information": {"user_id": OWNER_ID, "first_name": OWNER_NAME[0], "last_name": OWNER_NAME[1]},
        "chats": {"about": "personal chats", "list": chats},
    }
    result.path.parent.mkdir(parents=True, exist_ok=True)
    result.path.write_text(json.dumps(export, ensure_ascii=False))
    return result


def import_chitchat(settings: Settings, out: Path, **choose: Any) -> tuple[ChitchatExport, Storage]:
    """`chitchat_export(out, **choose)` imported into settings' database, as `twin import` takes it."""
    from collector.telegram_export import import_export
    from storage import Storage

    made = chitchat_export(out, **choose)
    store = Storage(settings.db_path)
    import_export(
        store,
        made.path,
        owner_id=None,
        include_groups=False,
        keep_stickers=True,
        gap_seconds=settings.session_gap_seconds,
        progress=False,
    )
    return made, store


def _spread(ranked: list[str], by_partner: dict[str, list[dict]], limit: int | None) -> dict[str, list[dict]]:
    """Each partner's conversations, at most `limit` in all: taken round-robin, earliest first."""
    if limit is None:
        return {p: by_partner[p] for p in ranked}
    chosen: dict[str, list[dict]] = {p: [] for p in ranked}
    taken, depth = 0, 0
    while taken < limit and any(depth < len(by_partner[p]) for p in ranked):
        for p in ranked:
            if depth < len(by_partner[p]) and taken < limit:
                chosen[p].append(by_partner[p][depth])
                taken += 1
        depth += 1
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where to write result.json")
    parser.add_argument("--owner-rank", type=int, default=0, help="0 = the most active sender is the owner")
    parser.add_argument("--partners", type=int, default=None, help="only the N people the owner talked with most")
    parser.add_argument("--conversations", type=int, default=None, help="at most N conversations in all")
    args = parser.parse_args(argv)
    made = chitchat_export(args.out, args.owner_rank, args.partners, args.conversations)
    print(
        f"{made.path}: owner {made.owner_slug} (id {made.owner_id}), {len(made.partners)} partners, "
        f"{sum(made.partners.values())} conversations, {made.messages} messages"
    )


if __name__ == "__main__":
    main()
