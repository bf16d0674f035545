"""Evaluation knobs: each default with a one-line why (the field's description)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    top_personas: int = Field(
        3,
        ge=0,
        description="Personas besides the owner with the most eval tokens that "
        "get their own rows, replies and openers; each one costs generation time.",
    )
    replies_per_persona: int = Field(
        24,
        ge=1,
        description="Held-out contexts each persona answers per model: 24 "
        "tells a habit of 10% from one of 40%; more costs generation time.",
    )
    owner_replies: int | None = Field(
        None,
        ge=1,
        description="Held-out contexts the owner answers per model (empty: replies_per_persona): the owner's "
        "figures steer the twin, so a bench asks for more of them to narrow their interval.",
    )
    opener_turns: int = Field(
        3,
        ge=1,
        description="Replies in each opener dialogue after the opener (answer, "
        "answer back, answer): enough to see whether the twin chats or turns into an "
        "assistant; each turn is another round of generation.",
    )
    concurrency: int = Field(
        32,
        ge=1,
        description="Replies in flight at once: the engines batch them "
        "(transformers up to 32 a batch, vLLM continuously).",
    )
    examples_shown: int = Field(
        3,
        ge=0,
        description="Held-out contexts per persona shown in the Markdown page "
        "with the real and the generated replies side by side.",
    )
    after_round_engine: Literal["transformers", "settings"] = Field(
        "transformers",
        description="Engine of the report at the end of a round: transformers runs in the "
        "trainer's process beside the bot's vLLM, which already holds its share of the GPU (a second vLLM "
        "would not fit); `settings` uses TWIN_ENGINE like `twin eval`.",
    )
    reuse_replies: bool = Field(
        True,
        description="Keep each model's replies (in data/report_cache) and reuse them while the model, the "
        "contexts and the decoding are the same: the base model's replies and the previous adapter's do not "
        "change from round to round, so a round's report generates only the new adapter's.",
    )
    seed: int = Field(0, description="Which held-out contexts are sampled: the same seed, the same contexts.")
