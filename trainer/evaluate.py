"""Eval loss on the held-out sessions, overall and per persona, for an adapter or the base model.

Figures are token-weighted means over the loss tokens of the eval windows (the same mask as training). The
base model's figures depend only on the base model and the eval set, so they are cached in storage under a
key that names both; an adapter's figures carry the same eval-set key, so a later round can tell whether
they are comparable with its own.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence

import torch

from trainer.dataset import TrainingSession
from trainer.loop import token_losses
from trainer.packing import pack_examples
from trainer.windows import Example


def eval_set_key(
    base_model: str, sessions: Sequence[TrainingSession], max_len: int, context: float, memory_tokens: int = 0
) -> str:
    """Names an eval set: the base model, the sessions' ids and contents, the windowing, the memory and the
    time marks."""
    h = hashlib.sha256(
        f"{base_model}|{max_len}|{context}".encode() + (f"|m{memory_tokens}".encode() * bool(memory_tokens))
    )
    for s in sorted(sessions, key=lambda s: s.id):
        h.update(f"|{s.id}:{s.content_hash}".encode())
        if s.recalled and memory_tokens:
            h.update(repr(s.recalled).encode())
        if any(t.time for t in s.turns):  # time marks on: the same session renders otherwise
            h.update(("|t" + "\x1f".join(t.time for t in s.turns)).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def evaluate(model, examples: Sequence[Example], pack_tokens: int, device) -> dict | None:
    """{"loss", "tokens", "per_persona": {slug: loss}} of `model` as it is (adapter on or off); None if
    there is nothing to evaluate."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    by_persona: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for pack in pack_examples(examples, pack_tokens):
        out = token_losses(model, pack, device)
        total += float(out.loss.sum())
        count += out.loss.numel()
        for loss, speaker, ex in zip(out.loss.tolist(), out.speaker.tolist(), out.example.tolist(), strict=True):
            slot = by_persona[pack.examples[ex].personas[speaker]]
            slot[0] += loss
            slot[1] += 1
    model.train(was_training)
    if not count:
        return None
    per_persona = {slug: round(s / n, 5) for slug, (s, n) in sorted(by_persona.items())}
    return {"loss": round(total / count, 5), "tokens": count, "per_persona": per_persona}


def evaluate_base(peft_model, examples, pack_tokens, device, store, key: str, model=None) -> dict | None:
    """The base model's figures (adapter switched off), from the storage cache when the key matches.
    `model` is what to run forwards through when it is not `peft_model` itself (an FSDP wrapper of it)."""
    cache_key = f"base_eval:{key}"
    cached = store.get_meta(cache_key)
    if cached:
        return json.loads(cached)
    with peft_model.disable_adapter():
        figures = evaluate(model if model is not None else peft_model, examples, pack_tokens, device)
    if figures is not None:
        store.set_meta(cache_key, json.dumps(figures))
    return figures


def evaluate_adapter_folder(peft_model, path: str, examples, pack_tokens, device) -> dict | None:
    """Figures of another adapter folder (the active one), loaded beside the trained adapter and removed after."""
    current = peft_model.active_adapter
    peft_model.load_adapter(str(path), adapter_name="compare", is_trainable=False)
    try:
        peft_model.set_adapter("compare")
        return evaluate(peft_model, examples, pack_tokens, device)
    finally:
        peft_model.set_adapter(current)
        peft_model.delete_adapter("compare")
