"""What a round's evaluation measured and what the round ended with (returned, and sent as its `done` event)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def _loss(figures: dict | None) -> float | None:
    return figures["loss"] if figures else None


@dataclass
class RoundEvaluation:
    """The round's eval set and each model's figures on it (None: no eval examples)."""

    eval_set: str  # the eval set's key (evaluate.eval_set_key): figures with the same key are comparable
    new: dict | None  # the adapter this round trained
    base: dict | None  # the base model (cached in storage per eval set)
    active: dict | None  # the active adapter's row; None: there is none, or it fits another base model
    active_figures: dict | None  # the active adapter's figures on this eval set (None: not measured)

    @property
    def eval_loss(self) -> float | None:
        return _loss(self.new)

    @property
    def base_eval_loss(self) -> float | None:
        return _loss(self.base)

    @property
    def active_eval_loss(self) -> float | None:
        return _loss(self.active_figures)

    def meta(self) -> dict:
        """The adapter's meta.json "eval" block."""
        return {
            "eval_set": self.eval_set,
            "eval_loss": self.eval_loss,
            "base_eval_loss": self.base_eval_loss,
            "active_eval_loss": self.active_eval_loss,
            "active_version": self.active["version"] if self.active else None,
            "new": self.new,
            "base": self.base,
            "active": self.active_figures,
        }


@dataclass
class RoundResult:
    version: int | None
    promoted: bool
    eval_loss: float | None
    base_eval_loss: float | None
    active_eval_loss: float | None
    reason: str
    warnings: list[str] = field(default_factory=list)
    run_id: int | None = None
    counts: dict = field(default_factory=dict)
    selfplay: dict | None = None  # the self-play stage's figures (trainer/selfplay.py); None: it did not run

    def as_event(self) -> dict:
        return {"event": "done", **asdict(self)}
