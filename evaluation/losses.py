"""Held-out loss and perplexity of the base model, the previous adapter and this one, per persona.

The figures are the trainer's own (trainer/evaluate.py: token-weighted loss over the eval windows, with the
training loss mask), so a report and a round always agree. A round stores them under an eval-set key (base
model + eval sessions + windowing); they are reused when the key still matches and measured again otherwise
(new eval sessions since, or an adapter evaluated long after its round). The base model's figures come from
the trainer's cache.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.format import ChatFormat
from storage import Storage
from trainer import evaluate as ev
from trainer.config import TrainConfig
from trainer.dataset import TrainingSession
from trainer.windows import Example, build_examples

log = logging.getLogger(__name__)
MODELS = ("base", "previous", "current")


@dataclass
class AdapterInfo:
    """An adapter as the report sees it: its storage row, folder and meta.json (empty when pruned)."""

    version: int
    row: dict
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def on_disk(self) -> bool:
        return (self.path / "adapter_config.json").exists()

    @property
    def stored(self) -> dict:
        return json.loads(self.row.get("eval_json") or "{}")


def window_config(meta: dict) -> TrainConfig:
    """The windowing and eval packing the adapter was trained with (defaults for knobs it did not record)."""
    known = {k: v for k, v in (meta.get("config") or {}).items() if k in TrainConfig.model_fields}
    try:
        return TrainConfig(**known)
    except ValueError:  # a knob recorded by an older trainer no longer validates: the defaults do
        return TrainConfig()


def ppl(loss: float | None) -> float | None:
    """Perplexity of a mean loss in nats per token."""
    return round(math.exp(loss), 3) if loss is not None and loss < 50 else None


def with_ppl(figures: dict | None) -> dict | None:
    if not figures:
        return None
    per = figures.get("per_persona") or {}
    return {**figures, "ppl": ppl(figures.get("loss")), "per_persona_ppl": {p: ppl(v) for p, v in per.items()}}


def persona_tokens(examples: Sequence[Example]) -> dict[str, int]:
    """Loss tokens per persona in the eval windows (what each persona's eval loss is averaged over)."""
    counts: Counter[str] = Counter()
    for ex in examples:
        # A window's first token is never a target (tokens are predicted from the one before).
        for keep, speaker in zip(ex.loss[1:], ex.speaker[1:], strict=True):
            if keep:
                counts[ex.personas[speaker]] += 1
    return dict(counts.most_common())


def stored_losses(current: AdapterInfo, previous: AdapterInfo | None, key: str, store: Storage) -> dict:
    """The figures a round already measured on this eval set (a model name is missing when it did not)."""
    found: dict[str, dict] = {}
    stored = current.stored
    if stored.get("eval_set") == key:
        found.update({k: v for k, v in (("current", stored.get("eval")), ("base", stored.get("base"))) if v})
    if "base" not in found and (cached := store.get_meta(f"base_eval:{key}")):
        found["base"] = json.loads(cached)
    if previous is not None:
        meta_eval = current.meta.get("eval") or {}
        if previous.stored.get("eval_set") == key and previous.stored.get("eval"):
            found["previous"] = previous.stored["eval"]
        elif meta_eval.get("eval_set") == key and meta_eval.get("active_version") == previous.version:
            if meta_eval.get("active"):
                found["previous"] = meta_eval["active"]
    return found


# on_measured(model, done, of): 0 of 1 for each model in `need` before the base model loads, 1 of 1 as each ends.
Measured = Callable[[str, int, int], None]


def measure(
    base_model: str,
    examples: Sequence[Example],
    pack_tokens: int,
    current: AdapterInfo,
    previous: AdapterInfo | None,
    need: set[str],
    store: Storage,
    key: str,
    on_measured: Measured,
) -> dict:
    """Run the trainer's evaluation for the models in `need` (base model loaded once, adapters on top)."""
    import torch
    from peft import PeftModel

    from trainer import model as tm

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = tm.load_base(base_model, tm.pick_dtype(device), device)
    model = PeftModel.from_pretrained(base, str(current.path), adapter_name="default").eval()
    out = {}
    if "current" in need:
        out["current"] = ev.evaluate(model, examples, pack_tokens, device)
        on_measured("current", 1, 1)
    if "base" in need:
        out["base"] = ev.evaluate_base(model, examples, pack_tokens, device, store, key)
        on_measured("base", 1, 1)
    if "previous" in need and previous is not None and previous.on_disk:
        out["previous"] = ev.evaluate_adapter_folder(model, previous.path, examples, pack_tokens, device)
    if "previous" in need:
        on_measured("previous", 1, 1)  # a pruned previous adapter is done too: it has no loss to measure
    return out


def held_out_losses(
    store: Storage,
    fmt: ChatFormat,
    base_model: str,
    sessions: Sequence[TrainingSession],
    current: AdapterInfo,
    previous: AdapterInfo | None,
    on_measured: Measured = lambda model, done, of: None,
) -> dict:
    """{"eval_set", "tokens" per persona, "models": {base, previous, current: figures + ppl}, "measured"}.
    `on_measured` hears of each model measured here (the figures a round stored are not measured again)."""
    cfg = window_config(current.meta)
    memory_tokens = (current.meta.get("memory") or {}).get("memory_tokens", 0)
    examples = list(build_examples(fmt, sessions, cfg.max_seq_len, cfg.window_context, memory_tokens=memory_tokens))
    key = ev.eval_set_key(base_model, sessions, cfg.max_seq_len, cfg.window_context, memory_tokens)
    figures = stored_losses(current, previous, key, store) if examples else {}
    need = {m for m in MODELS if m not in figures and (m != "previous" or previous is not None)}
    measured: dict = {}
    if examples and need:
        log.info("measuring eval loss of %s on %d eval windows", ", ".join(sorted(need)), len(examples))
        for model in sorted(need):
            on_measured(model, 0, 1)
        measured = measure(base_model, examples, cfg.eval_pack_tokens, current, previous, need, store, key, on_measured)
    figures.update(measured)
    return {
        "eval_set": key,
        "tokens": persona_tokens(examples),
        "models": {m: with_ppl(figures.get(m)) for m in MODELS},
        "measured": sorted(measured),
    }
