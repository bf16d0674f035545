"""Does reply shaping make the twin pass for its people? Each step of core/shaping.py on the same replies.

A bench/quality.py run keeps every model's replies to its held-out contexts in its reply cache. This bench
finds them (checked against the examples its report shows), rebuilds the real replies they answered, applies
each shaping step to the generated replies — and to nothing else — and measures again:

    discriminator accuracy [95% interval]   (0.5: the classifier cannot tell the model from the person)
    messages per burst, replies repeating a 3-word phrase, style distance

per persona and pooled, for the base model and the run's adapter. A step helps only where its interval clears
the unshaped one. The `burst` step caps a reply at the persona's usual burst: the length their own training
turns stay within 90% of the time (core.shaping.usual_burst), never taken from the held-out replies.

    python bench/quality.py --steps 12 --tag sft12
    python bench/shaping.py --tag sft12
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_compare import load_run, run_settings  # noqa: E402  (bench/ is the script's folder)

from core.shaping import STEPS, shape, usual_burst  # noqa: E402
from evaluation.discriminator import discriminator, with_interval  # noqa: E402
from evaluation.generate import probes_for  # noqa: E402
from evaluation.style import style_distance, style_stats  # noqa: E402
from storage import Storage  # noqa: E402
from trainer.dataset import iter_sessions  # noqa: E402

VARIANTS = {"none": (), **{step: (step,) for step in STEPS}, "all": STEPS}
MODELS = ("base", "current")


def cached_replies(cache_dir: Path, examples: list[dict], model: str, n: int) -> list[list[str]]:
    """The `n` replies of `model` whose first ones are the report's examples (a run's cache holds one such set)."""
    shown = [ex[model] for ex in examples]
    for path in sorted(cache_dir.glob("*.json")):
        value = json.loads(path.read_text())["value"]
        if isinstance(value, list) and len(value) == n and value[: len(shown)] == shown:
            return value
    raise FileNotFoundError(f"{cache_dir} holds no reply set matching the report's {model} examples: rerun the bench")


def usual_bursts(store: Storage, settings, personas: list[str]) -> dict[str, int]:
    """Each persona's usual burst, from their training turns."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for session in iter_sessions(store, settings, "train"):
        for turn in session.turns:
            sizes[turn.speaker].append(len(turn.messages))
    return {p: usual_burst(sizes[p]) for p in personas}


def gather(out: Path, tag: str) -> dict:
    """real, and per model the generated replies, for each persona of the run's report; and their usual bursts."""
    settings = run_settings(out, tag)
    report = json.loads((settings.data_dir / "adapters" / "0001" / "report" / "report.json").read_text())
    store = Storage(settings.db_path)
    sessions = list(iter_sessions(store, settings, "eval"))
    personas = list(report["style"])
    gathered: dict = {"personas": {}, "usual": usual_bursts(store, settings, personas)}
    for persona, entry in report["style"].items():
        probes = probes_for(sessions, persona, entry["n"], settings.bot_context_turns)
        real = [list(p.real) for p in probes]
        if [ex["real"] for ex in entry["examples"]] != real[: len(entry["examples"])]:
            raise ValueError(f"{tag}: the rebuilt held-out replies of {persona} are not the report's: rerun the bench")
        generated = {m: cached_replies(settings.report_cache_dir, entry["examples"], m, entry["n"]) for m in MODELS}
        gathered["personas"][persona] = {"real": real, **generated}
    store.close()
    return gathered


def figures(real: list, generated: list) -> dict:
    accuracy = discriminator(real, generated)
    stats, real_stats = style_stats(generated), style_stats(real)
    return {
        "discriminator": accuracy.value if accuracy else None,
        "ci": list(accuracy.interval) if accuracy else None,
        "burst": stats["burst_mean"],
        "repeats": stats["repeated_ngrams"],
        "distance": style_distance(stats, real_stats),
    }


def measure(gathered: dict) -> dict:
    """variant → model → persona (and "all", pooled) → figures."""
    result: dict = {}
    for variant, steps in VARIANTS.items():
        result[variant] = {}
        for model in MODELS:
            rows, pooled_real, pooled = {}, [], []
            for persona, replies in gathered["personas"].items():
                most = gathered["usual"][persona]
                shaped = [shape(r, steps, most) for r in replies[model]]
                rows[persona] = figures(replies["real"], shaped)
                pooled_real += replies["real"]
                pooled += shaped
            rows["all"] = figures(pooled_real, pooled)
            result[variant][model] = rows
    return result


def table(tag: str, gathered: dict, result: dict) -> list[str]:
    usual = ", ".join(f"{p} {n}" for p, n in gathered["usual"].items())
    lines = [f"\n[{tag}] usual bursts (training turns, 90%): {usual}"]
    lines.append(
        f"{'variant':11} {'model':8} {'persona':10} {'discriminator [95%]':>22} {'msgs/burst':>10} "
        f"{'rep.3gram':>9} {'style dist':>10}"
    )
    for variant, by_model in result.items():
        for model, rows in by_model.items():
            for persona, f in rows.items():
                shown = with_interval(f["discriminator"], f["ci"])
                lines.append(
                    f"{variant:11} {model:8} {persona:10} {shown:>22} {fmt(f['burst']):>10} "
                    f"{fmt(f['repeats']):>9} {fmt(f['distance']):>10}"
                )
    return lines


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag", action="append", required=True, help="a bench/quality.py run (repeat for several)")
    p.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    a = p.parse_args()
    saved = {}
    for tag in a.tag:
        load_run(a.out, tag)  # a clear error when the run is missing
        gathered = gather(a.out, tag)
        result = measure(gathered)
        saved[tag] = {"usual": gathered["usual"], "figures": result}
        print("\n".join(table(tag, gathered, result)))
    path = a.out / "shaping.json"
    path.write_text(json.dumps(saved, indent=1, ensure_ascii=False))
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
