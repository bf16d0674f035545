"""`twin serve`: runs the bot, the engine and the scheduled jobs in one process."""

from __future__ import annotations

import typer

from core.cli import friendly_errors, settings_of


@friendly_errors
def serve_cmd(ctx: typer.Context) -> None:
    """Start the Telegram bot with the active adapter, plus periodic sync and training. Stops on Ctrl-C or
    SIGTERM after the replies in flight went out.

    Needs TWIN_BOT_TOKEN, TWIN_OWNER_ID and TWIN_BASE_MODEL; TWIN_ENGINE picks vllm | transformers | remote.

    Example: twin serve
    """
    from bot.serve import run

    if run(settings_of(ctx)):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
