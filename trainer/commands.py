"""Trainer commands: train, adapters, rollback, forget, dataset export."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from core.errors import UserError
from core.progress import ProgressDisplay, duration, show_report_progress
from core.settings import Settings
from storage import open_storage

if TYPE_CHECKING:
    from trainer.rounds import AfterRound

out = Console(soft_wrap=True)  # long paths and ids stay on one line (copyable)
err = Console(stderr=True, soft_wrap=True)
dataset_app = typer.Typer(help="Export training data.", no_args_is_help=True)


# A callback keeps the group (typer would collapse a one-command group into the command itself).
@dataset_app.callback()
def _dataset() -> None:
    """Export training data: twin dataset export OUT.jsonl."""


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


class RoundProgress:
    """Draws a round's events on stderr: the plan, every step (loss, tokens/s, ETA; a bar on a terminal), the
    eval figures, then the report's progress per model and persona."""

    def __init__(self, display: ProgressDisplay):
        self.display = display
        self.step_seconds: list[float] = []

    def __call__(self, event: dict) -> None:
        if show_report_progress(self.display, event):
            return
        kind = event.get("event")
        if kind == "plan":
            err.print(
                f"plan: {event['reason']}; {event['train_sessions']} sessions, {event['tokens']:,} tokens, "
                f"{event['eval_sessions']} eval sessions, {event['steps']} steps",
                highlight=False,
            )
        elif kind == "step":
            self.step(event)
        elif kind == "selfplay":
            what = "generating own replies" if event["phase"] == "generate" else "preference steps"
            self.display.update(
                f"selfplay {event['iteration']} {event['phase']}",
                f"self-play {event['iteration']}: {what}",
                event["done"],
                event["of"],
            )
        elif kind == "eval":
            err.print(
                f"eval loss {_fmt(event['eval_loss'])} (base {_fmt(event['base_eval_loss'])}, "
                f"active {_fmt(event['active_eval_loss'])})",
                highlight=False,
            )

    def step(self, event: dict) -> None:
        if event.get("tokens_per_s"):
            self.step_seconds.append(event["tokens"] / event["tokens_per_s"])
        eta = (
            sum(self.step_seconds) / len(self.step_seconds) * (event["of"] - event["step"])
            if self.step_seconds
            else None
        )
        if self.display.console.is_terminal:
            self.display.update("train", f"training, loss {event['loss']:.4f}", event["step"], event["of"])
            return
        speed = f", {event['tokens_per_s']:,.0f} tok/s" if event.get("tokens_per_s") else ""
        left = f", eta {duration(eta)}" if eta is not None and event["step"] < event["of"] else ""
        err.print(f"step {event['step']}/{event['of']} loss {event['loss']:.4f}{speed}{left}", highlight=False)


def _report(final: dict | None) -> None:
    if final is None:
        return
    kind = final.get("event")
    if kind == "skipped":
        out.print(f"nothing to train: {final['reason']}")
    elif kind == "dry_run":
        out.print("dry run (nothing trained or written):")
        for key, value in final.items():
            if key != "event":
                out.print(f"  {key}: {value}", highlight=False)
    elif kind == "error":
        raise_user(final.get("error") or "the training round failed")
    elif kind == "done":
        for warning in final.get("warnings") or []:
            err.print(f"[yellow]warning:[/yellow] {warning}")
        state = "active" if final["promoted"] else "rejected"
        out.print(
            f"adapter {final['version']} ({state}): eval loss {_fmt(final['eval_loss'])}, base "
            f"{_fmt(final['base_eval_loss'])}, previous {_fmt(final['active_eval_loss'])}; {final['reason']}",
            highlight=False,
        )


def raise_user(message: str):
    raise UserError(message)


def train_command(after_round: AfterRound | None = None, child: str = "trainer") -> Callable[..., None]:
    """`twin train`: its in-process rounds end with `after_round`, its rounds on several processes run as
    `python -m <child>` (the `twin` CLI passes evaluation's report and `evaluation.round`)."""

    def train_cmd(
        ctx: typer.Context,
        full: bool = typer.Option(False, "--full", help="Retrain from the base model on every session."),
        max_steps: int = typer.Option(None, "--max-steps", help="Stop after N optimiser steps."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be trained; train nothing."),
        if_needed: bool = typer.Option(False, "--if-needed", help="Only if enough new sessions wait (for cron)."),
        num_processes: int = typer.Option(1, "--num-processes", help="Data-parallel processes (accelerate DDP)."),
        strategy: str = typer.Option(None, "--strategy", help="ddp (default) or fsdp for models too big for one GPU."),
        show_config: bool = typer.Option(False, "--show-config", help="Print every training knob and its why."),
    ) -> None:
        """Train one LoRA round on new closed sessions (plus a replay sample) and print the new adapter's version.

        The adapter becomes active if its eval loss is not worse than the active one's. One round at a time.

        Example: twin train --if-needed
        """
        from trainer.rounds import RoundOptions, round_once

        settings: Settings = ctx.obj
        opts = RoundOptions(full, max_steps, dry_run, if_needed, num_processes, strategy)
        if show_config:
            table = Table("knob", "value", "why")
            for name, value, why in opts.config(settings).whys():
                table.add_row(name, str(value), why)
            out.print(table)
            return
        settings.ensure_data_dir()
        with ProgressDisplay(err) as display:
            progress = RoundProgress(display)
            if num_processes > 1 and not dry_run:
                from trainer.runner import run_training_subprocess

                final = asyncio.run(run_training_subprocess(settings, opts, progress, child)).final or None
            else:
                final = round_once(settings, opts, progress, after_round)
        _report(final)

    return train_cmd


def adapters_cmd(
    ctx: typer.Context,
    personas: bool = typer.Option(False, "--personas", help="Also show eval loss per persona."),
) -> None:
    """List adapter versions with status, eval loss (vs the base model) and why they were kept or rejected.

    Example: twin adapters --personas
    """
    from trainer.registry import adapter_listing

    store = open_storage(ctx.obj)
    store.fail_dead_runs()
    columns = ["version", "status", "created", "from", "sessions", "eval loss", "base", "train loss", "reason"]
    table = Table(*columns, *(["per persona"] if personas else []))
    for a in adapter_listing(store):
        when = dt.datetime.fromtimestamp(a["created_at"]).strftime("%Y-%m-%d %H:%M")
        eval_loss = _fmt(a["eval_loss"]) if a["eval_loss"] is not None else "- (no eval sessions)"
        row = [
            str(a["version"]),
            a["status"],
            when,
            str(a["parent_version"] or "base"),
            str(a["n_sessions"]),
            eval_loss,
            _fmt(a["base_eval_loss"]),
            _fmt(a["train_loss"]),
            a["reason"] or "",
        ]
        if personas:
            row.append(", ".join(f"{k} {v:.3f}" for k, v in a["per_persona"].items()))
        table.add_row(*row)
    out.print(table)


def rollback_cmd(
    ctx: typer.Context,
    version: int = typer.Argument(None, help="Adapter to activate (default: the previously active one)."),
) -> None:
    """Make an earlier adapter active again (the bot picks it up on its next reply).

    Example: twin rollback 3
    """
    from trainer.registry import rollback

    old, new = rollback(open_storage(ctx.obj), version)
    out.print(f"active adapter: {new} (was {old if old is not None else 'none'})")


def forget_cmd(
    ctx: typer.Context,
    person: str = typer.Argument(..., help="Persona slug or Telegram user id (`twin personas` lists them)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete everything of a person: their messages and sessions, their chats with the bot, their access,
    and every adapter trained on them. They are never collected or imported again (`twin include ID` lifts
    that). Retrain afterwards with `twin train --full`.

    Example: twin forget sasha
    """
    from trainer.forgetting import ForgetIncomplete, forget_person

    settings: Settings = ctx.obj
    store = open_storage(settings)
    preview = store.forget_preview(person)
    adapters = f" and adapters {', '.join(map(str, preview.trained_on))}" if preview.trained_on else ""
    question = f"Forget {preview.slug}: {preview.messages} messages in {preview.sessions} sessions{adapters}?"
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    incomplete: ForgetIncomplete | None = None
    try:
        report = forget_person(store, settings, preview.person_id)
    except ForgetIncomplete as exc:  # what was done is said first, then the error (exit code 1)
        report, incomplete = exc.report, exc
    out.print(
        f"forgot {report.slug}: {report.messages} messages, {report.sessions} sessions"
        + (f", adapters {', '.join(map(str, report.trained_on))} deleted" if report.trained_on else ""),
        highlight=False,
    )
    if report.was_active is not None:
        now = f"adapter {report.now_active}" if report.now_active else "the base model (no adapter)"
        out.print(f"the active adapter {report.was_active} was trained on them: {now} is active now")
    out.print("retrain without them: twin train --full")
    if incomplete is not None:
        raise incomplete


@dataset_app.command("export")
def dataset_export(
    ctx: typer.Context,
    out_path: Path = typer.Argument(..., metavar="OUT.jsonl", help="Where to write the JSONL file."),
    split: str = typer.Option("train", "--split", help="train | eval | all"),
) -> None:
    """Write closed sessions as a chat dataset (scrubbed), one JSON object per line.

    Each line: {"session_id", "dialog_id", "messages": [{"role", "name", "content"}]}; your turns are
    "assistant", everyone else's "user". Loads in TRL, LLaMA-Factory and axolotl.

    Example: twin dataset export sessions.jsonl --split all
    """
    from trainer.dataset import export_jsonl

    if split not in ("train", "eval", "all"):
        raise UserError(f"--split must be train, eval or all, not {split!r}")
    settings: Settings = ctx.obj
    n = export_jsonl(open_storage(settings), settings, out_path, split=split)
    out.print(f"wrote {n} sessions to {out_path}")


def register(app: typer.Typer, after_round: AfterRound | None = None, child: str = "trainer") -> None:
    """Add the trainer's commands; `twin train` reports on new adapters with `after_round` (see train_command)."""
    app.command("train")(train_command(after_round, child))
    app.command("adapters")(adapters_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("forget")(forget_cmd)
    app.add_typer(dataset_app, name="dataset")
