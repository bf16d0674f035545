"""Which adapter is active: the promotion rule, rollback, and the listing `twin adapters` and the bot show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import UserError
from storage import LockHeld, Storage

LOCK = "train"  # the storage lock a training round holds; rollback and forget take it too
ROUND_RUNNING = "A training round is running: wait for it to finish, then roll back"


@dataclass
class Decision:
    promote: bool
    reason: str
    warning: str | None = None


def decide(new_loss: float | None, active_loss: float | None, has_active: bool, tolerance: float) -> Decision:
    """Promote when the new adapter's eval loss is not worse than the active one's on the same eval sessions
    (within `tolerance`, relative). Without eval sessions a first adapter is promoted with a warning; a later
    one is kept rejected, since nothing shows it is not worse."""
    if not has_active:
        if new_loss is None:
            return Decision(
                True,
                "first adapter, promoted without an eval check (no eval sessions)",
                "no eval sessions: promoted without an eval check",
            )
        return Decision(True, f"first adapter (eval loss {new_loss:.4f})")
    if new_loss is None or active_loss is None:
        return Decision(
            False,
            "no eval sessions to compare with the active adapter (`twin rollback VERSION` activates it anyway)",
            "no eval sessions: not promoted",
        )
    limit = active_loss * (1 + tolerance)
    if new_loss <= limit:
        return Decision(True, f"eval loss {new_loss:.4f} <= active {active_loss:.4f} (+{tolerance:.0%})")
    return Decision(False, f"eval loss {new_loss:.4f} worse than active {active_loss:.4f} (+{tolerance:.0%})")


def rollback_target(store: Storage, version: int | None) -> int:
    """`version`, or the adapter that was active before the current one (the newest retired one below it)."""
    if version is not None:
        return version
    active = store.active_adapter()
    below = active["version"] if active else float("inf")
    retired = [a["version"] for a in store.adapters() if a["status"] == "retired" and a["version"] < below]
    if not retired:
        raise UserError("no earlier adapter to roll back to: `twin adapters` lists them")
    return retired[-1]


def rollback(store: Storage, version: int | None = None) -> tuple[int | None, int]:
    """Make `version` (default: the previously active adapter) active; returns (old, new) versions.

    Refused while a round holds the training lock, in any process: its promotion at the end would undo it."""
    try:
        store.acquire_lock(LOCK)
    except LockHeld as exc:
        raise UserError(f"{ROUND_RUNNING} ({exc})") from exc
    try:
        return _activate_earlier(store, version)
    finally:
        store.release_lock(LOCK)


def _activate_earlier(store: Storage, version: int | None) -> tuple[int | None, int]:
    target = rollback_target(store, version)
    row = store.adapter(target)
    if row is None or row["status"] == "deleted":
        raise UserError(f"adapter {target} does not exist or was pruned: `twin adapters` lists them")
    active = store.active_adapter()
    with store.transaction():
        store.activate_adapter(target, reason=f"rolled back from {active['version']}" if active else "rollback")
        if active and active["version"] != target:
            store.set_adapter_status(active["version"], "retired", f"rolled back to {target}")
    return (active["version"] if active else None), target


def adapter_listing(store: Storage) -> list[dict[str, Any]]:
    """Every adapter with its status and figures, oldest first: what `twin adapters` and the bot show."""
    rows = []
    for a in store.adapters():
        figures = json.loads(a["eval_json"]) if a.get("eval_json") else {}
        rows.append(
            {
                "version": a["version"],
                "status": a["status"],
                "created_at": a["created_at"],
                "parent_version": a["parent_version"],
                "eval_loss": a["eval_loss"],
                "base_eval_loss": a["base_eval_loss"],
                "per_persona": (figures.get("eval") or {}).get("per_persona", {}),
                "train_loss": figures.get("train_loss"),
                "n_sessions": a["n_sessions"],
                "reason": a["reason"],
                "path": a["path"],
            }
        )
    return rows
