"""The report's files: report.json (everything), report.md (a page that opens with the comparison table)
and the PNG plots."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from .discriminator import with_interval
from .losses import MODELS
from .plots import draw_plots

FEATURES = (  # (label, key in style_stats, format)
    ("replies / messages", None, None),
    ("message length, mean chars", "length_mean", "{:.1f}"),
    ("message length, median chars", "length_median", "{:.0f}"),
    ("messages per burst", "burst_mean", "{:.2f}"),
    ("replies ending in a question", "question", "{:.0%}"),
    ("messages with emoji", "emoji", "{:.0%}"),
    ("messages ending in '.'", "period_end", "{:.0%}"),
    ("messages with '!'", "exclaim", "{:.0%}"),
    ("messages with '...'", "ellipsis", "{:.0%}"),
    ("messages starting lowercase", "lowercase_start", "{:.0%}"),
    ("messages ending in ')' or '('", "bracket_smile", "{:.0%}"),
    ("letters in the persona's script", "script", "{:.0%}"),
    ("replies dropped (degenerate)", "empty_share", "{:.0%}"),
    ("replies repeating a 3-word phrase", "repeated_ngrams", "{:.0%}"),
    ("replies with an assistant phrase", "assistant", "{:.0%}"),
)


def _num(value, fmt: str = "{:.3f}") -> str:
    return "—" if value is None else fmt.format(value)


def _text(messages: list[str]) -> str:
    """A burst on one line of a table or a text block."""
    return " / ".join(m.replace("\n", " ⏎ ").replace("|", "\\|") for m in messages) if messages else "(no reply)"


def model_names(data: dict) -> dict[str, str]:
    prev = data.get("previous_version")
    return {
        "base": "base",
        "previous": f"previous ({prev:04d})" if prev else "previous (none)",
        "current": f"current ({data['version']:04d})",
    }


def comparison_table(data: dict) -> list[str]:
    """Per persona (and all together): held-out loss · perplexity · style distance for each model."""
    names, models = model_names(data), (data.get("loss") or {}).get("models") or {}
    tokens, style = (data.get("loss") or {}).get("tokens") or {}, data.get("style") or {}
    rows = [f"| persona | eval tokens | {' | '.join(names.values())} |", "|---|---:|---:|---:|---:|"]

    def cell(loss, ppl, styled: dict) -> str:
        parts = [_num(loss)] + ([f"ppl {ppl:.1f}"] if ppl else [])
        if styled.get("distance") is not None:
            parts.append(f"style {styled['distance']:.2f}")
        if styled.get("discriminator") is not None:
            parts.append(f"disc {with_interval(styled['discriminator'], styled.get('discriminator_ci'))}")
        return " · ".join(parts)

    overall = data.get("style_overall") or {}
    figures = {m: models.get(m) or {} for m in MODELS}
    cells = [cell(figures[m].get("loss"), figures[m].get("ppl"), overall.get(m) or {}) for m in MODELS]
    rows.append(f"| **all** | {sum(tokens.values()):,} | {' | '.join(cells)} |")
    for p in data.get("personas") or []:
        label = f"{p} (owner)" if p == data.get("owner") else p
        cells = []
        for m in MODELS:
            fig = figures[m]
            styled = (style.get(p) or {}).get("models", {}).get(m) or {}
            per, per_ppl = fig.get("per_persona") or {}, fig.get("per_persona_ppl") or {}
            cells.append(cell(per.get(p), per_ppl.get(p), styled))
        rows.append(f"| {label} | {tokens.get(p, 0):,} | {' | '.join(cells)} |")
    return rows


def loss_section(data: dict) -> list[str]:
    loss = data.get("loss") or {}
    names, models = model_names(data), loss.get("models") or {}
    lines = [
        "## Held-out loss, every persona",
        "",
        f"| persona | eval tokens | {' | '.join(names.values())} |",
        "|---|---:|---:|---:|---:|",
    ]
    for p, n in (loss.get("tokens") or {}).items():
        per = [_num(((models.get(m) or {}).get("per_persona") or {}).get(p)) for m in MODELS]
        lines.append(f"| {p} | {n:,} | {' | '.join(per)} |")
    measured = ", ".join(loss.get("measured") or []) or "none (all from the round's own evaluation)"
    return lines + ["", f"Eval set `{loss.get('eval_set')}`; measured for this report: {measured}.", ""]


def style_section(data: dict) -> list[str]:
    names = model_names(data)
    lines = [
        "## Style of the replies vs the real ones",
        "",
        "Each model answered the same held-out contexts as the persona, through the engine and the bot's "
        "prompt. Style distance: mean of the habit-share differences and the length / burst histogram "
        "distances (0 = the same style). Discriminator accuracy: how often a character n-gram classifier, "
        "cross-validated, tells a generated reply from a real one (0.5 = it cannot tell them apart; dropped "
        "replies left out; — = too few replies to say), with its 95% interval in brackets: figures whose "
        "intervals overlap are not told apart by this many replies.",
        "",
    ]
    for persona, entry in (data.get("style") or {}).items():
        present = [m for m in MODELS if m in entry["models"]]
        script = entry["real"].get("script_name") or "no"
        header = f"| | real | {' | '.join(names[m] for m in present)} |"
        lines += [
            f"### {persona} — {entry['n']} held-out replies ({script} script)",
            "",
            header,
            "|---|" + "---:|" * (len(present) + 1),
        ]
        for label, key, fmt in FEATURES:
            stats = [entry["real"], *(entry["models"][m]["stats"] for m in present)]
            if key is None:
                values = [f"{s['n_replies']} / {s['n_messages']}" for s in stats]
            else:
                values = [_num(s.get(key), fmt) for s in stats]
            lines.append(f"| {label} | {' | '.join(values)} |")
        distances = [_num(entry["models"][m]["distance"], "{:.3f}") for m in present]
        figures = [entry["models"][m] for m in present]
        told = [with_interval(f.get("discriminator"), f.get("discriminator_ci")) for f in figures]
        lines.append(f"| **style distance** | 0 | {' | '.join(distances)} |")
        lines += [f"| **discriminator accuracy** | 0.5 | {' | '.join(told)} |", ""]
        for ex in entry["examples"]:
            lines += ["```text", *(f"{s}: {_text(msgs)}" for s, msgs in ex["context"]), f"→ real: {_text(ex['real'])}"]
            lines += [f"→ {names[m]}: {_text(ex[m])}" for m in present] + ["```", ""]
    return lines


def openers_section(data: dict) -> list[str]:
    names = model_names(data)
    lines = ["## Opener dialogues", "", "The model plays both speakers after the opener, both ways round.", ""]
    seen: list[tuple] = []
    for d in data.get("openers") or []:
        key = (d["first"], d["second"], d["opener"])
        if key not in seen:
            seen.append(key)
    for first, second, opener in seen:
        lines += [f"### {first} → {second}: “{opener}”", ""]
        for d in data["openers"]:
            if (d["first"], d["second"], d["opener"]) == (first, second, opener):
                said = [f"{s}: {_text(m)}" for s, m in d["turns"]]
                lines += [f"**{names[d['model']]}**", "", "```text", *said, "```", ""]
    return lines


def selfplay_line(data: dict) -> list[str]:
    """One line on the round's self-play stage (trainer/selfplay.py), when it ran."""
    sp = data.get("selfplay")
    if not sp:
        return []
    return [
        f"Self-play: {sp['pairs']} pairs ({sp['dropped']} dropped; {sp.get('drafts', 0)} contexts of your edited "
        f"drafts) × {sp['iterations']} iterations, beta "
        f"{sp['beta']}; final DPO loss {_num(sp['loss'])}, reward margin {_num(sp['margin'])}, real reply "
        f"preferred in {_num(sp['accuracy'], '{:.0%}')} of pairs.",
        "",
    ]


def markdown(data: dict, plots: list[str]) -> str:
    title = f"# Evaluation of adapter {data['version']:04d}"
    leak = data["leak"]
    if not leak["ok"]:
        leaked = sorted(set(leak["by_id"]) | set(leak["by_hash"]))
        return "\n".join(
            [
                title,
                "",
                "**FAILED: eval data leaked into training.** The adapter (or one it continued "
                f"from, {leak['lineage']}) was trained on {len(leaked)} of {leak['checked']} eval sessions: "
                "its eval figures mean nothing. Retrain from the base model (`twin train --full`).",
                "",
                f"- by session id: {', '.join(leak['by_id']) or 'none'}",
                f"- by content hash: {', '.join(leak['by_hash']) or 'none'}",
                "",
            ]
        )
    when = dt.datetime.fromtimestamp(data["created_at"]).strftime("%Y-%m-%d %H:%M")
    lines = [
        title,
        "",
        *comparison_table(data),
        "",
        "Cells: held-out loss (nats/token) · perplexity · style distance to the persona's real replies · "
        "discriminator accuracy (how often a classifier tells the generated replies from the real ones; "
        "0.5 = it cannot; its 95% interval in brackets). Lower is better in each, down to 0.5 for the discriminator.",
        "",
        f"Base model `{data['base_model']}`; replies by the {data.get('engine')} engine; {when}. Leak guard "
        f"passed: none of {leak['checked']} eval sessions is in the training data of adapters {leak['lineage']}.",
        "",
    ]
    lines += selfplay_line(data)
    lines += [f"![{name}]({name})" for name in plots] + [""]
    lines += loss_section(data) + style_section(data) + openers_section(data)
    if data.get("notes"):
        lines += ["## Notes", "", *(f"- {n}" for n in data["notes"]), ""]
    return "\n".join(lines)


def write_report(out: Path, data: dict) -> None:
    """report.json, the plots and report.md into `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(out, data)
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    (out / "report.md").write_text(markdown(data, plots))
