"""A round as the CLI, `python -m trainer` and the scheduler ask for it: options → one final event.

Every way of starting a round goes through `round_once`, so `twin train`, the bot's subprocess and cron
apply the same rules (`--if-needed`, dry runs, what "nothing to train" means). Events are plain dicts:
`plan`, `step`, `selfplay` (when it runs), `eval`, then one of `done` / `skipped` / `dry_run` (and `error` from
`python -m trainer`).
The report on a new adapter is the caller's `after_round` (evaluation's, passed in by the `twin` CLI and
`python -m evaluation.round`): the trainer itself knows nothing of evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from core.settings import Settings
from engine.base_model import base_model_path
from storage import Storage
from trainer.config import TrainConfig, load_config
from trainer.plan import NothingToTrain, count_new_sessions

# (settings, new adapter's version, on_event) → warnings for the round's result; it must never raise.
AfterRound = Callable[[Settings, int, Callable[[dict], None] | None], list[str]]


@dataclass(frozen=True)
class RoundOptions:
    """What one round is asked to do: built once, by `twin train` from its flags (declared there, with their
    help) or by the bot, and handed as it is to a child process (`python -m trainer`) as JSON."""

    full: bool = False
    max_steps: int | None = None
    dry_run: bool = False
    if_needed: bool = False
    num_processes: int = 1
    strategy: str | None = None  # ddp | fsdp; None: the config's

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RoundOptions:
        return cls(**json.loads(text))

    def config(self, settings: Settings) -> TrainConfig:
        return load_config(settings, max_steps=self.max_steps, strategy=self.strategy)


def training_needed(settings: Settings) -> tuple[bool, int, int]:
    """(needed, new sessions, threshold): at least settings.train_min_new_sessions new closed sessions."""
    store = Storage(settings.db_path)
    try:
        n = count_new_sessions(store, settings)
    finally:
        store.close()
    return n >= settings.train_min_new_sessions, n, settings.train_min_new_sessions


def round_once(
    settings: Settings,
    opts: RoundOptions,
    on_event: Callable[[dict], None] | None = None,
    after_round: AfterRound | None = None,
) -> dict | None:
    """Run (or plan, or skip) one round in this process; returns the final event (None on non-main ranks).
    `after_round` reports on the new adapter, its warnings joining the round's."""
    from trainer.train import dry_run, run_round

    base_model_path(settings)  # converted (a GGUF) or checked once, before any work
    cfg = opts.config(settings)
    if opts.if_needed:
        needed, n, threshold = training_needed(settings)
        if not needed:
            return {"event": "skipped", "reason": f"{n} new closed sessions, fewer than {threshold}", "new_sessions": n}
    try:
        if opts.dry_run:
            return {"event": "dry_run", **dry_run(settings, cfg, opts.full)}
        result = run_round(settings, cfg, opts.full, on_event)
    except NothingToTrain as exc:
        return {"event": "skipped", "reason": str(exc)}
    if result is not None and result.version is not None and after_round is not None:
        result.warnings += after_round(settings, result.version, on_event)
    return result.as_event() if result is not None else None
