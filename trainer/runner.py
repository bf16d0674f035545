"""Run a training round in a child process (`python -m trainer`) and follow its JSON progress lines.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from core.settings import Settings

# The settings a trainer child needs; secrets (bot token, API hash) are not passed on.
CHILD_SETTINGS = (
    "data_dir", "owner_id", "base_model", "models_dir", "scrub_words", "session_gap_minutes", "keep_stickers",
    "train_config", "train_min_new_sessions",
)  # fmt: skip
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


SECRET_VARIABLES = frozenset({"TWIN_BOT_TOKEN", "TWIN_API_HASH", "TWIN_SESSION"})


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the trainer's settings as TWIN_* variables (the child's Settings())."""
    # The trainer needs no Telegram secrets: keep the bot token, API hash and session out of its environment.
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    for name in CHILD_SETTINGS:
        key, value = f"TWIN_{name.upper()}", getattr(settings, name, None)
        if value is None:
            env.pop(key, None)
        elif isinstance(value, list | dict):
            env[key] = json.dumps(value)
        elif name in ("data_dir", "models_dir", "train_config"):
            env[key] = str(os.path.abspath(value))
        else:
            env[key] = str(value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def trainer_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


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
    settings: Settings, args: Sequence[str] = ("train",), on_progress: Progress | None = None
) -> TrainingOutcome:
    """Start `python -m trainer *args`, pass every JSON event to `on_progress` (sync or async), and return
    the outcome. Never raises for a failed round: the outcome says what happened."""
    proc = await asyncio.create_subprocess_exec(
        *trainer_command(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(settings),
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
