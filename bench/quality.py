"""Does the twin sound like the person? One round on real chats, base model beside the adapter.

On `chitchat-dataset` (real English conversations; tests/chitchat.py turns the most active sender into an
owner with a personal chat per partner) and the base model (default: the embedded SmolLM2-135M), it imports
the export, trains one round, writes the adapter's evaluation report and prints, per persona (the owner and
the top three others), base model and adapter side by side:

- held-out loss and perplexity (the trainer's own mask, on the eval sessions);
- the style of replies to held-out contexts against the real replies (message length, messages per burst,
  replies ending in a question, lowercase starts, dropped replies) and the style distance (0 = same style);
- the discriminator accuracy: a cross-validated character n-gram classifier telling real held-out replies
  from generated ones to the same contexts (0.5 = it cannot tell them apart, 1.0 = always can).

Every figure also goes to OUT/TAG.json, the report to OUT/TAG/data/adapters/0001/report/. The round's own
figures are saved before the report (OUT/TAG.round.json): if the report is cut off, `--reuse TAG` answers
with the trained adapter without training again.

    python bench/quality.py                                  # 30 steps (about 40 minutes on 2 CPU cores)
    python bench/quality.py --steps 8 --conversations 120    # a quick look
    python bench/quality.py --set loss_on=owner --tag owner-only      # any training knob, compared by tag
    python bench/quality.py --temperature 0 --tag greedy     # decoding knobs (TWIN_REPLY_*) too
    python bench/quality.py --reuse sft12 --min-p 0.05 --tag sft12-minp   # decoding alone, on sft12's adapter
    python bench/quality.py --time-marks --tag time   # then: python bench/time_probe.py --tag default --tag time
    python bench/quality.py --set selfplay_pairs=100 --tag sft-selfplay   # SPIN's stage after the SFT steps;
    python bench/quality.py --compare default sft-selfplay                # then against a plain run
    python bench/quality.py --steps 8 --replies 8 --set memory=false --tag memory-off   # memory off vs on:
    python bench/quality.py --steps 8 --replies 8 --memory-scope pair --tag memory-pair
    python bench/memory.py --tag memory-off --tag memory-pair --train-probes 30         # then the fact probe
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_compare import OWNER_ID, check_tag, compare_table, load_run  # noqa: E402  (bench/ is the script's folder)
from quality_holdout import hold_out  # noqa: E402

from core.settings import Settings  # noqa: E402
from engine.base_model import base_model_path  # noqa: E402
from engine.build import vllm_available  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from evaluation.discriminator import with_interval  # noqa: E402
from evaluation.report import evaluate_adapter  # noqa: E402
from storage import Storage  # noqa: E402
from tests.chitchat import import_chitchat  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.train import run_round  # noqa: E402

# 30 steps of 4 x 2048 tokens (~250k tokens): under an hour on 2 CPU cores for the embedded model.
DEFAULT_STEPS = 30
# Style figures shown per persona: (label, key of style_stats).
STYLE = (
    ("msg length", "length_median"),
    ("msgs/burst", "burst_mean"),
    ("question", "question"),
    ("lowercase", "lowercase_start"),
    ("dropped", "empty_share"),
    ("rep.3gram", "repeated_ngrams"),
    ("assistant", "assistant"),
)


def knob(text: str) -> tuple[str, object]:
    """`name=value` → (name, value parsed as JSON when it is, else the string)."""
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def tag_name(text: str) -> str:
    """--tag's type: a name of one run under --out (argparse says what is wrong with any other)."""
    try:
        return check_tag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="optimiser steps of the round (0: the whole default round)"
    )
    parser.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--owner-rank", type=int, default=0, help="0: the corpus's most active sender is the owner")
    parser.add_argument("--partners", type=int, default=None, help="only the N partners the owner talked with most")
    parser.add_argument("--conversations", type=int, default=None, help="at most N conversations in all")
    parser.add_argument("--engine", choices=["vllm", "transformers"], default=None, help="default: vllm if installed")
    # 100 owner replies and 50 a friend: the discriminator's 95% interval is then about ±0.07 and ±0.1
    # (with 16 a side it was ±0.17, too wide to tell whether a change helped).
    parser.add_argument("--replies", type=int, default=50, help="held-out contexts answered per friend and model")
    # 0.15 more of the corpus held out (beside the product's 5%): enough owner contexts for --owner-replies.
    parser.add_argument("--eval-share", type=float, default=0.15, help="bench-only share held out for the report")
    parser.add_argument("--owner-replies", type=int, default=100, help="held-out contexts the owner answers")
    parser.add_argument(
        "--set",
        type=knob,
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a training knob (twin train --show-config), e.g. --set learning_rate=1e-3",
    )
    parser.add_argument("--temperature", type=float, default=None, help="TWIN_REPLY_TEMPERATURE for the replies")
    parser.add_argument("--top-p", type=float, default=None, help="TWIN_REPLY_TOP_P for the replies")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="TWIN_REPLY_REPETITION_PENALTY")
    parser.add_argument("--min-p", type=float, default=None, help="TWIN_REPLY_MIN_P for the replies")
    parser.add_argument("--shaping", default=None, help="TWIN_REPLY_SHAPING, e.g. paragraphs,repeats")
    parser.add_argument("--max-messages", type=int, default=None, help="TWIN_REPLY_MAX_MESSAGES (the burst step)")
    parser.add_argument(
        "--reuse",
        type=tag_name,
        metavar="TAG",
        help="answer with TAG's trained adapter instead of training (decoding choices on the same adapter)",
    )
    parser.add_argument(
        "--memory-scope",
        choices=["off", "pair", "owner"],
        default=None,
        help="TWIN_MEMORY_SCOPE for the round and the report (default: the setting's default)",
    )
    parser.add_argument(
        "--time-marks", action="store_true", help="TWIN_TIME_MARKS=on for the round and the report (core/timemarks.py)"
    )
    # chitchat's messages are fewest at 10:00 UTC, 05:00 in New York: the owners' day fits that zone.
    parser.add_argument("--time-zone", default="America/New_York", help="TWIN_TIME_ZONE with --time-marks")
    parser.add_argument(
        "--tag", type=tag_name, default="default", help="name of this run's folder and JSON under --out"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=tag_name,
        metavar="TAG",
        help="print two saved runs side by side, marking the differences outside the noise (runs nothing)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("bench/out/models"),
        help="where the embedded model is converted, once for every run",
    )
    return parser.parse_args(argv)


def settings_for(a: argparse.Namespace, data_dir: Path) -> Settings:
    decoding = {
        "reply_temperature": a.temperature,
        "reply_top_p": a.top_p,
        "reply_min_p": a.min_p,
        "reply_repetition_penalty": a.repetition_penalty,
        "reply_shaping": a.shaping,
        "reply_max_messages": a.max_messages,
    }
    engine = a.engine or ("vllm" if vllm_available() else "transformers")
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        models_dir=a.models_dir.absolute(),
        owner_id=OWNER_ID,
        base_model=a.model,
        engine=engine,
        vllm_dtype="float32",
        vllm_max_model_len=2048,
        time_marks=a.time_marks,
        time_zone=a.time_zone if a.time_marks else "",
        **{k: v for k, v in {**decoding, "memory_scope": a.memory_scope}.items() if v is not None},
    )


def run(a: argparse.Namespace) -> dict:
    root = a.out / a.tag
    shutil.rmtree(root, ignore_errors=True)
    source = reuse(a, root / "data") if a.reuse else None
    settings = settings_for(a, root / "data")
    settings.ensure_data_dir()
    model = base_model_path(settings)
    round_ = source or trained(a, train(a, settings, root, model), settings)
    t0 = time.perf_counter()
    eval_cfg = EvalConfig(replies_per_persona=a.replies, owner_replies=a.owner_replies)
    store = Storage(settings.db_path)
    report = asyncio.run(evaluate_adapter(settings, store, 1, cfg=eval_cfg, engine_kind=settings.engine))
    report_s = time.perf_counter() - t0
    return {
        "tag": a.tag,
        "model": model,
        **round_,
        **trained_with(a, settings),
        "engine": settings.engine,
        "decoding": {
            "temperature": settings.reply_temperature,
            "top_p": settings.reply_top_p,
            "min_p": settings.reply_min_p,
            "repetition_penalty": settings.reply_repetition_penalty,
            "shaping": ",".join(settings.shaping),
            "max_messages": settings.reply_max_messages,
        },
        "report_seconds": round(report_s),
        "report": str(report.path / "report.md"),
        "owner": report.data["owner"],
        "loss": report.data["loss"],
        "style": report.data["style"],
        "style_overall": report.data["style_overall"],
    }


def train(a: argparse.Namespace, settings: Settings, root: Path, model: str) -> dict:
    """Import the corpus, hold out the bench's share and train one round: adapter 1 of the run's data dir."""
    choose = {"owner_rank": a.owner_rank, "partners": a.partners, "conversations": a.conversations}
    made, store = import_chitchat(settings, root / "result.json", **choose)
    held = hold_out(store, a.eval_share)  # the bench's own DB only; never trained on in its round
    # Checkpointing changes no figure, only memory and time: off, as the bench machine has the memory.
    cfg = TrainConfig(**{"gradient_checkpointing": False, **dict(a.set), "max_steps": a.steps or None})
    print(
        f"{made.messages:,} messages with {len(made.partners)} partners ({len(held)} more sessions held out); "
        f"training {f'{a.steps} steps' if a.steps else 'the whole default round'} on {model}",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    result = run_round(settings, cfg, full=True, on_event=progress_line)
    return {
        "steps": len(TRAINED),  # --steps, or the default round's own count
        "corpus": {"messages": made.messages, "partners": len(made.partners), "bench_held_out": len(held)},
        "counts": result.counts,
        "trained_tokens": sum(TRAINED),
        "train_seconds": round(time.perf_counter() - t0),
    }


def trained(a: argparse.Namespace, round_: dict, settings: Settings) -> dict:
    """The round's figures, saved before the report as OUT/TAG.round.json: a report cut off (hours into a
    default round) loses nothing, as `--reuse TAG` answers with the trained adapter from there."""
    saved = {**round_, **trained_with(a, settings)}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.tag}.round.json").write_text(json.dumps(saved, indent=1, ensure_ascii=False))
    return round_


def trained_with(a: argparse.Namespace, settings: Settings) -> dict:
    """What `--reuse` takes over from a run: its training knobs and time marks (the zone, or None)."""
    return {"knobs": dict(a.set), "time_marks": settings.time_zone if settings.time_marks else None}


def load_round(out: Path, tag: str) -> dict:
    """A saved run's figures (TAG.json), or only its round's when its report never finished (TAG.round.json)."""
    finished, partial = out / f"{check_tag(tag)}.json", out / f"{tag}.round.json"
    if not finished.is_file() and partial.is_file():
        return json.loads(partial.read_text())
    return load_run(out, tag)


def reuse(a: argparse.Namespace, data_dir: Path) -> dict:
    """--reuse TAG: that run's data dir (corpus, held-out split, adapter 1) copied, its round's figures kept, and
    its time marks and knobs taken over: only the decoding of the report is this run's own."""
    source = load_round(a.out, a.reuse)
    shutil.copytree(a.out / a.reuse / "data", data_dir, ignore=shutil.ignore_patterns("report"))
    a.time_marks, a.time_zone = bool(source.get("time_marks")), source.get("time_marks")
    a.set = list(source["knobs"].items())
    print(f"reusing the adapter of [{a.reuse}]: no training", file=sys.stderr, flush=True)
    keys = ("steps", "corpus", "counts", "trained_tokens", "train_seconds")
    return {"reused": a.reuse, **{k: source[k] for k in keys}}


TRAINED: list[int] = []  # tokens of each step of the round


def progress_line(event: dict) -> None:
    if event.get("event") == "step":
        TRAINED.append(event["tokens"])
        print(
            f"  step {event['step']}/{event['of']} loss {event['loss']:.3f}, {event['tokens_per_s']:.0f} tok/s",
            file=sys.stderr,
            flush=True,
        )


def fmt(value, digits: int = 2) -> str:
    """A figure for the table: "-" when missing, whole numbers (a median length) without decimals."""
    if value is None:
        return "-"
    if isinstance(value, int) or (value >= 10 and float(value).is_integer()):
        return str(int(value))
    return f"{value:.{digits}f}"


def held_out(figures: dict | None, key: str, persona: str) -> float | None:
    """A model's held-out `key` (loss, ppl) overall (`persona` "all") or for one persona."""
    figures = figures or {}
    if persona == "all":
        return figures.get(key)
    return (figures.get("per_persona" if key == "loss" else "per_persona_ppl") or {}).get(persona)


def figures(styled: dict) -> tuple:
    """(discriminator accuracy, its 95% interval) of a model's style figures."""
    return styled.get("discriminator"), styled.get("discriminator_ci")


def table(r: dict) -> str:
    """The bench's one table: a row per persona (owner first, then everyone), base beside adapter."""
    models = r["loss"]["models"]
    personas = list(dict.fromkeys(p for p in [r["owner"], *r["style"]] if p))
    header = (
        f"{'persona':14} {'tokens':>6} │ {'loss base':>9} {'adapter':>7} │ {'ppl base':>8} {'adapter':>7} │ "
        + " │ ".join(f"{label:>10} {'base':>5} {'adapt':>5}" for label, _ in STYLE)
        + f" │ {'style dist':>10} {'adapt':>5} │ {'discrim. base':>18} {'adapter':>18}"
    )
    lines = [header, "─" * len(header)]
    for p in [*personas, "all"]:
        loss = {m: held_out(models[m], "loss", p) for m in ("base", "current")}
        ppl = {m: held_out(models[m], "ppl", p) for m in ("base", "current")}
        tokens = sum(r["loss"]["tokens"].values()) if p == "all" else r["loss"]["tokens"].get(p, 0)
        style = r["style"].get(p, {})
        stats = {m: ((style.get("models") or {}).get(m) or {}) for m in ("base", "current")}
        cells = []
        for _, key in STYLE:
            real = (style.get("real") or {}).get(key)
            cells.append(
                f"{fmt(real):>10} {fmt(stats['base'].get('stats', {}).get(key)):>5} "
                f"{fmt(stats['current'].get('stats', {}).get(key)):>5}"
            )
        overall = r["style_overall"] if p == "all" else None
        dist = {m: (overall[m] if overall else stats[m]).get("distance") for m in ("base", "current")}
        disc = {m: with_interval(*figures(overall[m] if overall else stats[m])) for m in ("base", "current")}
        label = f"{p} (owner)" if p == r["owner"] else p
        lines.append(
            f"{label:14} {tokens:6} │ {fmt(loss['base'], 3):>9} {fmt(loss['current'], 3):>7} │ "
            f"{fmt(ppl['base'], 1):>8} {fmt(ppl['current'], 1):>7} │ "
            + " │ ".join(cells)
            + f" │ {fmt(dist['base']):>10} {fmt(dist['current']):>5} │ {disc['base']:>18} "
            f"{disc['current']:>18}"
        )
    lines.append(
        "style columns: real value, then base, then adapter; `all` style rows are not shown "
        "(distance and discriminator pooled over personas); discriminator 0.5 = indistinguishable, "
        "[95% interval]; rep.3gram: replies repeating a 3-word phrase; assistant: replies with an assistant phrase"
    )
    return "\n".join(lines)


def main() -> None:
    a = parse_args()
    if a.compare:
        print(compare_table(*(load_run(a.out, tag) for tag in a.compare)))
        return
    r = run(a)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.tag}.json").write_text(json.dumps(r, indent=1, ensure_ascii=False))
    print(
        f"\nbench/quality.py [{a.tag}]: {Path(r['model']).name}, {r['steps']} steps ({r['trained_tokens']:,} "
        f"tokens trained, {r['train_seconds']} s), knobs {r['knobs'] or 'default'}, {r['engine']} replies "
        f"({', '.join(f'{k} {v}' for k, v in r['decoding'].items())}), report {r['report_seconds']} s"
    )
    print(table(r))
    print(f"figures: {a.out / (a.tag + '.json')}; report: {r['report']}")


if __name__ == "__main__":
    main()
