"""Collector commands: what comes in and what is stored: `twin import`, `twin personas`, `twin persona rename`,
`twin status`, `twin login`, `twin collect`, `twin drafts`, `twin exclude`, `twin include`."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.errors import UserError
from core.settings import Settings
from storage import Storage, UnknownPersona, open_storage

out = Console(soft_wrap=True)  # long paths and ids stay on one line (copyable)
persona_app = typer.Typer(help="Rename personas.", no_args_is_help=True)


# A callback keeps the group (typer would collapse a one-command group into the command itself).
@persona_app.callback()
def _persona() -> None:
    """Manage personas: twin persona rename OLD NEW."""


def _when(unix: str | int | None) -> str:
    if not unix:
        return "never"
    return dt.datetime.fromtimestamp(int(float(unix))).strftime("%Y-%m-%d %H:%M")


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

    settings: Settings = ctx.obj
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


def personas_cmd(ctx: typer.Context) -> None:
    """List personas (one per person in your chats) with message and session counts.

    Example: twin personas
    """
    settings: Settings = ctx.obj
    store = open_storage(settings)
    owner_id = store.owner_id(settings.owner_id)
    table = Table("persona", "name", "messages", "sessions", "")
    for p in store.personas():
        mark = "owner (default)" if p["id"] == owner_id else ""
        table.add_row(p["slug"], p["name"] or "", str(p["messages"]), str(p["sessions"]), mark)
    out.print(table)


@persona_app.command("rename")
def persona_rename(ctx: typer.Context, old: str, new: str) -> None:
    """Rename a persona (the name used by `/persona` in the bot).

    Example: twin persona rename sasha friend2
    """
    store = open_storage(ctx.obj)
    store.rename_persona(old, new)
    out.print(f"renamed {old} → {new}")


def status_cmd(ctx: typer.Context) -> None:
    """Show what twin knows: people, dialogs, messages, sessions, last import and sync.

    Example: twin status
    """
    settings: Settings = ctx.obj
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
    from collector.drafts import stats_lines

    out.print("\n".join(stats_lines(store.draft_stats())), highlight=False)


def login_cmd(
    ctx: typer.Context,
    string: bool = typer.Option(
        False,
        "--string",
        help="Print a session string for TWIN_SESSION instead of writing owner.session.",
    ),
) -> None:
    """Log in to Telegram as yourself (phone → code → 2FA password), once, so `twin collect` can sync.

    Needs TWIN_API_ID and TWIN_API_HASH (my.telegram.org → API development tools). The session is saved
    as data_dir/owner.session (mode 0600), or with --string printed once for `.env` as TWIN_SESSION.

    Example: twin login
    """
    from collector.telethon_client import login

    settings: Settings = ctx.obj
    who, session = asyncio.run(
        login(
            settings,
            as_string=string,
            phone=lambda: typer.prompt("Phone number (international format, e.g. +441234567890)"),
            code=lambda: typer.prompt("Login code (Telegram sent it to your app)"),
            password=lambda: typer.prompt("Two-step verification password", hide_input=True),
        )
    )
    out.print(f"logged in as {who}")
    if session:
        out.print("Put this line into .env (it logs in as you: keep it secret, it is shown only once):")
        print(f"TWIN_SESSION={session}")


def collect_cmd(
    ctx: typer.Context,
    dialog: str = typer.Option(None, "--dialog", help="Only this dialog: a persona slug or a dialog id."),
    takeout: bool = typer.Option(False, "--takeout", help="Use a takeout session (for the first bulk download)."),
    refresh_days: int = typer.Option(
        0, "--refresh-days", min=0, help="Re-read the last N days: edits are applied, deletions too."
    ),
) -> None:
    """Pull what is new in your one-to-one chats from Telegram (needs `twin login` once).

    Reads history only for dialogs with messages above what is stored; bots, deleted accounts, Saved
    Messages, Telegram's service account and excluded dialogs are skipped. A long flood wait stops the
    sync with everything fetched so far saved: run it again later.

    Example: twin collect --refresh-days 2
    """
    from collector.telethon_client import connected_client
    from collector.telethon_sync import sync

    settings: Settings = ctx.obj
    store = open_storage(settings)

    async def run():
        async with connected_client(settings) as client:
            return await sync(
                client,
                store,
                settings,
                dialog=dialog,
                refresh_days=refresh_days,
                takeout=takeout,
                progress=out.is_terminal,
            )

    summary = asyncio.run(run())
    out.print(summary.describe(), highlight=False)


def drafts_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each draft instead of saving it in Telegram."),
    stats: bool = typer.Option(False, "--stats", help="Print drafts written, accepted, edited, ignored; then exit."),
) -> None:
    """Write your twin's reply into your own Telegram chats as drafts: you decide what is sent.

    Listens to your one-to-one chats with people (never groups, channels, bots, Saved Messages, excluded or
    forgotten dialogs; TWIN_DRAFTS_FOR chooses whom). When a friend's burst ends, the reply is saved as that
    chat's draft; nothing is sent unless you press send. A draft you are writing is never touched. What you
    send next is recorded beside the draft (accepted, edited, or ignored). Stop with Ctrl-C.

    `twin drafts --stats` prints how you decided; `TWIN_DRAFTS=on twin serve` drafts beside the bot.

    Example: twin drafts --dry-run
    """
    from collector.drafts import stats_lines

    settings: Settings = ctx.obj
    store = open_storage(settings)
    if stats:
        out.print("\n".join(stats_lines(store.draft_stats())), highlight=False)
        return
    asyncio.run(_draft_until_stopped(settings, store, dry_run))


async def _draft_until_stopped(settings: Settings, store: Storage, dry_run: bool) -> None:
    from collector.drafts import run_drafts
    from collector.telethon_client import connected_client
    from engine.build import build_engine, stored_adapters

    engine = build_engine(settings, stored_adapters(store, settings))
    await engine.start()
    try:
        async with connected_client(settings) as client:
            await run_drafts(client, store, settings, engine, dry_run=dry_run, say=out.print)
            out.print("drafting: a friend's finished burst gets a draft in your chat (Ctrl-C stops)")
            await client.run_until_disconnected()
    finally:
        await engine.close()


def _dialog_id(store: Storage, id_or_slug: str) -> int:
    """The dialog to (un)exclude; an id not stored yet becomes a placeholder the sync will skip."""
    try:
        return int(store.dialog_of(id_or_slug)["id"])
    except UnknownPersona:
        if not id_or_slug.lstrip("-").isdigit():
            raise
        store.upsert_dialog({"id": int(id_or_slug), "type": "personal_chat"})
        return int(id_or_slug)


def exclude_cmd(ctx: typer.Context, dialog: str = typer.Argument(..., help="Persona slug or dialog id.")) -> None:
    """Stop collecting (and training on) a dialog. Stored messages stay; `twin include` undoes it.

    A dialog id that is not collected yet works too: the dialog is then never fetched.

    Example: twin exclude sasha
    """
    store = open_storage(ctx.obj)
    dialog_id = _dialog_id(store, dialog)
    store.set_excluded(dialog_id, True)
    out.print(f"excluded dialog {dialog_id}: `twin collect` skips it, training leaves it out")


def include_cmd(ctx: typer.Context, dialog: str = typer.Argument(..., help="Persona slug or dialog id.")) -> None:
    """Collect and train on a dialog again after `twin exclude`; with a user id, after /forget too.

    Example: twin include sasha
    """
    store = open_storage(ctx.obj)
    if dialog.lstrip("-").isdigit() and store.unforget(int(dialog)):
        out.print(f"user {dialog} is no longer forgotten: the next `twin collect` or import brings them back")
        return
    try:
        dialog_id = int(store.dialog_of(dialog)["id"])
    except UnknownPersona:
        raise UserError(f"no dialog {dialog!r} is stored: `twin personas` lists the persona names") from None
    store.set_excluded(dialog_id, False)
    out.print(f"included dialog {dialog_id}: the next `twin collect` syncs it")


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("personas")(personas_cmd)
    app.command("status")(status_cmd)
    app.command("login")(login_cmd)
    app.command("collect")(collect_cmd)
    app.command("drafts")(drafts_cmd)
    app.command("exclude")(exclude_cmd)
    app.command("include")(include_cmd)
    app.add_typer(persona_app, name="persona")
