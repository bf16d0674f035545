"""Foundation commands: import, personas, status, dataset export, serve."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.cli import friendly_errors, settings_of
from core.errors import UserError
from core.settings import Settings
from storage import Storage

out = Console(soft_wrap=True)  # long paths and ids stay on one line (copyable)
persona_app = typer.Typer(help="Rename personas.", no_args_is_help=True)
dataset_app = typer.Typer(help="Export training data.", no_args_is_help=True)


# Callbacks keep these groups (typer would collapse a one-command group into the command itself).
@persona_app.callback()
def _persona() -> None:
    """Manage personas: twin persona rename OLD NEW."""


@dataset_app.callback()
def _dataset() -> None:
    """Export training data: twin dataset export OUT.jsonl."""


def open_storage(settings: Settings) -> Storage:
    settings.ensure_data_dir()
    return Storage(settings.db_path)


def _when(unix: str | int | None) -> str:
    if not unix:
        return "never"
    return dt.datetime.fromtimestamp(int(float(unix))).strftime("%Y-%m-%d %H:%M")


@friendly_errors
def import_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Telegram Desktop export: result.json (or the folder holding it)."),
    owner_id: int = typer.Option(None, "--owner-id", help="Your Telegram user id (default TWIN_OWNER_ID)."),
    include_groups: bool = typer.Option(False, "--include-groups", help="Also import group chats."),
    no_stickers: bool = typer.Option(False, "--no-stickers", help="Drop stickers instead of keeping emoji."),
) -> None:
    """Import a Telegram Desktop export (Settings → Advanced → Export Telegram data → JSON).

    Personal chats only unless --include-groups. Importing the same file twice adds nothing.

    Example: twin import ~/Downloads/Telegram\\ Desktop/DataExport_2024-05-01/result.json
    """
    from collector.telegram_export import import_export

    settings = settings_of(ctx)
    store = open_storage(settings)
    summary = import_export(
        store,
        path,
        owner_id=owner_id if owner_id is not None else settings.owner_id,
        include_groups=include_groups,
        keep_stickers=settings.keep_stickers and not no_stickers,
        gap_seconds=settings.session_gap_seconds,
    )
    out.print(summary.describe())


@friendly_errors
def personas_cmd(ctx: typer.Context) -> None:
    """List personas (one per person in your chats) with message and session counts.

    Example: twin personas
    """
    settings = settings_of(ctx)
    store = open_storage(settings)
    owner_id = store.owner_id(settings.owner_id)
    table = Table("persona", "name", "messages", "sessions", "")
    for p in store.personas():
        mark = "owner (default)" if p["id"] == owner_id else ""
        table.add_row(p["slug"], p["name"] or "", str(p["messages"]), str(p["sessions"]), mark)
    out.print(table)


@persona_app.command("rename")
@friendly_errors
def persona_rename(ctx: typer.Context, old: str, new: str) -> None:
    """Rename a persona (the name used by `/persona` in the bot).

    Example: twin persona rename sasha friend2
    """
    store = open_storage(settings_of(ctx))
    store.rename_persona(old, new)
    out.print(f"renamed {old} → {new}")


@friendly_errors
def status_cmd(ctx: typer.Context) -> None:
    """Show what twin knows: people, dialogs, messages, sessions, last import and sync.

    Example: twin status
    """
    settings = settings_of(ctx)
    store = open_storage(settings)
    c, s = store.counts(), store.session_counts(settings.session_gap_seconds)
    table = Table("what", "count", show_header=False)
    table.add_row("people", str(c["people"]))
    table.add_row("dialogs", f"{c['dialogs']} ({c['dialogs_excluded']} excluded)")
    table.add_row("messages", str(c["messages"]))
    table.add_row("sessions", f"{s['closed']} closed, {s['open']} open ({s['eval']} held out for eval)")
    table.add_row("last import", _when(store.get_meta("last_import_at")))
    table.add_row("last sync", _when(store.get_meta("last_sync_at")))
    out.print(table)


@dataset_app.command("export")
@friendly_errors
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
    settings = settings_of(ctx)
    n = export_jsonl(open_storage(settings), settings, out_path, split=split)
    out.print(f"wrote {n} sessions to {out_path}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("personas")(personas_cmd)
    app.command("status")(status_cmd)
    app.add_typer(persona_app, name="persona")
    app.add_typer(dataset_app, name="dataset")
