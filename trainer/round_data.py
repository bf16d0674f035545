"""A round's data: its plan, the sessions it trains and evaluates on (with the bot's memory when it trains
with it) and their packs. No model: `twin train --dry-run` stops here.

In a data-parallel run only the main process plans (it reads storage); the plan is broadcast to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError
from core.format import ChatFormat
from core.memory import memory_on
from core.settings import Settings
from storage import Storage
from trainer.config import TrainConfig
from trainer.dataset import iter_sessions, session_refs
from trainer.loop import total_steps
from trainer.memory import with_memory
from trainer.packing import pack_examples
from trainer.plan import RoundPlan, plan_round
from trainer.windows import build_examples


@dataclass
class RoundData:
    """What a round trains and evaluates on: its plan, the sessions it chose and their packs."""

    plan: RoundPlan
    chosen: list  # the training sessions (new + replay)
    eval_sessions: list
    eval_examples: list
    packs: list
    steps: int
    counts: dict


def round_memory_tokens(settings: Settings, cfg: TrainConfig) -> int:
    """The memory block's budget in a round's examples (0: the round trains without memory)."""
    return settings.memory_tokens if cfg.memory and memory_on(settings) else 0


def owner_slug(store: Storage, settings: Settings) -> str:
    slug = store.owner_slug(settings.owner_id)
    if slug is None:
        raise UserError('loss_on = "owner" needs to know who you are: set TWIN_OWNER_ID')
    return slug


def shared_plan(store, settings, cfg, acc, train_refs: list, eval_sessions: list, full: bool) -> RoundPlan:
    """The main process plans; in a multi-process run it sends the plan (or why there is none) to all."""
    try:
        plan = None
        if acc.is_main_process:
            plan = plan_round(store, cfg, train_refs, eval_sessions, full, settings)
    except Exception as exc:  # noqa: BLE001 - every process must learn that there is nothing to do
        plan = exc
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        plan = broadcast_object_list([plan])[0]
    if isinstance(plan, Exception):
        raise plan
    return plan


def setup_data(store: Storage, settings: Settings, cfg: TrainConfig, acc, fmt: ChatFormat, full: bool) -> RoundData:
    """Plan the round and turn its sessions into packs (no model yet: `--dry-run` stops here)."""
    train_refs = session_refs(store, settings, "train")  # stored rows: only the chosen are read
    eval_sessions = list(iter_sessions(store, settings, "eval"))
    plan = shared_plan(store, settings, cfg, acc, train_refs, eval_sessions, full)
    chosen = list(iter_sessions(store, settings, "train", ids=set(plan.train_ids)))
    eval_ids = {s.id for s in eval_sessions}
    if leaked := [s.id for s in chosen if s.split != "train" or s.id in eval_ids]:  # not an assert: -O drops those
        raise AssertionError(f"eval session in training data: {leaked[:5]}")
    memory_tokens = round_memory_tokens(settings, cfg)
    if memory_tokens and (owner_id := store.owner_id(settings.owner_id)) is not None:
        chosen = with_memory(store, settings, owner_id, chosen)
        eval_sessions = with_memory(store, settings, owner_id, eval_sessions)
    window = (cfg.max_seq_len, cfg.window_context)
    only = owner_slug(store, settings) if cfg.loss_on == "owner" else None
    examples = list(build_examples(fmt, chosen, *window, only=only, memory_tokens=memory_tokens))
    eval_examples = list(build_examples(fmt, eval_sessions, *window, memory_tokens=memory_tokens))
    packs = pack_examples(examples, cfg.pack_tokens, cfg.seed)
    steps = total_steps(len(packs), cfg, acc.num_processes)
    counts = {
        "new_sessions": len(plan.new_ids),
        "replay_sessions": len(plan.replay_ids),
        "train_sessions": len(chosen),
        "eval_sessions": len(eval_sessions),
        "examples": len(examples),
        "packs": len(packs),
        "steps": steps,
        "tokens": sum(len(e) for e in examples),
        "loss_tokens": sum(p.n_loss for p in packs),
        "dropped_leaks": plan.dropped_leaks,
        "with_memory": sum(bool(s.recalled) for s in chosen),
    }
    return RoundData(plan, chosen, eval_sessions, eval_examples, packs, steps, counts)
