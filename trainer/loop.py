"""The training loop: packs → optimiser steps, data-parallel through accelerate.

Each optimiser step consumes `grad_accum × processes` packs; process r takes every r-th of them. The loss is
the sum of token losses divided by the step's loss tokens over all processes, so a step weighs every token
the same however the packs fell. A step short of packs gives some processes a zero-weight copy, so every
process runs the same number of backward passes (DDP requires it); a single process never needs one.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.config import LOSS_CHUNK_TOKENS, TrainConfig
from trainer.packing import IGNORE, Pack, collate


@dataclass
class TokenLosses:
    loss: torch.Tensor  # per target token, fp32
    speaker: torch.Tensor  # turn index (into the example's personas) of each target token
    example: torch.Tensor  # index into pack.examples of each target token


def token_losses(model, pack: Pack, device: torch.device, chunk: int = LOSS_CHUNK_TOKENS) -> TokenLosses:
    """Forward one pack; the loss of every target token. Logits are computed only where a token is learned,
    and, with `chunk`, `chunk` target tokens at a time: each chunk's logits are dropped after its loss and
    recomputed in the backward pass, so a pack's full logits never exist at once (same loss, far less peak
    memory, one extra vocabulary projection)."""
    batch = {k: v.to(device) for k, v in collate(pack).items()}
    labels = batch.pop("labels")[0]
    keep = (labels[1:] != IGNORE).nonzero().squeeze(1)
    targets = labels[1:][keep]
    head = output_head(model) if chunk else None
    if head is None:
        out = model(**batch, use_cache=False, logits_to_keep=keep)
        loss = F.cross_entropy(out.logits[0].float(), targets, reduction="none")
    else:
        norm, weight = head
        with captured_output(norm) as hidden:
            model(**batch, use_cache=False, logits_to_keep=1)  # the full model runs; one position's logits
        loss = chunked_cross_entropy(hidden[0][0][keep], weight, targets, chunk)
    speakers = torch.tensor([s for e in pack.examples for s in e.speaker], device=device)
    owners = torch.repeat_interleave(
        torch.arange(len(pack.examples), device=device), torch.tensor([len(e) for e in pack.examples], device=device)
    )
    return TokenLosses(loss, speakers[1:][keep], owners[1:][keep])


def output_head(model) -> tuple[torch.nn.Module, torch.Tensor] | None:
    """(the decoder's final norm, the output projection's weight) of a causal LM (under peft and DDP
    wrappers too), or None where the logits are more than `norm(h) @ W.T` (a bias, soft-capping)."""
    inner = getattr(model, "module", model)  # DDP / FSDP wrapper
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    norm = getattr(decoder, "norm", None)
    plain = isinstance(head, torch.nn.Linear) and head.bias is None and not getattr(head, "base_layer", None)
    if norm is None or not plain or getattr(inner.config, "final_logit_softcapping", None):
        return None
    return norm, head.weight


@contextlib.contextmanager
def captured_output(module: torch.nn.Module):
    """Yields a list that holds `module`'s output once the forward inside the block has run."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        yield seen
    finally:
        handle.remove()


def _logits_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((hidden @ weight.T).float(), targets, reduction="none")


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Per-token cross-entropy of `hidden @ weight.T` against `targets`, `chunk` rows at a time; with
    gradients, each chunk is checkpointed (its logits recomputed in backward instead of kept)."""
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled() and hidden.requires_grad
    parts = []
    for i in range(0, len(targets), chunk):
        args = (hidden[i : i + chunk], weight, targets[i : i + chunk])
        parts.append(checkpoint(_logits_loss, *args, use_reentrant=False) if grad else _logits_loss(*args))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def step_groups(packs: Sequence[Pack], per_step: int, seed: int, processes: int = 1) -> list[list[Pack | None]]:
    """Packs shuffled by `seed`, cut into steps of `per_step`. A short last step is filled with None up to a
    multiple of `processes`, so every process runs as many micro-batches as the others."""
    order = list(packs)
    random.Random(seed).shuffle(order)
    groups = [order[i : i + per_step] for i in range(0, len(order), per_step)]
    if groups:
        groups[-1] += [None] * (-len(groups[-1]) % processes)
    return groups


def total_steps(n_packs: int, cfg: TrainConfig, processes: int) -> int:
    steps = cfg.epochs * math.ceil(n_packs / (cfg.grad_accum * processes))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


@dataclass
class Trainer:
    """Holds what a step needs; `run` trains and returns one log entry per step."""

    model: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    accelerator: object
    cfg: TrainConfig

    def _micro(self, pack: Pack, weight: float) -> float:
        acc = self.accelerator
        losses = token_losses(self.model, pack, acc.device, self.cfg.loss_chunk_tokens).loss
        acc.backward(losses.sum() * weight)
        return float(losses.detach().sum()) if weight else 0.0

    def step(self, group: list[Pack | None]) -> dict:
        acc, world = self.accelerator, self.accelerator.num_processes
        real = [p for p in group if p is not None]
        n_global = max(1, sum(p.n_loss for p in real))
        mine = group[acc.process_index :: world]
        # DDP averages gradients over processes; scaling by `world` turns that average into a sum.
        scale = world / n_global
        loss_sum, t0 = 0.0, time.perf_counter()
        for i, pack in enumerate(mine):
            sync = i == len(mine) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                loss_sum += self._micro(pack or real[0], scale if pack is not None else 0.0)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = float(acc.reduce(torch.tensor([loss_sum], device=acc.device), "sum")[0])
        seconds = time.perf_counter() - t0
        tokens = sum(p.n_tokens for p in real)
        fed = sum((p or real[0]).n_tokens for p in group)  # zero-weight fillers are fed but not real
        return {
            "loss": loss_sum / n_global,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens": tokens,
            "real_share": tokens / fed,
            "tokens_per_s": tokens / seconds if seconds else None,
        }

    def run(self, packs: Sequence[Pack], on_step: Callable[[dict], None] | None = None) -> list[dict]:
        world = self.accelerator.num_processes
        steps = total_steps(len(packs), self.cfg, world)
        history: list[dict] = []
        self.model.train()
        for epoch in range(self.cfg.epochs):
            for group in step_groups(packs, self.cfg.grad_accum * world, self.cfg.seed + epoch, world):
                if len(history) >= steps:
                    return history
                entry = {"step": len(history) + 1, "of": steps, "epoch": epoch + 1, **self.step(group)}
                history.append(entry)
                if on_step:
                    on_step(entry)
        return history


def make_optimizer(model, cfg: TrainConfig, steps: int):
    """AdamW over the trainable (LoRA) parameters, with the configured warmup + schedule."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * steps)
    scheduler = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    return optimizer, scheduler
