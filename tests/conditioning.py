"""The persona conditioning check: does asking for persona X get X, end to end?

A synthetic corpus gives every persona an unmistakable signature: each of their messages starts with their
own signature word and goes on in their own vocabulary. A model trained on it by the real trainer (format,
loss mask, windows, packing) and served by a real engine (the bot's prompt, its sampling) must then answer
with X's signature when asked to play X. A persona swap, a header that is masked wrongly or a prompt that
differs between training and serving shows up here as a low share, long before it shows in a chat.

    build_signature_corpus(store, n_train=120, n_eval=12)   # then train a round on it
    result = await conditioning_check(engine, adapter)       # result.share >= 0.9
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.format import ChatTurn
from core.sessions import split_of
from engine.base import AdapterRef, Engine
from storage import Storage

OWNER = "alice"
# persona → (signature word, the rest of their vocabulary). Distinct first letters: distinct first tokens.
SIGNATURES: dict[str, tuple[str, str]] = {
    "alice": ("apple", "answer alright amazing always around"),
    "bob": ("banana", "bread bus blue bicycle bring"),
    "carol": ("cello", "cat cake cold castle coffee"),
    "dave": ("drum", "dog door dark dinner dance"),
}
PERSON_IDS = {"alice": 1, "bob": 2, "carol": 3, "dave": 4}
T0 = 1_600_000_000  # sessions years old: closed
DAY = 86_400
_WORD = re.compile(r"[^\W\d_]+")


def signature_message(persona: str, rng: random.Random) -> str:
    signature, words = SIGNATURES[persona]
    return " ".join([signature, *rng.choices(words.split(), k=rng.randint(1, 4))])


def _first_id(dialog_id: int, split: str, start: int) -> int:
    """The first message id ≥ start that puts the session `dialog_id-id` into `split` (a hash of the id)."""
    mid = start
    while split_of(f"{dialog_id}-{mid}") != split:
        mid += 1000
    return mid


def build_signature_corpus(store: Storage, n_train: int = 120, n_eval: int = 12, seed: int = 0) -> None:
    """Dialogs between the owner (alice, id 1) and bob, carol, dave: one closed session a day, 2-8 turns,
    1-3 messages a turn, either side opening. The owner id is recorded as an import would record it."""
    rng = random.Random(seed)
    store.upsert_people([{"id": i, "first_name": n.title(), "username": n} for n, i in PERSON_IDS.items()])
    store.set_meta("owner_id", PERSON_IDS[OWNER])
    friends = [p for p in SIGNATURES if p != OWNER]
    for friend in friends:
        pid = PERSON_IDS[friend]
        store.upsert_dialog({"id": pid, "type": "personal_chat", "name": friend, "person_id": pid})
    next_id = dict.fromkeys(PERSON_IDS.values(), 1000)
    splits = ["train"] * n_train + ["eval"] * n_eval
    for day, split in enumerate(splits, start=1):
        friend = friends[day % len(friends)]
        dialog = PERSON_IDS[friend]
        mid = _first_id(dialog, split, next_id[dialog])
        t, rows = T0 + day * DAY, []
        order = [friend, OWNER] if rng.random() < 0.5 else [OWNER, friend]
        for k in range(rng.randint(2, 8)):
            speaker = order[k % 2]
            for _ in range(rng.randint(1, 3)):
                rows.append(
                    {
                        "dialog_id": dialog,
                        "id": mid,
                        "sender_id": PERSON_IDS[speaker],
                        "date": t,
                        "text": signature_message(speaker, rng),
                        "out": int(speaker == OWNER),
                    }
                )
                mid, t = mid + 1, t + 30
        next_id[dialog] = mid + 1000
        store.insert_messages(rows)
    for friend in friends:
        store.rebuild_sessions(PERSON_IDS[friend], gap_seconds=3600)


def signature_of(messages: Sequence[str]) -> str | None:
    """Whose signature a reply shows: the persona whose signature word it uses, when exactly one's is used."""
    words = {w.lower() for m in messages for w in _WORD.findall(m)}
    found = [p for p, (signature, _) in SIGNATURES.items() if signature in words]
    return found[0] if len(found) == 1 else None


def probe_turns(persona: str, rng: random.Random) -> list[ChatTurn]:
    """One partner turn in the partner's own words: a friend for the owner, the owner for a friend. The
    same context fits every friend, so only the persona header can say which friend answers."""
    partner = rng.choice([p for p in SIGNATURES if p != OWNER]) if persona == OWNER else OWNER
    return [ChatTurn(partner, tuple(signature_message(partner, rng) for _ in range(rng.randint(1, 2))))]


@dataclass
class ConditioningResult:
    share: float  # replies showing the asked persona's signature, over all replies asked for
    per_persona: dict[str, float]
    samples: list[tuple[str, list[str]]] = field(default_factory=list)  # (asked persona, reply)

    def describe(self) -> str:
        each = ", ".join(f"{p} {s:.0%}" for p, s in self.per_persona.items())
        return f"{self.share:.1%} of replies show the asked persona's signature ({each})"


async def conditioning_check(
    engine: Engine, adapter: AdapterRef | None, per_persona: int = 16, seed: int = 0
) -> ConditioningResult:
    """Ask the engine (its own sampling, the bot's prompt) to play each persona `per_persona` times."""
    rng = random.Random(seed)
    asks = [(p, probe_turns(p, rng)) for p in SIGNATURES for _ in range(per_persona)]
    replies = await asyncio.gather(*[engine.reply(turns, p, turns[-1].speaker, adapter) for p, turns in asks])
    hits = {p: 0 for p in SIGNATURES}
    for (persona, _), reply in zip(asks, replies, strict=True):
        hits[persona] += signature_of(reply) == persona
    per = {p: hits[p] / per_persona for p in SIGNATURES}
    samples = [(p, list(r)) for (p, _), r in zip(asks, replies, strict=True)]
    return ConditioningResult(sum(hits.values()) / len(asks), per, samples)
