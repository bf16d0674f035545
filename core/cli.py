"""The `twin` command line. Each part registers its own commands; this module wires them together.

Settings are built once here (in the callback) and passed to commands through the typer context.
"""

from __future__ import annotations

import logging
import sys
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


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


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
        ctx.obj = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "TWIN_" + str(first["loc"][0]).upper() if first.get("loc") else "a setting"
        console.print(f"[red]error:[/red] {field} in the environment or .env: {first['msg']}")
        raise typer.Exit(2) from None


def _register_parts() -> None:
    from core import commands as core_commands

    core_commands.register(app)
    for module in ("collector.commands", "trainer.commands", "engine.commands", "evaluation.commands", "bot.commands"):
        try:
            part = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        part.register(app)


_register_parts()


def main() -> None:
    app(prog_name="twin")


if __name__ == "__main__":
    sys.exit(main())
