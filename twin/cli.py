"""The `twin` command line. Each part owns its commands (`<part>/commands.py`); this module only assembles
them, builds the settings once (in the callback, handed to commands as `ctx.obj`) and turns the errors a
user can fix into one red line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

import typer
from pydantic import ValidationError
from rich.console import Console

from core.errors import UserError
from core.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line
app = typer.Typer(
    name="twin",
    help="Your digital twin on Telegram: collect your chats, fine-tune a model on them, serve it as a bot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Errors whose message already tells the user what to do: shown as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError,)


def friendly_errors(fn: Callable) -> Callable:
    """Turn the errors a user can fix into one red line and exit code 1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        ctx.obj = Settings()  # subcommands' contexts inherit it
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "TWIN_" + str(first["loc"][0]).upper() if first.get("loc") else "a setting"
        console.print(f"[red]error:[/red] {field} in the environment or .env: {first['msg']}")
        raise typer.Exit(2) from None


def _with_friendly_errors(typer_app: typer.Typer) -> None:
    """Every command of the parts (groups' commands too) reports user errors as one line."""
    for info in typer_app.registered_commands:
        info.callback = friendly_errors(info.callback)
    for group in typer_app.registered_groups:
        _with_friendly_errors(group.typer_instance)


def _assemble() -> None:
    """Every part's commands, in the order `twin --help` lists them; `twin train`'s rounds end with
    evaluation's report (the trainer itself knows nothing of evaluation)."""
    from bot import commands as bot
    from collector import commands as collector
    from engine import commands as engine
    from evaluation import commands as evaluation
    from evaluation import round as evaluation_round
    from trainer import commands as trainer

    collector.register(app)
    trainer.register(app, after_round=evaluation_round.report_after_round, child=evaluation_round.MODULE)
    engine.register(app)
    evaluation.register(app)
    bot.register(app)
    _with_friendly_errors(app)


_assemble()


def main() -> None:
    app(prog_name="twin")
