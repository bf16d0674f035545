"""An adapter's evaluation report, as a recipe: guard → losses → replies → style → write → store.

    report = await evaluate_adapter(settings, store, version=3)   # `twin eval --adapter 3`
    report.path / "report.md"                                       # + report.json, summary.png, lengths.png

The leak guard runs first: a leak writes a report that says so, records it, and raises EvalLeak. Replies
come from an engine through the interface the bot uses; the base model, the previous adapter and this one
answer the same held-out contexts and play the same opener dialogues.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.format import ChatFormat
from core.paths import stored_path
from core.settings import Settings
from engine.base import AdapterRef, Engine
from engine.base_model import base_model_path
from storage import Storage
from trainer.dataset import iter_sessions
from trainer.memory import adapter_session_memory
from trainer.model import load_tokenizer

from .config import EvalConfig
from .discriminator import discriminator
from .generate import Probe, probes_for, with_probe_memory
from .headline import headline
from .leaks import EvalLeak, check_leaks
from .losses import MODELS, AdapterInfo, held_out_losses
from .render import write_report
from .replies import generate_all, progress_events
from .style import dominant_script, style_components, style_distance, style_stats

log = logging.getLogger(__name__)
REPORT_DIR = "report"  # inside the adapter's folder: numbered with it, pruned with it
# Fewer eval sessions than this make every figure noisy: said in the report, not an error.
FEW_EVAL_SESSIONS = 20
# Real chat text stays above ~1 nat/token even for a good twin; far below smells of eval data seen in training
# in a form the leak guard cannot match (a conversation re-imported with edits, quoted, forwarded).
SUSPICIOUS_LOSS = 0.5


@dataclass
class Report:
    version: int
    path: Path  # the report folder
    data: dict
    headline: dict


def pick_adapter(store: Storage, version: int | None) -> dict:
    """Adapter `version`, else the active one, else the newest one still on disk."""
    if version is not None:
        row = store.adapter(version)
        if row is None or row["status"] == "deleted":
            raise UserError(f"no adapter {version} (or it was pruned): `twin adapters` lists them")
        return row
    alive = [a for a in store.adapters() if a["status"] != "deleted"]
    row = store.active_adapter() or (alive[-1] if alive else None)
    if row is None:
        raise UserError("no adapter to evaluate yet: `twin train` makes one")
    return row


def adapter_info(row: dict, settings: Settings) -> AdapterInfo:
    path = AdapterRef.from_row(row, settings.data_dir).path
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return AdapterInfo(int(row["version"]), row, path, meta)


def previous_of(store: Storage, current: AdapterInfo) -> dict | None:
    """The adapter active when this one was trained (meta.json), else the newest earlier one that was ever
    active, else its parent: what this adapter replaces or would replace."""
    version = (current.meta.get("eval") or {}).get("active_version")
    if version is None or version == current.version:
        served = [a for a in store.adapters() if a["status"] in ("active", "retired")]
        earlier = [a["version"] for a in served if a["version"] < current.version]
        version = earlier[-1] if earlier else current.row.get("parent_version")
    return store.adapter(version) if version is not None else None


def pick_personas(owner: str | None, tokens: dict[str, int], top: int) -> list[str]:
    """The owner, then the `top` other personas with the most eval tokens."""
    others = [p for p in sorted(tokens, key=lambda p: (-tokens[p], p)) if p != owner][:top]
    return ([owner] if owner else []) + others


def style_section(probes: dict[str, list[Probe]], replies: dict[str, dict[str, list]], shown: int) -> dict:
    """Per persona: the real replies' style, each model's, their distances, and a few examples."""
    out = {}
    for persona, points in probes.items():
        if not points:  # no held-out turn of theirs: nothing to compare with
            continue
        real = style_stats([p.real for p in points])
        entry: dict = {"n": len(points), "real": real, "models": {}, "examples": []}
        for model, by_persona in replies.items():
            stats = style_stats(by_persona[persona], real["script_name"])
            entry["models"][model] = {
                "stats": stats,
                "distance": style_distance(stats, real),
                "components": style_components(stats, real),
                **discriminator_fields([p.real for p in points], by_persona[persona]),
            }
        for i, p in enumerate(points[:shown]):
            context = [(t.speaker, list(t.messages)) for t in p.context[-3:]]
            generated = {m: r[persona][i] for m, r in replies.items()}
            entry["examples"].append({"context": context, "real": list(p.real), **generated})
        out[persona] = entry
    return out


def discriminator_fields(real: list, generated: list) -> dict:
    """The discriminator accuracy, its 95% interval and how many replies it was told from: a report's fields."""
    figure = discriminator(real, generated)
    if figure is None:
        return {"discriminator": None, "discriminator_ci": None, "discriminator_n": 0}
    return {"discriminator": figure.value, "discriminator_ci": list(figure.interval), "discriminator_n": figure.n}


def overall_style(style: dict, probes: dict[str, list[Probe]], replies: dict[str, dict[str, list]]) -> dict:
    """Per model: the reply-weighted mean style distance and question share over the personas, and the
    discriminator accuracy on all of their replies pooled (one classifier: not a mean of per-persona ones)."""
    out = {"real": {"question": _weighted(style, lambda e: e["real"]["question"])}}
    real = [p.real for persona in style for p in probes[persona]]
    for model in MODELS:
        of = lambda e, m=model: e["models"].get(m) or {}  # noqa: E731
        generated = [r for persona in style for r in replies[model][persona]] if model in replies else []
        out[model] = {
            "distance": _weighted(style, lambda e, of=of: of(e).get("distance")),
            "question": _weighted(style, lambda e, of=of: of(e).get("stats", {}).get("question")),
            **discriminator_fields(real, generated),
        }
    return out


def _weighted(style: dict, value: Callable[[dict], float | None]) -> float | None:
    """The mean of `value` over the personas, weighted by their held-out replies."""
    pairs = [(value(e), e["n"]) for e in style.values() if value(e) is not None and e["n"]]
    total = sum(n for _, n in pairs)
    return round(sum(v * n for v, n in pairs) / total, 4) if total else None


def finish(store: Storage, settings: Settings, data: dict, out: Path) -> Report:
    data["headline"] = headline(data)
    write_report(out, data)
    store.save_eval_report(data["version"], data["status"], stored_path(out, settings.data_dir), data["headline"])
    return Report(data["version"], out, data, data["headline"])


def eval_warnings(sessions: list, loss: dict) -> list[str]:
    """What makes this eval weak even without a leak: too few sessions, a loss too good to be true."""
    notes = []
    if 0 < len(sessions) < FEW_EVAL_SESSIONS:
        notes.append(
            f"only {len(sessions)} eval sessions ({sum(loss['tokens'].values()):,} tokens): the figures "
            "are noisy, compare adapters by more than one number"
        )
    current = (loss["models"].get("current") or {}).get("loss")
    if current is not None and current < SUSPICIOUS_LOSS:
        notes.append(
            f"eval loss {current:.3f} is suspiciously low for chat text: look for eval conversations that "
            "reached training in another form (re-imported with edits, forwarded, quoted)"
        )
    return notes


async def evaluate_adapter(
    settings: Settings,
    store: Storage,
    version: int | None = None,
    out_dir: Path | None = None,
    cfg: EvalConfig | None = None,
    engine: Engine | None = None,
    engine_kind: str | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> Report:
    """Write adapter `version`'s report (default: the active adapter) and store its headline figures.
    `engine`: a started engine to reply with (else one of `engine_kind`, default TWIN_ENGINE, is started).
    `on_event`: hears `report_progress` events (see `progress_events`) while losses and replies are made."""
    cfg, emit = cfg or EvalConfig(), progress_events(on_event)
    base_model = settings.base_model_name  # loaded (a GGUF converted) only after the leak guard passed
    current = adapter_info(pick_adapter(store, version), settings)
    if not current.on_disk:
        raise UserError(f"adapter {current.version}'s folder {current.path} is missing: `twin adapters` lists them")
    previous_row = previous_of(store, current)
    previous = adapter_info(previous_row, settings) if previous_row else None
    out = Path(out_dir) if out_dir else current.path / REPORT_DIR
    sessions = list(iter_sessions(store, settings, "eval"))
    leaks = check_leaks(store, current.version, sessions)
    data: dict = {
        "version": current.version,
        "created_at": int(time.time()),
        "base_model": base_model,
        "previous_version": previous.version if previous else None,
        "leak": leaks.as_dict(),
        "status": "ok" if leaks.ok else "leak",
        "notes": [],
        "selfplay": current.meta.get("selfplay"),  # the round's self-play stage, when it ran
    }
    if not leaks.ok:
        finish(store, settings, data, out)
        raise EvalLeak(f"{leaks.message()} (report: {out / 'report.md'})")
    if not sessions:
        data["notes"].append("no eval sessions: no held-out loss and no style statistics, only opener dialogues")
    memory = adapter_session_memory(store, settings, current.meta)
    if memory is not None:
        sessions = memory.at_start(sessions)
    base_model = base_model_path(settings)
    fmt = ChatFormat(load_tokenizer(base_model))
    measured = lambda model, done, of: emit("losses", model, None, done, of)  # noqa: E731
    data["loss"] = held_out_losses(store, fmt, base_model, sessions, current, previous, measured)
    data["notes"] += eval_warnings(sessions, data["loss"])
    owner = store.owner_slug(settings.owner_id)
    personas = pick_personas(owner, data["loss"]["tokens"], cfg.top_personas)
    limit = {p: cfg.owner_replies if p == owner and cfg.owner_replies else cfg.replies_per_persona for p in personas}
    probes = {p: probes_for(sessions, p, limit[p], settings.bot_context_turns, cfg.seed) for p in personas}
    if memory is not None:  # what the bot would recall before each reply, as the adapter trained with
        probes = {p: with_probe_memory(ps, sessions, memory.recall_as) for p, ps in probes.items()}
        data["memory_tokens"] = memory.settings.memory_tokens
    scripts = {p: dominant_script([x.real for x in probes[p]]) for p in personas}
    data.update(owner=owner, personas=personas, scripts=scripts)
    generated = await generate_all(settings, engine, engine_kind, current, previous, probes, data, cfg, emit)
    generated = generated or {"replies": {}, "openers": []}
    data["style"] = style_section(probes, generated["replies"], cfg.examples_shown)
    data["style_overall"] = overall_style(data["style"], probes, generated["replies"])
    data["openers"] = generated["openers"]
    return finish(store, settings, data, out)
