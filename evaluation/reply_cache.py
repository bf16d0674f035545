"""Replies that do not change from round to round, generated once: the base model's, and an adapter's.

A round's report asks the base model, the previous adapter and the new one to answer the same held-out
contexts. The base model's replies are the same every round, and the previous adapter's were made by the
last round's report (as its new adapter); only the new adapter's are new. A reply set is kept under a key
of everything that decides it: the model (its path and the names, sizes and times of its files), the
contexts (a content hash, the persona among them), the engine and its decoding (knobs, seed, context
length), the code that builds the prompt, and CACHE_VERSION. Any change is another key: regenerated.

The contexts quote people, so the cache is theirs too: it lives in settings.report_cache_dir, which
`twin forget` deletes whole (trainer/forgetting.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump when what a cached reply means changes in a way the key cannot see (how replies are post-processed).
CACHE_VERSION = 1
# Reply sets kept (one per model, persona and eval set; a few KB each): the oldest beyond this go.
KEEP_FILES = 256
# What builds a prompt and turns a generation into a reply: a change here changes every reply.
PROMPT_MODULES = ("core.format", "core.timemarks", "core.shaping", "engine.chat", "engine.base", "engine.decoding")
# Files of a model folder that say nothing about its weights (forget rewrites meta.json).
NOT_WEIGHTS = {"meta.json", "history.json", "loss.png"}


def model_identity(path: str | Path) -> str:
    """A model as the cache keys it: a folder by its path and its files' names, sizes and times; anything
    else (a hub id) by its name."""
    folder = Path(path)
    if not folder.is_dir():
        return str(path)
    files = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for f in folder.iterdir()
        if f.is_file() and f.name not in NOT_WEIGHTS
    )
    return json.dumps([str(folder.resolve()), files])


def prompt_code() -> str:
    """A hash of the modules that build prompts and replies."""
    import importlib

    h = hashlib.sha256()
    for name in PROMPT_MODULES:
        source = getattr(importlib.import_module(name), "__file__", None)
        h.update(Path(source).read_bytes() if source else name.encode())
    return h.hexdigest()[:16]


def engine_identity(engine: Any) -> dict:
    """What of an engine decides its replies besides the model: its kind, decoding and context length."""
    sampling = getattr(engine, "sampling", None)
    decoding = dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else repr(sampling)
    return {"engine": engine.name, "decoding": decoding, "max_context": getattr(engine, "max_context", None)}


def content_hash(value: Any) -> str:
    """A stable hash of dataclasses, tuples and strings (the probes, the opener plays)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    text = json.dumps(plain(value), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ReplyCache:
    """Reply sets on disk, one JSON file per key, written whole (a crash leaves no half file)."""

    def __init__(self, folder: Path, common: dict):
        self.folder, self.common = Path(folder), {**common, "version": CACHE_VERSION, "prompt": prompt_code()}
        self.hits = 0

    def key(self, **parts: Any) -> str:
        return content_hash({**self.common, **parts})[:32]

    def get(self, key: str) -> Any | None:
        path = self.folder / f"{key}.json"
        try:
            value = json.loads(path.read_text())["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):  # a damaged file is a miss, regenerated and rewritten
            log.warning("report cache file %s is unreadable: generating its replies again", path)
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"value": value}, ensure_ascii=False))
        tmp.chmod(0o600)
        tmp.replace(self.folder / f"{key}.json")
        self._prune()

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.json"), key=lambda f: f.stat().st_mtime_ns)
        for old in files[:-KEEP_FILES]:
            old.unlink(missing_ok=True)

    async def through(
        self, key: str, make: Callable[[], Awaitable[Any]], on_hit: Callable[[Any], None] = lambda v: None
    ) -> Any:
        """The value kept under `key`, else `make()`'s, kept; `on_hit` hears a kept value before it returns."""
        kept = self.get(key)
        if kept is not None:
            on_hit(kept)
            return kept
        value = await make()
        self.put(key, value)
        return value
