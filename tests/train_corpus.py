"""A synthetic chat corpus for trainer tests and benches: each persona speaks its own recognisable words,
so a model that learns the chats shows it in its loss (and in what it generates).

Stored through the ordinary Storage methods (people, dialogs, messages, rebuilt sessions), one session per
day, first message ids chosen so each session lands in the split asked for (the split is a hash of the id).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from core.sessions import split_of
from storage import Storage

OWNER = 1
T0 = 1_600_000_000  # sessions are years old: closed
DAY = 86_400
WORDS = {
    "alice": "apple answer alright amazing always around",
    "bob": "banana bread bus blue bicycle bring",
    "carol": "cat cello cake cold castle coffee",
    "dave": "dog drum door dark dinner dance",
}
IDS = {"alice": OWNER, "bob": 2, "carol": 3, "dave": 4}


@dataclass
class Corpus:
    store: Storage
    seed: int = 0
    next_id: dict[int, int] = field(default_factory=dict)
    day: int = 1
    added: list[str] = field(default_factory=list)  # session ids, in the order they were added

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.store.upsert_people([{"id": i, "first_name": n.title(), "username": n} for n, i in IDS.items()])
        for name, pid in IDS.items():
            if pid != OWNER:
                self.store.upsert_dialog({"id": pid, "type": "personal_chat", "name": name, "person_id": pid})

    def _first_id(self, dialog_id: int, split: str) -> int:
        mid = self.next_id.get(dialog_id, 1000)
        while split_of(f"{dialog_id}-{mid}") != split:
            mid += 1000
        self.next_id[dialog_id] = mid + 1000
        return mid

    def _text(self, speaker: str) -> str:
        return " ".join(self.rng.choices(WORDS[speaker].split(), k=self.rng.randint(2, 8)))

    def add_session(self, friend: str, split: str = "train", turns: int | None = None) -> str:
        """One closed session between the owner and `friend`; returns its id."""
        dialog = IDS[friend]
        first = self._first_id(dialog, split)
        t, rows, mid = T0 + self.day * DAY, [], first
        self.day += 1
        for k in range(turns or self.rng.randint(2, 12)):
            speaker = friend if k % 2 == 0 else "alice"
            for _ in range(self.rng.randint(1, 3)):
                rows.append(
                    {
                        "dialog_id": dialog,
                        "id": mid,
                        "sender_id": IDS[speaker],
                        "date": t,
                        "text": self._text(speaker),
                        "out": int(speaker == "alice"),
                    }
                )
                mid, t = mid + 1, t + 30
        self.store.insert_messages(rows)
        self.added.append(f"{dialog}-{first}")
        return self.added[-1]

    def add(self, n_train: int, n_eval: int = 0, friends=("bob", "carol", "dave")) -> None:
        """`n_train` train and `n_eval` eval sessions, spread over `friends`, then sessions rebuilt."""
        for i in range(n_train):
            self.add_session(friends[i % len(friends)], "train")
        for i in range(n_eval):
            self.add_session(friends[i % len(friends)], "eval")
        self.rebuild()

    def rebuild(self) -> None:
        for pid in IDS.values():
            if pid != OWNER:
                self.store.rebuild_sessions(pid, gap_seconds=3600)
