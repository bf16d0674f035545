"""The report at the end of a training round: the same report as `twin eval`, and it never fails the round.

The adapter is already published when it runs, so whatever goes wrong comes back as warnings on the round's
result (a leak loudest of all). Its progress goes out as `report_progress` events (losses, replies, openers),
then its headline figures as a `report` event.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.settings import Settings
from storage import Storage

from .config import EvalConfig
from .leaks import EvalLeak
from .report import evaluate_adapter

log = logging.getLogger(__name__)


def run_sync(coro: Coroutine) -> Any:
    """Run `coro` to the end from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-eval") as pool:
        return pool.submit(asyncio.run, coro).result()


def free_accelerator_memory() -> None:
    """The round's model is gone by now; give its GPU memory back before the engine loads another."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def report_after_round(
    settings: Settings, version: int, on_event: Callable[[dict], None] | None = None, cfg: EvalConfig | None = None
) -> list[str]:
    """Write adapter `version`'s report; returns warnings for the round's result (none when all went well).
    `on_event` hears its `report_progress` events while it runs, then a `report` event with its headline."""
    cfg = cfg or EvalConfig()
    kind = None if cfg.after_round_engine == "settings" else "transformers"
    free_accelerator_memory()
    store = Storage(settings.db_path)
    try:
        report = run_sync(evaluate_adapter(settings, store, version, cfg=cfg, engine_kind=kind, on_event=on_event))
    except EvalLeak as exc:
        log.error("%s", exc)
        return [f"EVAL LEAK: {exc}"]
    except Exception as exc:  # noqa: BLE001 - the adapter is published; a broken report must not undo that
        log.exception("the evaluation report of adapter %d failed", version)
        return [f"the evaluation report of adapter {version} failed: {type(exc).__name__}: {exc}"]
    finally:
        store.close()
    log.info("evaluation report: %s", report.path / "report.md")
    if on_event is not None:
        on_event({"event": "report", "path": str(report.path / "report.md"), **report.headline})
    return []
