"""Does the twin know what time it is? A greeting probe on bench/quality.py's runs (issue: time awareness).

Openers are the first turns of held-out sessions that a friend started and the owner answered. The run's
adapter answers each as the owner twice: as if the conversation started on a Tuesday at 08:30 and at 23:30 (in
the run's TWIN_TIME_ZONE). An adapter trained with time marks (TWIN_TIME_MARKS, see core/timemarks.py) is told
the hour through the format; one trained without them gets the same prompt both times, so its figure is what
the words alone give. A reply *fits* its hour when it has a word of that hour and none of the other's
("morning", "coffee", "woke up" / "night", "sleep", "bed", "tired"), and *misfits* the other way round.

    fit − misfit, over both hours' replies, with a 95% bootstrap interval over openers

is the figure: the format with time must raise it beyond the interval, and `bench/quality.py --compare` must
show the discriminator no worse.

    python bench/quality.py --steps 12 --tag sft12                                  # without time marks
    python bench/quality.py --steps 12 --time-marks --tag sft12-time                # with them
    python bench/time_probe.py --tag sft12 --tag sft12-time
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_compare import OWNER_ID, run_settings  # noqa: E402  (bench/ is the script's folder)

from core.format import ChatTurn  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.timemarks import start_mark  # noqa: E402
from engine.base import AdapterRef  # noqa: E402
from evaluation.generate import Gated, quiet_engine_log, started_engine  # noqa: E402
from storage import Storage  # noqa: E402
from trainer.dataset import iter_sessions  # noqa: E402

# A Tuesday: no weekend talk in the way. The hours: well inside "morning" and "night" (core.timemarks).
DAY, HOURS = (2024, 3, 5), {"morning": (8, 30), "night": (23, 30)}
WORDS = {
    "morning": re.compile(r"\b(good )?morning\b|\bgm\b|\bbreakfast\b|\bcoffee\b|\bwok(e|en) up\b|\bwake\b|\bearly\b"),
    "night": re.compile(r"\b(good ?)?night\b|\btonight\b|\bgn\b|\bsleep\w*|\bbed\b|\btired\b|\blate\b"),
}
BOOTSTRAP = 2000  # resamples of the openers for the interval


def verdict(reply: str, hour: str) -> int:
    """+1: the reply fits `hour` (a word of it, none of the other's); -1: it fits the other; 0: neither."""
    other = "night" if hour == "morning" else "morning"
    text = reply.lower()
    mine, theirs = bool(WORDS[hour].search(text)), bool(WORDS[other].search(text))
    return int(mine and not theirs) - int(theirs and not mine)


def score(verdicts: list[tuple[int, int]], seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of fit − misfit over both hours, and its 95% bootstrap interval over the openers."""
    per_opener = [(m + n) / 2 for m, n in verdicts]
    mean = sum(per_opener) / len(per_opener)
    rng = random.Random(seed)
    draws = sorted(sum(rng.choices(per_opener, k=len(per_opener))) / len(per_opener) for _ in range(BOOTSTRAP))
    return mean, (draws[int(0.025 * BOOTSTRAP)], draws[int(0.975 * BOOTSTRAP) - 1])


def openers(store: Storage, settings: Settings, owner: str, limit: int) -> list[ChatTurn]:
    """First turns of held-out sessions a friend opened and the owner answered (turn marks left out)."""
    found = [
        ChatTurn(s.turns[0].speaker, s.turns[0].messages)
        for s in iter_sessions(store, settings, "eval")
        if s.turns[0].speaker != owner and s.turns[1].speaker == owner
    ]
    return random.Random(0).sample(found, min(limit, len(found)))


def run(tag: str, out: Path, engine: str, limit: int) -> dict:
    settings = run_settings(out, tag, engine)
    marks = settings.time_marks  # the adapter trained with them: told the hour through the format
    store = Storage(settings.db_path)
    owner = store.owner_slug(OWNER_ID)
    asked = openers(store, settings, owner, limit)
    at = {h: int(datetime(*DAY, *hm, tzinfo=settings.zone).timestamp()) for h, hm in HOURS.items()}
    print(f"[{tag}] {len(asked)} openers, time marks {'on' if marks else 'off'}", file=sys.stderr, flush=True)
    adapter = AdapterRef.from_row(store.adapter(1), settings.data_dir)

    async def replies() -> dict[str, list[str]]:
        async with started_engine(settings, settings.engine, [adapter]) as eng:
            gated = Gated(eng, 8)

            async def one(opener: ChatTurn, hour: str) -> str:
                turn = ChatTurn(opener.speaker, opener.messages, start_mark(at[hour], settings.zone) if marks else "")
                return "\n".join(await gated.reply([turn], owner, opener.speaker, adapter))

            with quiet_engine_log():
                return {h: list(await asyncio.gather(*(one(o, h) for o in asked))) for h in HOURS}

    made = asyncio.run(replies()) if asked else {h: [] for h in HOURS}
    verdicts = [
        (verdict(m, "morning"), verdict(n, "night")) for m, n in zip(made["morning"], made["night"], strict=True)
    ]
    value, interval = score(verdicts) if verdicts else (None, None)
    return {
        "tag": tag,
        "time_marks": bool(marks),
        "openers": len(asked),
        "fit_minus_misfit": value,
        "interval": interval,
        "fits": {h: sum(v[i] == 1 for v in verdicts) for i, h in enumerate(HOURS)},
        "misfits": {h: sum(v[i] == -1 for v in verdicts) for i, h in enumerate(HOURS)},
        "examples": [
            {"opener": list(o.messages), "morning": made["morning"][i], "night": made["night"][i]}
            for i, o in enumerate(asked[:12])
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag", action="append", required=True, help="a bench/quality.py run (repeat to compare)")
    p.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    p.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    p.add_argument("--openers", type=int, default=100, help="held-out openers, each answered at both hours")
    a = p.parse_args()
    results = [run(tag, a.out, a.engine, a.openers) for tag in a.tag]
    (a.out / "time_probe.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"\n{'run':24} {'marks':>5} {'openers':>7}  {'fit − misfit [95%]':>24}  fits m/n  misfits m/n")
    for r in results:
        shown = "—"
        if r["fit_minus_misfit"] is not None:
            lo, hi = r["interval"]
            shown = f"{r['fit_minus_misfit']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        fits, misfits = r["fits"], r["misfits"]
        print(
            f"{r['tag']:24} {'on' if r['time_marks'] else 'off':>5} {r['openers']:7}  {shown:>24}"
            f"  {fits['morning']:4}/{fits['night']:<4} {misfits['morning']:5}/{misfits['night']:<4}"
        )
    print(f"examples: {a.out / 'time_probe.json'}")


if __name__ == "__main__":
    main()
