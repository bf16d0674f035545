"""Evaluation commands: `twin eval`."""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial
from pathlib import Path

import typer
from rich.console import Console

from core.progress import ProgressDisplay, show_report_progress
from core.settings import Settings

from .headline import describe

out = Console(soft_wrap=True)  # long paths and ids stay on one line (copyable)


def eval_cmd(
    ctx: typer.Context,
    adapter: int = typer.Option(None, "--adapter", help="Adapter version (default: the active one)."),
    out_dir: Path = typer.Option(None, "--out", help="Report folder (default: adapters/NNNN/report)."),
) -> None:
    """Write an adapter's evaluation report: held-out loss and perplexity per persona (base model, previous
    adapter, this one), the style of generated replies vs the real ones (style distance, and how often a
    classifier tells them apart), opener dialogues, and a leak guard.

    Writes report.md (opens with the comparison table), report.json and PNG plots; replies come from the
    engine TWIN_ENGINE names, as in the bot, with progress per model and persona on stderr. Fails when eval
    sessions are in the adapter's training data.

    Example: twin eval --adapter 3 --out reports/0003
    """
    from storage import open_storage

    from .report import evaluate_adapter

    settings: Settings = ctx.obj
    if logging.getLogger().level > logging.DEBUG:  # vLLM's start-up log drowns the result
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with ProgressDisplay(Console(stderr=True)) as progress:
        on_event = partial(show_report_progress, progress)
        report = asyncio.run(evaluate_adapter(settings, open_storage(settings), adapter, out_dir, on_event=on_event))
    for note in report.data.get("notes") or []:
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    out.print(f"adapter {report.version}: {describe(report.headline)}", highlight=False)
    out.print(f"report: {report.path / 'report.md'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
