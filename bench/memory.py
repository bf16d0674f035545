"""Does memory make the twin say what the owner said before? A fact probe on bench/quality.py's runs.

Fact probes are found automatically in the held-out sessions of a `bench/quality.py` run: an owner's turn
that answers a question (the partner's turn before it has a "?") is a probe when the owner answered a similar
question before (the earlier question found through the memory index, from before the session and outside
held-out sessions) and the two answers share content words that the question itself does not contain (where
the owner is from, their major, their job). For each probe the run's adapter replies as the owner three
times, with memory off, with the default pair scope (only this partner's dialog) and with the owner scope
(also the owner's own words to everyone else). Printed per condition: the share of memory blocks holding a
fact word (retrieval), and the share of replies holding one (what a user would see).

    python bench/memory.py --tag memory-off --tag memory-pair     # after those bench/quality.py runs
    python bench/memory.py --tag memory-pair --train-probes 30    # also 30 probes in trained-on sessions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_compare import OWNER_ID, run_settings  # noqa: E402  (bench/ is the script's folder)

from core.format import NO_MEMORY  # noqa: E402
from core.memory import memory_on  # noqa: E402
from core.recall import STOP_WORDS, query_terms, rank_hits  # noqa: E402
from core.settings import Settings  # noqa: E402
from engine.base import AdapterRef  # noqa: E402
from evaluation.generate import Gated, quiet_engine_log, started_engine  # noqa: E402
from storage import Storage  # noqa: E402
from trainer.dataset import TrainingSession, iter_sessions  # noqa: E402
from trainer.memory import SessionMemory, held_out  # noqa: E402

SCOPES = ("off", "pair", "owner")
# Earlier questions looked at per probe: the best matches of the question's words.
QUESTIONS = 20
# A fact word is at least this long: shorter shared words are mostly chat filler.
FACT_CHARS = 4
# A word in more of the owner's messages than this is filler, not a fact.
COMMON_SHARE = 0.003


@dataclass
class FactProbe:
    session: TrainingSession
    turn: int  # index of the owner's answering turn
    facts: set[str]  # content words of the real answer that an earlier answer of the owner has too
    same_partner: bool  # some earlier answer was to this same partner


def all_words(texts) -> set[str]:
    """Content words of `texts`: lowercase, FACT_CHARS long at least, no stop words."""
    return {w for t in texts for w in re.findall(r"\w+", t.lower()) if len(w) >= FACT_CHARS and w not in STOP_WORDS}


def common_words(store: Storage, settings: Settings) -> set[str]:
    """Words in more than COMMON_SHARE of the owner's messages: chat filler ("love", "today"), not facts."""
    counts: Counter[str] = Counter()
    n = 0
    for s in iter_sessions(store, settings, "all"):
        for turn, speaker in zip(s.turns, s.speaker_ids, strict=True):
            if speaker == OWNER_ID:
                for message in turn.messages:
                    counts.update(all_words([message]))
                    n += 1
    return {w for w, c in counts.items() if c > COMMON_SHARE * n}


def find_probes(store: Storage, settings: Settings, sessions: list[TrainingSession]) -> list[FactProbe]:
    skip, gap, common = held_out(store), settings.session_gap_seconds, common_words(store, settings)
    probes = []
    for s in sessions:
        for t in range(1, len(s.turns)):
            question = s.turns[t - 1]
            if s.speaker_ids[t] != OWNER_ID or s.speaker_ids[t - 1] == OWNER_ID:
                continue
            if not any("?" in m for m in question.messages):
                continue
            q_terms = query_terms([question], last=1)
            if not q_terms:
                continue
            real = all_words(s.turns[t].messages) - set(q_terms)
            facts, same = set(), False
            hits = rank_hits(store.memory_hits(q_terms, before=s.start), q_terms)[:QUESTIONS]
            for hit in hits:
                if hit["sender_id"] == OWNER_ID or "?" not in hit["text"] or skip(hit):
                    continue
                around = store.memory_around(hit, gap, s.start)
                answer = [r["text"] for r in around if r["date"] >= hit["date"] and r["sender_id"] == OWNER_ID]
                shared = (real & all_words(answer)) - common
                if shared:
                    facts |= shared
                    same = same or hit["dialog_id"] == s.dialog_id
            if facts:
                probes.append(FactProbe(s, t, facts, same))
    return probes


async def replies(settings: Settings, store: Storage, probes: list[FactProbe], owner: str, context: int) -> dict:
    """Per scope: (memory texts, reply texts) for every probe, the run's adapter playing the owner."""
    adapter = AdapterRef.from_row(store.adapter(1), settings.data_dir)
    out: dict = {}
    async with started_engine(settings, settings.engine, [adapter]) as engine:
        gated = Gated(engine, 8)
        for scope in SCOPES:
            memory = SessionMemory(store, settings.model_copy(update={"memory_scope": scope}), OWNER_ID)

            async def one(p: FactProbe, memory=memory) -> tuple[str, str]:
                turns = p.session.turns[max(0, p.turn - context) : p.turn]
                recalled = memory.recall(p.session, turns) if memory_on(memory.settings) else []
                block = gated.memory_block(recalled, settings.memory_tokens) if recalled else NO_MEMORY
                said = await gated.reply(turns, owner, turns[-1].speaker, adapter, block)
                return block.text, "\n".join(said)

            with quiet_engine_log():
                out[scope] = await asyncio.gather(*(one(p) for p in probes))
    return out


def share(texts: list[str], probes: list[FactProbe]) -> float | None:
    hits = [any(f in text.lower() for f in p.facts) for text, p in zip(texts, probes, strict=True)]
    return round(sum(hits) / len(hits), 3) if hits else None


def run(tag: str, out: Path, engine: str, split: str, limit: int) -> dict:
    settings = run_settings(out, tag, engine)
    store = Storage(settings.db_path)
    sessions = list(iter_sessions(store, settings, split))
    probes = find_probes(store, settings, sessions)
    probes = random.Random(0).sample(probes, min(limit, len(probes)))
    owner = store.owner_slug(OWNER_ID)
    print(f"[{tag}] {len(probes)} fact probes in {len(sessions)} {split} sessions", file=sys.stderr, flush=True)
    made = asyncio.run(replies(settings, store, probes, owner, settings.bot_context_turns)) if probes else {}
    rows = {}
    for scope, pairs in made.items():
        blocks, said = [b for b, _ in pairs], [r for _, r in pairs]
        rows[scope] = {"memory_has_fact": share(blocks, probes), "reply_has_fact": share(said, probes)}
    examples = [
        {
            "question": list(p.session.turns[p.turn - 1].messages),
            "real": list(p.session.turns[p.turn].messages),
            "facts": sorted(p.facts),
            **{scope: made[scope][i] for scope in made},
        }
        for i, p in enumerate(probes[:10])
    ]
    same = sum(p.same_partner for p in probes)
    return {
        "tag": tag,
        "split": split,
        "probes": len(probes),
        "same_partner": same,
        "scopes": rows,
        "examples": examples,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", action="append", required=True, help="a bench/quality.py run (repeat to compare)")
    p.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    p.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    p.add_argument(
        "--train-probes",
        type=int,
        default=0,
        help="also probe N turns of trained-on sessions (more probes; the adapter saw those answers)",
    )
    a = p.parse_args()
    results = [run(tag, a.out, a.engine, "eval", 10**6) for tag in a.tag]
    results += [run(tag, a.out, a.engine, "train", a.train_probes) for tag in a.tag if a.train_probes]
    (a.out / "memory.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"\n{'run':20} {'probes':>6} {'same partner':>12} │ " + " │ ".join(f"{s:>22}" for s in SCOPES))
    print(f"{'':20} {'':6} {'':12} │ " + " │ ".join(f"{'memory':>10} {'reply':>11}" for _ in SCOPES))
    for r in results:
        cells = []
        for s in SCOPES:
            c = r["scopes"].get(s, {})
            cells.append(f"{c.get('memory_has_fact', '-')!s:>10} {c.get('reply_has_fact', '-')!s:>11}")
        print(f"{r['tag'] + ' ' + r['split']:20} {r['probes']:6} {r['same_partner']:12} │ " + " │ ".join(cells))
    print("memory: share of memory blocks holding a fact word; reply: share of replies holding one")
    print(f"figures and examples: {a.out / 'memory.json'}")


if __name__ == "__main__":
    main()
