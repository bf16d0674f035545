"""What a round trains on and where it starts: new sessions + a replay sample, or everything from scratch.

An incremental round continues the active adapter on the closed train sessions its lineage (it and the
adapters it continued from) has not seen, plus `replay_ratio` earlier sessions per new one. A full round
(`--full`, every `fresh_every`-th round, or when there is no usable active adapter) starts from the base
model on every train session. Eval sessions are never trained on, nor train sessions whose content equals
an eval session's (the same conversation imported twice under another id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from core.paths import artifact_path
from core.settings import Settings
from storage import Storage
from trainer.config import TrainConfig
from trainer.dataset import SessionRef, TrainingSession, session_refs


class NothingToTrain(UserError):
    pass


@dataclass
class RoundPlan:
    full: bool
    parent_version: int | None  # the adapter whose weights the round starts from; None = base model
    parent_path: Path | None
    reason: str  # why full or incremental, for the log and meta.json
    new_ids: list[str] = field(default_factory=list)
    replay_ids: list[str] = field(default_factory=list)
    dropped_leaks: int = 0  # train sessions skipped because an eval session has the same content

    @property
    def train_ids(self) -> set[str]:
        return set(self.new_ids) | set(self.replay_ids)


def lineage(store: Storage, version: int | None) -> list[int]:
    """`version` and the adapters it continued from, newest first."""
    chain: list[int] = []
    while version is not None and version not in chain:
        chain.append(version)
        row = store.adapter(version)
        version = row["parent_version"] if row else None
    return chain


def seen_by(store: Storage, versions: Sequence[int]) -> tuple[set[str], set[str]]:
    """Session ids and content hashes the adapters `versions` were trained on."""
    if not versions:
        return set(), set()
    hashes: set[str] = set()
    for v in versions:
        hashes |= store.trained_content_hashes(v)
    return store.trained_session_ids(versions), hashes


def count_new_sessions(store: Storage, settings: Settings) -> int:
    """Closed train sessions the active adapter's lineage has not seen (cheap: no message is read)."""
    ids, hashes = seen_by(store, lineage(store, (store.active_adapter() or {}).get("version")))
    return sum(1 for r in session_refs(store, settings, "train") if r.id not in ids and r.content_hash not in hashes)


def lora_shape(cfg: TrainConfig) -> dict:
    """What meta.json records of the LoRA shape (a change forces a fresh round)."""
    return {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "target_modules": cfg.target_modules}


def _fresh_reason(store: Storage, cfg: TrainConfig, full: bool, settings: Settings) -> str | None:
    """Why this round must start from the base model, or None if it may continue the active adapter."""
    active = store.active_adapter()
    if full:
        return "--full: retrain from the base model on everything"
    if active is None:
        return "no active adapter yet"
    if not settings.fits_base_model(active["base_model"]):
        return f"the base model changed (adapter {active['version']} was trained on {active['base_model']})"
    folder = artifact_path(active["path"], settings.data_dir)
    if not folder.is_dir():
        return f"adapter {active['version']}'s folder is missing"
    if len(lineage(store, active["version"])) >= cfg.fresh_every:
        return f"every {cfg.fresh_every}th round starts fresh"
    meta = folder / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("lora") != lora_shape(cfg):
        return "the LoRA shape (r, alpha, target modules) changed"
    return None


def plan_round(
    store: Storage,
    cfg: TrainConfig,
    train: Sequence[SessionRef],
    eval_: Sequence[TrainingSession],
    full: bool,
    settings: Settings,
) -> RoundPlan:
    if any(s.split != "train" for s in train):
        raise AssertionError("an eval session was offered for training")
    eval_hashes = {s.content_hash for s in eval_}
    usable = [s for s in train if s.content_hash not in eval_hashes]
    dropped = len(train) - len(usable)
    fresh = _fresh_reason(store, cfg, full, settings)
    if fresh is not None:
        if not usable:
            raise NothingToTrain("no closed train sessions yet: `twin import` or `twin collect` some chats first")
        return RoundPlan(True, None, None, fresh, [s.id for s in usable], [], dropped)
    active = store.active_adapter()
    ids, hashes = seen_by(store, lineage(store, active["version"]))
    new = [s for s in usable if s.id not in ids and s.content_hash not in hashes]
    if not new:
        raise NothingToTrain(
            f"no new closed sessions since adapter {active['version']}: nothing to train "
            "(`twin train --full` retrains on everything)"
        )
    old = [s.id for s in usable if s.id in ids or s.content_hash in hashes]
    rng = random.Random(cfg.seed * 100_003 + store.next_adapter_version())
    replay = rng.sample(old, min(len(old), round(cfg.replay_ratio * len(new))))
    reason = f"incremental from adapter {active['version']}: {len(new)} new + {len(replay)} replayed"
    parent = artifact_path(active["path"], settings.data_dir)
    return RoundPlan(False, active["version"], parent, reason, [s.id for s in new], replay, dropped)
