"""`twin serve`: runs the bot, the engine and the scheduled jobs in one process."""

from __future__ import annotations

import typer


def serve_cmd(ctx: typer.Context) -> None:
    """Start the Telegram bot with the active adapter, plus periodic sync and training. Stops on Ctrl-C or
    SIGTERM after the replies in flight went out.

    Needs TWIN_BOT_TOKEN and TWIN_OWNER_ID; TWIN_BASE_MODEL (default: the embedded SmolLM2-135M) and TWIN_ENGINE
    (vllm | transformers | remote) pick the model and how it is served.

    Example: twin serve
    """
    from bot.serve import run

    if run(ctx.obj):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
