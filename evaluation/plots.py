"""The report's PNG plots: a summary (loss, style distance, question share per persona) and message lengths."""

from __future__ import annotations

import math
from pathlib import Path

from .losses import MODELS
from .style import LENGTH_LABELS

COLORS = {"real": "#4c4c4c", "base": "#c44e52", "previous": "#dd8452", "current": "#4c72b0"}


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _grouped(ax, groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> None:
    """Bars of each series side by side for every group (a missing value leaves a gap)."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [_nan(v) for v in values], width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def _models(data: dict) -> list[str]:
    models = (data.get("loss") or {}).get("models") or {}
    styled = {m for e in (data.get("style") or {}).values() for m in e["models"]}
    return [m for m in MODELS if models.get(m) or m in styled]


def _loss(figures: dict | None, persona: str) -> float | None:
    figures = figures or {}
    return figures.get("loss") if persona == "all" else (figures.get("per_persona") or {}).get(persona)


def _styled(style: dict, persona: str, model: str) -> dict:
    return ((style.get(persona) or {}).get("models", {}).get(model)) or {}


def summary_plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    personas, models = data.get("personas") or [], _models(data)
    losses = (data.get("loss") or {}).get("models") or {}
    style = data.get("style") or {}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    groups = ["all", *personas]
    loss = {m: [_loss(losses.get(m), p) for p in groups] for m in models}
    _grouped(axes[0], groups, loss, "held-out loss", "nats/token")
    dist = {m: [_styled(style, p, m).get("distance") for p in personas] for m in models}
    _grouped(axes[1], personas, dist, "style distance to real replies", "0 = same style")
    questions = {"real": [(style.get(p) or {}).get("real", {}).get("question") for p in personas]}
    questions |= {m: [_styled(style, p, m).get("stats", {}).get("question") for p in personas] for m in models}
    _grouped(axes[2], personas, questions, "replies ending in a question", "share")
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(0, 1)
    axes[2].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"adapter {data['version']:04d}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lengths_plot(data: dict, path: Path) -> None:
    """Message-length histograms per persona: the real replies against each model's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = data.get("style") or {}
    personas = [p for p in data.get("personas") or [] if p in style]
    fig, axes = plt.subplots(1, max(1, len(personas)), figsize=(4 * max(1, len(personas)), 3.6), squeeze=False)
    for ax, persona in zip(axes[0], personas, strict=False):
        entry = style[persona]
        series = {"real": entry["real"]["length_bins"]}
        series |= {m: entry["models"][m]["stats"]["length_bins"] for m in MODELS if m in entry["models"]}
        _grouped(ax, list(LENGTH_LABELS), series, f"{persona}: message length", "share of messages")
        ax.set_xlabel("characters")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_plots(out: Path, data: dict) -> list[str]:
    """Write the plots into `out`; returns their file names (none without figures to plot)."""
    if data.get("status") != "ok":
        return []
    summary_plot(data, out / "summary.png")
    names = ["summary.png"]
    if data.get("style"):
        lengths_plot(data, out / "lengths.png")
        names.append("lengths.png")
    return names
