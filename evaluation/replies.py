"""The report's replies: every usable model answers the held-out contexts and plays the opener dialogues,
through one engine, with what did not change since the last report taken from the reply cache."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.settings import Settings
from engine.base import AdapterRef, Engine
from engine.base_model import base_model_path

from .config import EvalConfig
from .generate import Gated, Probe, answer_probes, opener_dialogues, opener_pairs, opener_plays, quiet_engine_log
from .losses import AdapterInfo
from .reply_cache import ReplyCache, engine_identity, model_identity

log = logging.getLogger(__name__)

# emit(stage, model, persona, done, of): where the report is, for a progress display.
Emit = Callable[[str, str, str | None, int, int], None]


def progress_events(on_event: Callable[[dict], None] | None) -> Emit:
    """`emit` sending a JSON-able `report_progress` event to `on_event` (a round's child process writes it as a
    JSON line for `twin train`; `twin eval` draws it): stage is losses, replies or openers; model is base,
    previous or current; persona is a slug (replies) or None; done counts up to of."""

    def emit(stage: str, model: str, persona: str | None, done: int, of: int) -> None:
        if on_event is not None:
            event = {"stage": stage, "model": model, "persona": persona, "done": done, "of": of}
            on_event({"event": "report_progress", **event})

    return emit


def tally(emit: Emit, stage: str, model: str, persona: str | None, total: int) -> Callable[[], None]:
    """Emit 0 of `total` now and one more done at each call of the returned function (nothing when total is 0)."""
    if not total:
        return lambda: None
    done = itertools.count(1)
    emit(stage, model, persona, 0, total)
    return lambda: emit(stage, model, persona, next(done), total)


def kept(
    cache: ReplyCache | None, identity: str | None, step: Callable[[], None], total: int, **parts: Any
) -> Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    """Run a job through `cache` under the model's `identity` and `parts` (directly without a cache); a kept
    result counts as `total` done steps."""

    def run(make: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        if cache is None or identity is None:
            return make()
        key = cache.key(model=identity, **parts)
        return cache.through(key, make, on_hit=lambda _: [step() for _ in range(total)])

    return run


async def generate_replies(
    engine: Engine,
    models: dict[str, AdapterRef | None],
    probes: dict[str, list[Probe]],
    owner: str | None,
    scripts: dict,
    cfg: EvalConfig,
    emit: Emit,
    memory_tokens: int = 0,
    cache: ReplyCache | None = None,
    identities: dict[str, str] | None = None,
) -> dict:
    """Every model's replies to every probe (shown its memory within `memory_tokens`), and its opener
    dialogues, all in flight together; `emit` hears of each reply and each dialogue as it ends. With a
    `cache`, a model named in `identities` answers only what it has not answered before."""
    personas, gated, identities = list(probes), Gated(engine, cfg.concurrency), identities or {}
    plays = opener_plays(opener_pairs(owner, personas), scripts)
    jobs = []
    for m, ref in models.items():
        for p in personas:
            step = tally(emit, "replies", m, p, len(probes[p]))
            make = functools.partial(answer_probes, gated, probes[p], ref, step, memory_tokens)
            run = kept(cache, identities.get(m), step, len(probes[p]), stage="replies", persona=p, probes=probes[p])
            jobs.append(run(make))
    for m, ref in models.items():
        step = tally(emit, "openers", m, None, len(plays))
        make = functools.partial(opener_dialogues, gated, ref, plays, cfg.opener_turns, step)
        jobs.append(kept(cache, identities.get(m), step, len(plays), stage="openers", plays=plays)(make))
    done = iter(await asyncio.gather(*jobs))
    replies = {m: {p: next(done) for p in personas} for m in models}
    openers = [dict(d, model=m) for m in models for d in next(done)]
    return {"replies": replies, "openers": openers}


async def usable_models(
    engine: Engine, current: AdapterInfo, previous: AdapterInfo | None, settings: Settings, notes: list[str]
) -> dict[str, AdapterRef | None]:
    """base → None, and each adapter the engine accepts (a refused one is noted, not silently replaced)."""
    models: dict[str, AdapterRef | None] = {"base": None}
    for name, info in (("previous", previous), ("current", current)):
        if info is None:
            continue
        if not info.on_disk:
            notes.append(f"{name} adapter {info.version} was pruned: no replies from it")
            continue
        ref = AdapterRef.from_row(info.row, settings.data_dir)
        if await engine.load(ref):
            models[name] = ref
        else:
            notes.append(f"the engine refused {name} adapter {info.version}: {engine.rejected.get(info.version)}")
    return models


def reply_cache(settings: Settings, engine: Engine, cfg: EvalConfig, memory_tokens: int) -> ReplyCache | None:
    """The cache of replies this engine's decoding makes (None: cfg.reuse_replies is off)."""
    if not cfg.reuse_replies:
        return None
    return ReplyCache(settings.report_cache_dir, {**engine_identity(engine), "memory_tokens": memory_tokens})


def identities_of(settings: Settings, models: dict[str, AdapterRef | None]) -> dict[str, str]:
    """Each model as the reply cache keys it: the base model's folder, each adapter's folder."""
    base = model_identity(base_model_path(settings))
    return {m: model_identity(ref.path) if ref else base for m, ref in models.items()}


async def generate_all(
    settings: Settings,
    engine: Engine | None,
    kind: str | None,
    current: AdapterInfo,
    previous: AdapterInfo | None,
    probes: dict,
    data: dict,
    cfg: EvalConfig,
    emit: Emit,
) -> dict | None:
    """The replies of every usable model, from `engine` or one of `kind` (None: TWIN_ENGINE) started here.
    An engine that cannot start or serve leaves the report without replies (noted), not without losses."""
    from engine.build import build_engine

    own = engine is None
    try:
        if own:
            refs = [AdapterRef.from_row(i.row, settings.data_dir) for i in (current, previous) if i and i.on_disk]
            engine = build_engine(settings if kind is None else settings.model_copy(update={"engine": kind}), refs)
            await engine.start()
        assert engine is not None  # for mypy: built above when not given
        data["engine"] = engine.name
        models = await usable_models(engine, current, previous, settings, data["notes"])
        memory_tokens = data.get("memory_tokens", 0)
        cache = reply_cache(settings, engine, cfg, memory_tokens)
        with quiet_engine_log():
            generated = await generate_replies(
                engine,
                models,
                probes,
                data["owner"],
                data["scripts"],
                cfg,
                emit,
                memory_tokens,
                cache,
                identities_of(settings, models),
            )
        data["reused_replies"] = cache.hits if cache else 0
        return generated
    except Exception as exc:  # noqa: BLE001 - the losses and the leak guard still make a report
        log.exception("no replies for the report")
        data["notes"].append(f"no replies were generated: {type(exc).__name__}: {exc}")
        return None
    finally:
        if own and engine is not None:
            await engine.close()
