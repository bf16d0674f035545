"""The report's reply cache: a model answers the same contexts with the same decoding once; any change to the
model, the contexts or the decoding generates again; `twin forget` deletes what it kept.

Replies come from a real transformers engine on the tiny model; only the count of its calls is watched.
"""

from __future__ import annotations

import os

import pytest

from core.format import ChatTurn
from core.settings import Settings
from engine.build import build_engine
from evaluation.config import EvalConfig
from evaluation.generate import Probe
from evaluation.replies import generate_replies, identities_of, progress_events, reply_cache
from evaluation.reply_cache import ReplyCache
from tests.test_forget import ALICE, import_full, settings, store  # noqa: F401 - fixtures of the forget tests
from trainer.forgetting import forget_person

SMALL = EvalConfig(opener_turns=1)


class Counting:
    """The engine, with its `reply` calls counted (every reply of the report goes through it)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    async def reply(self, *args, **kwargs):
        self.calls += 1
        return await self.engine.reply(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def probes(persona: str, partner: str, lines: list[str]) -> list[Probe]:
    return [Probe(f"s{i}", persona, partner, (ChatTurn(partner, (line,)),), ("ок",)) for i, line in enumerate(lines)]


PROBES = {
    "аня": probes("аня", "wei", ["привет, как дела?", "завтра идём в кино?"]),
    "wei": probes("wei", "аня", ["你好，最近怎么样？", "周末有空吗？"]),
}


def tiny_settings(tmp_path, tiny_model_dir, **knobs) -> Settings:
    knobs = {"reply_max_new_tokens": 8, **knobs}
    return Settings(_env_file=None, data_dir=tmp_path / "data", base_model=str(tiny_model_dir), **knobs)


async def base_replies(conf: Settings, probes: dict, events: list | None = None) -> tuple[dict, int, int]:
    """The base model's replies and opener dialogues through a fresh engine: (replies, engine calls, reused)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engine = build_engine(conf.model_copy(update={"engine": "transformers"}))
    await engine.start()
    try:
        counted, models = Counting(engine), {"base": None}
        cache = reply_cache(conf, engine, SMALL, 0)
        emit = progress_events(events.append if events is not None else None)
        generated = await generate_replies(
            counted, models, probes, "аня", {}, SMALL, emit, 0, cache, identities_of(conf, models)
        )
        return generated, counted.calls, cache.hits
    finally:
        await engine.close()


@pytest.mark.asyncio
async def test_a_second_report_reuses_the_base_models_replies_without_asking_the_engine(tmp_path, tiny_model_dir):
    conf = tiny_settings(tmp_path, tiny_model_dir)
    first, calls, reused = await base_replies(conf, PROBES)
    assert calls >= 4 and reused == 0
    events: list[dict] = []
    second, calls, reused = await base_replies(conf, PROBES, events)
    assert calls == 0 and reused == 3  # two personas' replies and the opener dialogues
    assert second["replies"] == first["replies"]
    assert [d["turns"] for d in second["openers"]] == [[list(t) for t in d["turns"]] for d in first["openers"]]
    done = {(e["stage"], e["persona"]): (e["done"], e["of"]) for e in events}  # the progress still ends
    assert done[("replies", "аня")] == (2, 2) and done[("replies", "wei")] == (2, 2)


@pytest.mark.asyncio
async def test_changed_contexts_decoding_or_model_files_generate_the_replies_again(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model_dir.iterdir():
        (model / f.name).symlink_to(f) if f.is_file() else None
    conf = tiny_settings(tmp_path, model)
    await base_replies(conf, PROBES)

    more = {**PROBES, "wei": probes("wei", "аня", ["你好，最近怎么样？", "周末有空吗？", "吃饭了吗？"])}
    _, calls, reused = await base_replies(conf, more)
    assert reused == 2 and calls == 3  # only wei's contexts changed: wei's three replies again

    _, calls, reused = await base_replies(tiny_settings(tmp_path, model, reply_temperature=0.3), PROBES)
    assert reused == 0 and calls >= 4  # other decoding: nothing reused

    weights = next(model.glob("*.safetensors"))
    target = weights.resolve()
    weights.unlink()
    weights.write_bytes(target.read_bytes())  # the same name, a new file: the model may have changed
    _, calls, reused = await base_replies(conf, PROBES)
    assert reused == 0 and calls >= 4


def test_a_damaged_cache_file_is_a_miss_not_an_error(tmp_path):
    cache = ReplyCache(tmp_path / "cache", {"engine": "transformers"})
    key = cache.key(model="m", persona="аня")
    cache.put(key, [["привет"]])
    assert cache.get(key) == [["привет"]]
    (tmp_path / "cache" / f"{key}.json").write_text('{"value": [["при')
    assert cache.get(key) is None


def test_forget_deletes_the_reply_cache_that_holds_their_words(settings, store):  # noqa: F811
    import_full(store)
    alice_said = [m["text"] for m in store.messages(ALICE) if m["text"]][:3]
    cache = ReplyCache(settings.report_cache_dir, {"engine": "transformers"})
    context = probes("owner", "alice", alice_said)
    cache.put(cache.key(model="base", persona="owner", probes=context), [["ok"]] * len(context))
    assert any(settings.report_cache_dir.glob("*.json"))
    forget_person(store, settings, ALICE)
    assert not settings.report_cache_dir.exists()
