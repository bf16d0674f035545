"""The leak guard: no eval session may be in the training data of the adapter being evaluated.

An eval loss measured on sessions the adapter was trained on is a memory test, not an evaluation (a seed
project reported 0.12 that way). An adapter continued from a parent has seen the parent's data too, so the
whole lineage is checked, by session id and by content hash (the same conversation under another id, e.g.
imported twice). Storage's `trained_sessions` records both for every adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from core.errors import UserError
from storage import Storage
from trainer.dataset import TrainingSession
from trainer.plan import lineage, seen_by

SHOWN = 5  # leaked session ids named in the error; the report lists them all


class EvalLeak(UserError):
    """Eval sessions are in the adapter's training data: its eval figures mean nothing."""


@dataclass
class LeakCheck:
    version: int
    lineage: list[int]
    checked: int  # eval sessions checked
    by_id: list[str] = field(default_factory=list)  # eval session ids trained on
    by_hash: list[str] = field(default_factory=list)  # eval session ids whose content was trained on

    @property
    def ok(self) -> bool:
        return not (self.by_id or self.by_hash)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def message(self) -> str:
        leaked = sorted(set(self.by_id) | set(self.by_hash))
        names = ", ".join(leaked[:SHOWN]) + (f" and {len(leaked) - SHOWN} more" if len(leaked) > SHOWN else "")
        return (
            f"eval data leaked into adapter {self.version}'s training data: {len(leaked)} of {self.checked} eval "
            f"sessions ({len(self.by_id)} by id, {len(self.by_hash)} by content) were trained on by adapters "
            f"{self.lineage} ({names}). Its eval figures are meaningless: retrain from the base model "
            "(`twin train --full`) and do not promote it"
        )


def check_leaks(store: Storage, version: int, eval_sessions: Sequence[TrainingSession]) -> LeakCheck:
    """Which eval sessions adapter `version` (or an adapter it continued from) was trained on."""
    chain = lineage(store, version)
    ids, hashes = seen_by(store, chain)
    return LeakCheck(
        version=version,
        lineage=chain,
        checked=len(eval_sessions),
        by_id=sorted(s.id for s in eval_sessions if s.id in ids),
        by_hash=sorted(s.id for s in eval_sessions if s.content_hash in hashes),
    )
