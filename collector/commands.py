"""Collector commands: `twin login`, `twin collect`, `twin exclude`, `twin include`."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from core.cli import friendly_errors, settings_of
from core.commands import open_storage
from core.errors import UserError
from storage import Storage
from storage.store import UnknownPersona

out = Console(soft_wrap=True)  # long paths and ids stay on one line (copyable)


@friendly_errors
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

    settings = settings_of(ctx)
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


@friendly_errors
def collect_cmd(
    ctx: typer.Context,
    dialog: str = typer.Option(None, "--dialog", help="Only this dialog: a persona slug or a dialog id."),
    takeout: bool = typer.Option(
        False, "--takeout", help="Use a takeout session (for the first bulk download)."
    ),
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

    settings = settings_of(ctx)
    store = open_storage(settings)

    async def run():
        async with connected_client(settings) as client:
            return await sync(client, store, settings, dialog=dialog, refresh_days=refresh_days,
                              takeout=takeout, progress=out.is_terminal)  # fmt: skip

    summary = asyncio.run(run())
    out.print(summary.describe(), highlight=False)


def _dialog_id(store: Storage, id_or_slug: str) -> int:
    """The dialog to (un)exclude; an id not stored yet becomes a placeholder the sync will skip."""
    try:
        return int(store.dialog_of(id_or_slug)["id"])
    except UnknownPersona:
        if not id_or_slug.lstrip("-").isdigit():
            raise
        store.upsert_dialog({"id": int(id_or_slug), "type": "personal_chat"})
        return int(id_or_slug)


@friendly_errors
def exclude_cmd(
    ctx: typer.Context, dialog: str = typer.Argument(..., help="Persona slug or dialog id.")
) -> None:
    """Stop collecting (and training on) a dialog. Stored messages stay; `twin include` undoes it.

    A dialog id that is not collected yet works too: the dialog is then never fetched.

    Example: twin exclude sasha
    """
    store = open_storage(settings_of(ctx))
    dialog_id = _dialog_id(store, dialog)
    store.set_excluded(dialog_id, True)
    out.print(f"excluded dialog {dialog_id}: `twin collect` skips it, training leaves it out")


@friendly_errors
def include_cmd(
    ctx: typer.Context, dialog: str = typer.Argument(..., help="Persona slug or dialog id.")
) -> None:
    """Collect and train on a dialog again after `twin exclude`; with a user id, after /forget too.

    Example: twin include sasha
    """
    store = open_storage(settings_of(ctx))
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
    app.command("login")(login_cmd)
    app.command("collect")(collect_cmd)
    app.command("exclude")(exclude_cmd)
    app.command("include")(include_cmd)
