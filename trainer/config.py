"""Training knobs: one model with a default and a one-line why for each (the field's description).

Defaults suit a 0.5–3B instruct model on one GPU. Override any of them in a TOML file named by
TWIN_TRAIN_CONFIG, e.g.

    lora_r = 32
    epochs = 3

`twin train --show-config` prints every knob with its value and why.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserError
from core.settings import Settings

Strategy = Literal["ddp", "fsdp"]
# Target tokens whose logits exist at once: 1024 x a 49k vocabulary is 200 MB in fp32, where a whole pack's
# logits (and their softmax gradient) took gigabytes. Evaluation uses it too.
LOSS_CHUNK_TOKENS = 1024


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- LoRA ---------------------------------------------------------------------------------------
    lora_r: int = Field(
        16,
        ge=1,
        le=256,
        description="16 learns a person's style; higher costs memory, "
        "rarely helps on chat data, and vLLM must be started with max_lora_rank >= r.",
    )
    lora_alpha: int = Field(32, ge=1, description="2·r keeps the update scale steady when r changes.")
    lora_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="0: chat corpora are large next to an r=16 adapter "
        "and dropout costs an extra pass over every adapted input; try 0.05 on a "
        "small corpus that overfits (the eval gate shows it).",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Every linear projection (attention + MLP): best quality per parameter; "
        "vLLM serves them all. No embeddings or lm_head: vLLM cannot serve trained embeddings.",
    )

    # -- optimisation -------------------------------------------------------------------------------
    learning_rate: float = Field(2e-4, gt=0, description="2e-4 is the usual LoRA rate; full fine-tunes use ~10x less.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Cosine decays smoothly to 0, so the last steps polish instead of jumping."
    )
    warmup_ratio: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="A short warmup keeps the first updates from "
        "wrecking a freshly initialised (or inherited) adapter.",
    )
    weight_decay: float = Field(0.0, ge=0, description="LoRA's low rank already regularises; decay adds little.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clipping guards against one odd pack blowing up a step.")
    epochs: int = Field(2, ge=1, le=10, description="2 passes learn the style; more memorises the chats.")
    pack_tokens: int = Field(
        2048,
        ge=64,
        description="Tokens per micro-batch (sessions packed, no padding): "
        "the batch size. Without flash-attention a pack's attention grows with its "
        "square, so ~2x the typical session is the sweet spot; lower it on OOM.",
    )
    grad_accum: int = Field(
        4,
        ge=1,
        description="Micro-batches per optimiser step: ~8k tokens a step is "
        "stable for LoRA without needing the memory for it at once.",
    )
    loss_on: Literal["everyone", "owner"] = Field(
        "everyone",
        description="everyone: the adapter learns every "
        "speaker, so it can play you and each friend (/persona); owner: "
        "only your turns carry loss (friends' are context), as some "
        "twins do; bench/quality.py compares them.",
    )
    memory: bool = Field(
        True,
        description="Each session is shown the memory block the bot would have built at its start "
        "(TWIN_MEMORY_SCOPE), so the adapter learns to use what it recalls; false trains "
        "without (bench/quality.py compares).",
    )
    max_seq_len: int = Field(
        1024,
        ge=32,
        description="Longest window the model sees; longer sessions become "
        "overlapping windows. Chats rarely need more context than this.",
    )
    window_context: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Share of a window that repeats earlier text "
        "as context (no loss) when a session is cut into windows.",
    )
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute each layer in backward instead of keeping "
        "its activations: the embedded model's peak falls from 4.2 to 1.85 GB on "
        "CPU (bench/train.py --part memory) and a 3B model's 4k-token packs fit "
        "16 GB, for ~30% more compute; false trains faster where memory is "
        "plentiful.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Cap on optimiser steps (smoke tests, benches); None trains the full epochs."
    )
    seed: int = Field(0, description="Same data + same seed = same adapter; change it to re-roll a round.")

    # -- rounds -------------------------------------------------------------------------------------
    replay_ratio: float = Field(
        1.0,
        ge=0,
        description="Earlier sessions replayed per new one in an incremental "
        "round: 1.0 keeps old knowledge at twice the cost of new data alone.",
    )
    fresh_every: int = Field(
        10,
        ge=1,
        description="Every Nth round starts from the base model on all data, so "
        "drift from many small rounds never accumulates.",
    )
    promote_tolerance: float = Field(
        0.01,
        ge=0,
        description="A new adapter may be up to 1% worse in eval loss "
        "and still be promoted: small eval sets are noisy.",
    )
    keep_adapters: int = Field(
        5,
        ge=1,
        description="Adapter folders kept on disk (plus the active one); older "
        "ones are deleted. A 1.5B r=16 adapter is ~70 MB.",
    )
    loss_chunk_tokens: int = Field(
        LOSS_CHUNK_TOKENS,
        ge=0,
        description="Target tokens whose logits exist at "
        "once: a pack's full logits (tokens x vocabulary) never do, which more than "
        "halves peak memory on small models with big vocabularies (bench/train.py "
        "--part memory); 0 = all at once.",
    )
    eval_pack_tokens: int = Field(8192, ge=64, description="Eval needs no gradients, so it packs more per pass.")

    # -- self-play (SPIN: the real reply preferred to the adapter's own, trainer/selfplay.py) -------------
    selfplay_pairs: int = Field(
        0,
        ge=0,
        description="Training contexts (owner's turns first) that get a self-play pair each round; 0 = off "
        "until bench/quality.py shows it lowers the owner's discriminator accuracy beyond its interval.",
    )
    selfplay_drafts: bool = Field(
        True,
        description="The owner's edited drafts (twin drafts) in a round's sessions are preference pairs too, self-play "
        "on or off: the owner's own verdict on the twin's reply is the best signal there is.",
    )
    selfplay_beta: float = Field(
        0.1, gt=0, description="DPO's beta: 0.1 (SPIN, DPO) lets the adapter move from its reference without drifting."
    )
    selfplay_iterations: int = Field(
        1,
        ge=1,
        le=5,
        description="SPIN iterations: each generates anew with the updated adapter as the new reference; "
        "SPIN's gains come mostly from the first.",
    )
    selfplay_epochs: int = Field(
        2, ge=1, le=10, description="Passes over an iteration's pairs: SPIN trains 2 epochs per iteration."
    )
    selfplay_lr: float = Field(
        5e-5,
        gt=0,
        description="A quarter of the supervised rate: preference steps on a trained adapter need only "
        "to nudge it (SPIN uses 5e-7 on full weights; LoRA needs more).",
    )

    # -- scale-out ----------------------------------------------------------------------------------
    strategy: Strategy = Field(
        "ddp",
        description="ddp copies the model per process (fine up to ~8B with LoRA); "
        "fsdp shards it, for models that do not fit one device.",
    )

    def whys(self) -> list[tuple[str, object, str]]:
        """(knob, value, why) for every knob, for `--show-config`."""
        return [(name, getattr(self, name), f.description or "") for name, f in type(self).model_fields.items()]


def load_config(settings: Settings, **overrides) -> TrainConfig:
    """Defaults, then the TOML file named by settings.train_config, then `overrides` (CLI flags)."""
    values: dict = {}
    path = getattr(settings, "train_config", None)
    if path:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"TWIN_TRAIN_CONFIG={path} does not exist: create it or unset TWIN_TRAIN_CONFIG")
        with path.open("rb") as f:
            values = tomllib.load(f)
        unknown = set(values) - set(TrainConfig.model_fields)
        if unknown:
            raise UserError(
                f"{path}: unknown training knob(s) {sorted(unknown)}: `twin train --show-config` lists them"
            )
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)
