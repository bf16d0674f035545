"""Run a training round in a child process (`python -m trainer`) and follow its JSON progress lines.

The child gets the round's options and the settings from its parent, as JSON in its environment: it runs
exactly the round the parent built (`twin train`'s flags are declared once, in trainer/commands.py).

The bot calls `run_training_subprocess`: a crash or an out-of-memory kills only the child, GPU memory is
returned when it exits, and the bot's event loop keeps serving while it reads the child's progress.
Cancelling the call terminates the child (SIGTERM, then SIGKILL), which records the round as failed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

from core.settings import Settings
from trainer.rounds import RoundOptions

TERMINATE_GRACE_S = 30  # a clean stop only has to record the failure and release the lock
STDERR_TAIL = 40  # lines of the child's log kept to explain a crash

Progress = Callable[[dict], None | Awaitable[None]]


@dataclass
class TrainingOutcome:
    """How the child ended. `status`: done | skipped | dry_run | error."""

    status: str
    returncode: int
    version: int | None = None
    promoted: bool = False
    eval_loss: float | None = None
    error: str | None = None
    final: dict = field(default_factory=dict)  # the last event as the child wrote it
    stderr_tail: str = ""


# The child's settings, as JSON: it builds them from this alone, reading no .env (which holds the bot's secrets).
SETTINGS_VARIABLE = "TWIN_TRAINER_SETTINGS"
# The round's options (RoundOptions.to_json): the child rebuilds the very object its parent built.
OPTIONS_VARIABLE = "TWIN_TRAINER_OPTIONS"


def child_env(settings: Settings, opts: RoundOptions = RoundOptions()) -> dict[str, str]:
    """This process's environment without any TWIN_* variable (the bot token, API hash and session among
    them), plus the parent's settings but its secrets, passed explicitly in SETTINGS_VARIABLE (the round's
    report decodes as the bot does), and the round's options in OPTIONS_VARIABLE. The trainer needs no
    Telegram secret, so it gets none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    values = {
        name: value
        for name, value in settings.model_dump(mode="json", exclude_none=True).items()
        if not isinstance(getattr(settings, name), SecretStr)
    }
    for name in ("data_dir", "models_dir", "train_config"):  # the same folders whatever the child's working directory
        if name in values:
            values[name] = os.path.abspath(values[name])
    env[SETTINGS_VARIABLE] = json.dumps(values)
    env[OPTIONS_VARIABLE] = opts.to_json()
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def trainer_settings() -> Settings:
    """The settings of `python -m trainer`: the ones its parent passed, with no .env and no TWIN_* variable
    read; run by hand (no parent), the usual environment and .env."""
    passed = os.environ.get(SETTINGS_VARIABLE)
    if passed is None:
        return Settings()
    return Settings(_env_file=None, **json.loads(passed))


def trainer_options() -> RoundOptions:
    """The options of `python -m trainer`: the ones its parent passed; run by hand, a default round."""
    passed = os.environ.get(OPTIONS_VARIABLE)
    return RoundOptions() if passed is None else RoundOptions.from_json(passed)


def trainer_command(module: str = "trainer") -> list[str]:
    return [sys.executable, "-m", module]


async def _call(fn: Progress | None, event: dict) -> None:
    if fn is not None:
        result = fn(event)
        if inspect.isawaitable(result):
            await result


def _outcome(final: dict | None, returncode: int, tail: deque) -> TrainingOutcome:
    text = "".join(tail)
    if final is None or final.get("event") not in ("done", "skipped", "dry_run", "error"):
        reason = "killed (out of memory?)" if returncode < 0 else f"exited with code {returncode}"
        return TrainingOutcome("error", returncode, error=f"the trainer {reason} without a result", stderr_tail=text)
    return TrainingOutcome(
        status=final["event"],
        returncode=returncode,
        version=final.get("version"),
        promoted=bool(final.get("promoted")),
        eval_loss=final.get("eval_loss"),
        error=final.get("error"),
        final=final,
        stderr_tail=text,
    )


async def run_training_subprocess(
    settings: Settings,
    opts: RoundOptions = RoundOptions(),
    on_progress: Progress | None = None,
    module: str = "trainer",
) -> TrainingOutcome:
    """Start `python -m trainer` on the round `opts` asks for, pass every JSON event to `on_progress` (sync
    or async), and return the outcome. Never raises for a failed round: the outcome says what happened.
    `module` is the child to run: `evaluation.round` adds the report on the new adapter."""
    proc = await asyncio.create_subprocess_exec(
        *trainer_command(module),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(settings, opts),
        limit=1 << 20,
    )
    tail: deque[str] = deque(maxlen=STDERR_TAIL)

    async def drain_stderr() -> None:
        async for line in proc.stderr:
            tail.append(line.decode(errors="replace"))

    stderr_task = asyncio.create_task(drain_stderr())
    final: dict | None = None
    try:
        async for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                tail.append(raw.decode(errors="replace"))
                continue
            final = event
            await _call(on_progress, event)
        returncode = await proc.wait()
        await stderr_task
    except asyncio.CancelledError:
        await terminate(proc)
        stderr_task.cancel()
        raise
    return _outcome(final, returncode, tail)


async def terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the child records its round failed and frees the lock), SIGKILL if it does not stop."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), TERMINATE_GRACE_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
