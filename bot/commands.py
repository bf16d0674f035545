"""`twin serve`: runs the bot, the engine and the scheduled jobs."""

from __future__ import annotations

import typer

from core.cli import friendly_errors, settings_of
from core.errors import UserError


@friendly_errors
def serve_cmd(ctx: typer.Context) -> None:
    """Start the Telegram bot with the latest promoted adapter, plus periodic sync and training.

    Example: twin serve
    """
    settings = settings_of(ctx)
    settings.require("bot_token")
    raise UserError("the bot is not built yet in this version of twin: use `twin import` and `twin status`")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
