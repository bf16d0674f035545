"""Adapter folders: `adapters/NNNN/` = peft weights + meta.json + loss.png, written whole or not at all.

A round writes into `adapters/.tmp-NNNN-PID/` and renames it into place only when complete; leftovers of a
crashed round (temp folders of dead processes, numbered folders no storage row knows) are removed by the
next round. Old folders are pruned down to the last `keep` plus the active adapter.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from core.paths import artifact_path
from core.process import pid_alive
from storage import Storage

log = logging.getLogger(__name__)


def adapter_dir(adapters_dir: Path, version: int) -> Path:
    return Path(adapters_dir) / f"{version:04d}"


def plot_loss(history: Sequence[dict], figures: dict, path: Path) -> None:
    """Training loss per step, with the eval losses of the new adapter and the base model as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss")
    for key, style in (("eval_loss", "--"), ("base_eval_loss", ":"), ("active_eval_loss", "-.")):
        if figures.get(key) is not None:
            ax.axhline(figures[key], linestyle=style, color="gray", label=key.replace("_", " "))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_adapter(
    peft_model, adapters_dir: Path, version: int, meta: dict, history: Sequence[dict], state_dict=None
) -> Path:
    """Write the adapter's folder atomically; returns its final path. `state_dict`: gathered full weights
    (FSDP), else the model's own."""
    adapters_dir = Path(adapters_dir)
    adapters_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(adapters_dir, 0o700)  # weights learned from private chats: the owner's alone, like the data dir
    final = adapter_dir(adapters_dir, version)
    if final.exists():
        raise FileExistsError(f"{final} already exists: adapter versions are never overwritten")
    tmp = adapters_dir / f".tmp-{version:04d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        peft_model.save_pretrained(str(tmp), selected_adapters=["default"], state_dict=state_dict)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "history.json").write_text(json.dumps(list(history)))
        plot_loss(history, meta.get("eval", {}), tmp / "loss.png")
        for path in tmp.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        tmp.chmod(0o700)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# What save_adapter names its temp folder: .tmp-{version:04d}-{pid}.
TMP_NAME = re.compile(r"\.tmp-\d+-(?P<pid>\d+)")


def remove_leftovers(store: Storage, adapters_dir: Path) -> list[Path]:
    """Delete temp folders of dead rounds and numbered folders that storage has no row for."""
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        return []
    known = {a["version"] for a in store.adapters()}
    removed = []
    for path in adapters_dir.iterdir():
        name = path.name
        ours = TMP_NAME.fullmatch(name)  # any other name is not a round's: left alone, never parsed
        stale_tmp = ours is not None and not pid_alive(int(ours["pid"]))
        orphan = name.isdigit() and int(name) not in known
        if path.is_dir() and (stale_tmp or orphan):
            log.warning("removing %s left by a crashed round", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_folder(path: Path) -> str | None:
    """Delete the folder `path` with all it holds; None when it is gone (or never was), else why it is not
    (a line naming it, for the user: a folder of weights or quotes left behind is never silently ignored)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} could not be deleted ({exc.strerror or type(exc).__name__}): delete it by hand"
    return None


def prune_adapters(store: Storage, data_dir: Path, keep: int) -> tuple[list[int], list[str]]:
    """Keep the newest `keep` adapter folders and the active one; delete the rest, marking them 'deleted'.
    Returns the versions pruned and a line for each folder that could not be deleted."""
    alive = [a for a in store.adapters() if a["status"] != "deleted"]
    keep_versions = {a["version"] for a in alive[-keep:]} | {a["version"] for a in alive if a["status"] == "active"}
    pruned, stuck = [], []
    for a in alive:
        if a["version"] in keep_versions:
            continue
        if a["path"] and (why := remove_folder(artifact_path(a["path"], data_dir))):
            log.error("pruning adapter %d: %s", a["version"], why)
            stuck.append(why)
        # Deleted even when its folder stays: part of it may be gone, so it is never served again.
        store.set_adapter_status(a["version"], "deleted", f"pruned (keeping the last {keep}); was {a['status']}")
        pruned.append(a["version"])
    return pruned, stuck
