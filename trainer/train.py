"""One training round, as a recipe: guard → setup → train → evaluate → publish → cleanup.

    round = TrainingRound(settings, cfg, full=False, on_event=print)
    with round.guarded():              # lock, run row; a failure is recorded and leaves everything as it was
        round.setup()                  # format, data (plan, examples, packs), model + LoRA, optimiser: one
                                       # _setup_* each, assigned in setup()
        round.train()
        round.selfplay()               # preference steps: the owner's edited drafts; self-play replies if asked
        evaluation = round.evaluate()  # new adapter, base model (cached), active adapter on the same eval set
        result = round.publish(evaluation, round.gathered_weights())  # adapters/NNNN/, rows, promotion, pruning
    round.cleanup()                    # the storage connection

In a data-parallel run (accelerate, N processes) only the main process touches storage and files: it plans
the round and broadcasts the plan; every process trains on its share of each step; the main one evaluates
and publishes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from core.format import ChatFormat
from core.paths import artifact_path, stored_path
from core.settings import Settings
from engine.base_model import base_model_path
from storage import Storage
from trainer import artifacts
from trainer import evaluate as ev
from trainer import model as tm
from trainer.config import TrainConfig
from trainer.loop import Trainer, make_optimizer
from trainer.memory import memory_meta
from trainer.plan import lora_shape
from trainer.registry import LOCK, decide
from trainer.round_data import RoundData, round_memory_tokens, setup_data
from trainer.round_results import RoundEvaluation, RoundResult
from trainer.selfplay import run_selfplay

log = logging.getLogger(__name__)
Event = Callable[[dict], None]


def train_loss(history: list[dict], last: int = 5) -> float | None:
    """Mean loss of the last few steps: what training ended at (noisy per step, so averaged)."""
    tail = [h["loss"] for h in history[-last:]]
    return round(sum(tail) / len(tail), 5) if tail else None


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    kwargs = {}
    if cfg.strategy == "fsdp" and not torch.cuda.is_available():
        log.warning("FSDP shards over GPUs: on CPU, accelerate runs the processes as DDP")
    elif cfg.strategy == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True)
    return Accelerator(cpu=not torch.cuda.is_available(), **kwargs)


class TrainingRound:
    def __init__(self, settings: Settings, cfg: TrainConfig, full: bool = False, on_event: Event | None = None):
        """No I/O here (as torchtune's recipes): storage, the base model and the accelerator are opened on
        first use, so building a round is cheap and cannot fail half-way."""
        self.settings, self.cfg, self.full, self.on_event = settings, cfg, full, on_event
        self.run_id: int | None = None
        self.warnings: list[str] = []
        self.selfplay_figures: dict | None = None  # what the self-play stage did, when it ran

    @functools.cached_property
    def base_model(self) -> str:
        return base_model_path(self.settings)  # converts a GGUF the first time

    @functools.cached_property
    def acc(self):
        return make_accelerator(self.cfg)

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @functools.cached_property
    def store(self) -> Storage:
        return Storage(self.settings.db_path)

    def _emit(self, event: dict) -> None:
        if self.on_event is not None and self.main:
            self.on_event(event)

    # -- guard ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """One round at a time; a round that raises after it started is recorded failed with its error.
        The lock is released however the round ends (and is stale once its process is gone)."""
        if not self.main:
            yield
            return
        self.store.fail_dead_runs()
        self.store.acquire_lock(LOCK)
        try:
            artifacts.remove_leftovers(self.store, self.settings.adapters_dir)
            try:
                yield
            except BaseException as exc:
                if self.run_id is not None:
                    self.store.finish_run(self.run_id, "failed", f"{type(exc).__name__}: {exc}")
                raise
        finally:
            self.store.release_lock(LOCK)

    # -- setup: each _setup_* builds one part; setup() assigns them -------------------------------------
    def _setup_format(self) -> ChatFormat:
        return ChatFormat(tm.load_tokenizer(self.base_model))

    def _setup_data(self, fmt: ChatFormat) -> RoundData:
        """Plan the round and turn its sessions into packs (trainer/round_data.py)."""
        return setup_data(self.store, self.settings, self.cfg, self.acc, fmt, self.full)

    @property
    def memory_tokens(self) -> int:
        """The memory block's budget in this round's examples (0: the round trains without memory)."""
        return round_memory_tokens(self.settings, self.cfg)

    def _setup_model(self, parent_path: Path | None, dtype: torch.dtype) -> torch.nn.Module:
        """The base model with a LoRA on it (the parent adapter's weights when the round continues one)."""
        torch.manual_seed(self.cfg.seed)
        base = tm.load_base(self.base_model, dtype, self.acc.device)
        return tm.attach_lora(base, self.cfg, parent_path)

    def _setup_optimizer(self, model: torch.nn.Module, steps: int) -> tuple:
        """The optimiser and its learning-rate schedule."""
        return make_optimizer(model, self.cfg, steps)

    def setup(self, data_only: bool = False) -> None:
        """Every part of the round, each built by its _setup_*; `data_only`: the format and the data alone
        (what `--dry-run` shows: no run row, no model)."""
        self.fmt = self._setup_format()
        self.data = self._setup_data(self.fmt)
        plan = self.data.plan
        self._emit(
            {
                "event": "plan",
                "full": plan.full,
                "parent_version": plan.parent_version,
                "reason": plan.reason,
                **self.data.counts,
            }
        )
        if data_only:
            return
        if self.main:
            self.run_id = self.store.start_run(self.data.plan.full)
        self.dtype = tm.pick_dtype(self.acc.device)
        model = self._setup_model(self.data.plan.parent_path, self.dtype)
        optimizer, self.scheduler = self._setup_optimizer(model, self.data.steps)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)

    # -- train ------------------------------------------------------------------------------------------
    def train(self) -> None:
        trainer = Trainer(self.model, self.optimizer, self.scheduler, self.acc, self.cfg)
        self.history = trainer.run(self.data.packs, on_step=lambda e: self._emit({"event": "step", **e}))
        self.peft_model = self.acc.unwrap_model(self.model)

    def selfplay(self) -> None:
        """The preference stage on edited drafts and/or self-play replies, as cfg asks (trainer/selfplay.py)."""
        asked = self.cfg.selfplay_pairs or self.cfg.selfplay_drafts
        self.selfplay_figures = run_selfplay(self, self._emit) if asked else None

    # -- evaluate ---------------------------------------------------------------------------------------
    @property
    def fsdp(self) -> bool:
        return str(self.acc.distributed_type).endswith("FSDP")

    def active_figures(self, active: dict | None, key: str) -> dict | None:
        """The active adapter's eval figures on this eval set: stored ones if the set is the same, else
        measured now (not under FSDP, whose sharded model cannot take a second adapter)."""
        if active is None or not self.data.eval_examples:
            return None
        stored = json.loads(active["eval_json"] or "{}")
        if stored.get("eval_set") == key and stored.get("eval"):
            return stored["eval"]
        if self.fsdp:
            self.warnings.append("FSDP: the active adapter was not re-evaluated on the new eval set")
            return None
        args = (self.data.eval_examples, self.cfg.eval_pack_tokens, self.acc.device)
        return ev.evaluate_adapter_folder(self.peft_model, artifact_path(active["path"], self.settings.data_dir), *args)

    def evaluate(self) -> RoundEvaluation | None:
        """New adapter, base model and active adapter on the eval sessions. The main process alone does it
        (others get None), except under FSDP, where every process holds a shard and all run the same forwards."""
        if not (self.main or self.fsdp):
            return None
        model = self.model if self.fsdp else self.peft_model
        args = (self.data.eval_examples, self.cfg.eval_pack_tokens, self.acc.device)
        key = ev.eval_set_key(
            self.base_model,
            self.data.eval_sessions,
            self.cfg.max_seq_len,
            self.cfg.window_context,
            self.memory_tokens,
        )
        new = ev.evaluate(model, *args)
        base = ev.evaluate_base(self.peft_model, *args, self.store, key, model=model)
        active = self.store.active_adapter()
        if active and not self.settings.fits_base_model(active["base_model"]):
            self.warnings.append(
                f"the active adapter {active['version']} was trained on another base model "
                f"({active['base_model']}): the new one is promoted like a first adapter"
            )
            active = None  # it cannot be loaded onto this base model, nor served with it
        evaluation = RoundEvaluation(key, new, base, active, self.active_figures(active, key))
        self._emit(
            {
                "event": "eval",
                "eval_loss": evaluation.eval_loss,
                "base_eval_loss": evaluation.base_eval_loss,
                "active_eval_loss": evaluation.active_eval_loss,
            }
        )
        return evaluation

    def gathered_weights(self) -> dict | None:
        """Under FSDP, the full LoRA weights, gathered by every process for the main one to save; else None
        (the main process saves its own copy)."""
        return self.acc.get_state_dict(self.model) if self.fsdp else None

    # -- publish ----------------------------------------------------------------------------------------
    def meta(self, version: int, evaluation: RoundEvaluation) -> dict:
        return {
            "version": version,
            "base_model": self.base_model,
            "parent_version": self.data.plan.parent_version,
            "full": self.data.plan.full,
            "reason": self.data.plan.reason,
            "config": self.cfg.model_dump(),
            "memory": memory_meta(self.settings) if self.memory_tokens else None,
            "time_marks": {"zone": self.settings.time_zone} if self.settings.time_marks else None,
            "lora": lora_shape(self.cfg),
            "counts": self.data.counts,
            "processes": self.acc.num_processes,
            "steps": len(self.history),
            "dtype": str(self.dtype).removeprefix("torch."),
            "train_loss": train_loss(self.history),
            "selfplay": self.selfplay_figures,
            "eval": evaluation.meta(),
        }

    def publish(self, evaluation: RoundEvaluation | None, weights: dict | None = None) -> RoundResult | None:
        """Save the adapter (`weights`: gathered_weights()) and record it, promoted or not; the main process
        alone (others return None)."""
        if not self.main or evaluation is None:
            return None
        new_loss, active_loss = evaluation.eval_loss, evaluation.active_eval_loss
        decision = decide(new_loss, active_loss, evaluation.active is not None, self.cfg.promote_tolerance)
        if decision.warning:
            log.debug(decision.warning)
            self.warnings.append(decision.warning)
        version = self.store.next_adapter_version()
        meta = self.meta(version, evaluation)
        path = artifacts.save_adapter(self.peft_model, self.settings.adapters_dir, version, meta, self.history, weights)
        row = {
            "version": version,
            "run_id": self.run_id,
            "parent_version": self.data.plan.parent_version,
            "base_model": self.base_model,
            "path": stored_path(path, self.settings.data_dir),
            "status": "candidate" if decision.promote else "rejected",
            "reason": decision.reason,
            "eval_loss": new_loss,
            "base_eval_loss": meta["eval"]["base_eval_loss"],
            "eval_json": json.dumps(
                {
                    "eval_set": evaluation.eval_set,
                    "eval": evaluation.new,
                    "base": evaluation.base,
                    "train_loss": meta["train_loss"],
                }
            ),
            "n_sessions": len(self.data.chosen),
        }
        # One transaction: the adapter row, what it saw, its promotion and the run's end appear together.
        with self.store.transaction():
            self.store.add_adapter(row, [(s.id, s.content_hash) for s in self.data.chosen])
            if decision.promote:
                self.store.activate_adapter(version, decision.reason)
            self.store.finish_run(
                self.run_id,
                "succeeded",
                adapter_version=version,
                n_sessions=len(self.data.chosen),
                n_tokens=self.data.counts["tokens"],
            )
        pruned, stuck = artifacts.prune_adapters(self.store, self.settings.data_dir, self.cfg.keep_adapters)
        if pruned:
            log.info("pruned adapters %s", pruned)
        self.warnings += stuck
        return RoundResult(
            version,
            decision.promote,
            new_loss,
            meta["eval"]["base_eval_loss"],
            active_loss,
            decision.reason,
            self.warnings,
            self.run_id,
            self.data.counts,
            self.selfplay_figures,
        )

    # -- cleanup ----------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        if "store" in self.__dict__:  # opened
            self.store.close()


def run_round(settings: Settings, cfg: TrainConfig, full: bool = False, on_event: Event | None = None):
    """Run one round; the main process returns its RoundResult (other processes of a DDP run: None)."""
    settings.ensure_data_dir()
    tm.return_freed_memory()
    round_ = TrainingRound(settings, cfg, full, on_event)
    try:
        with round_.guarded():
            round_.setup()
            round_.train()
            round_.selfplay()
            evaluation = round_.evaluate()
            return round_.publish(evaluation, round_.gathered_weights())
    finally:
        round_.cleanup()


def dry_run(settings: Settings, cfg: TrainConfig, full: bool = False) -> dict:
    """What a round would train on (plan and counts), without a model, a lock or a write."""
    round_ = TrainingRound(settings, cfg, full)
    try:
        round_.setup(data_only=True)
        data = round_.data
        return {
            "full": data.plan.full,
            "parent_version": data.plan.parent_version,
            "reason": data.plan.reason,
            **data.counts,
        }
    finally:
        round_.cleanup()
