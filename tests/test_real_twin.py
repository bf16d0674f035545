"""The real thing, short: the embedded SmolLM2-135M trained a few steps on real people's chats (chitchat-dataset)
learns the owner, and answers "hey" the way a person does in a chat, not like an assistant."""

from __future__ import annotations

import json
import re

import pytest

from core.format import ChatTurn
from core.settings import Settings
from engine.base import AdapterRef
from engine.build import build_engine
from tests.chitchat import import_chitchat
from trainer.config import TrainConfig
from trainer.train import run_round

pytestmark = pytest.mark.slow

# The 16 partners the owner talked with most: their chats hold two held-out sessions (with quinn and finley).
PARTNERS = 16
# A short round: 40 steps of one 1024-token pack at a rate a few steps can move (~5 minutes on 2 cores). With
# 16 steps at 1e-3 the twin still answered "hey" with a 490-character story; with these it says one line.
SHORT_ROUND = TrainConfig(
    max_steps=40, pack_tokens=1024, grad_accum=1, learning_rate=2e-3, warmup_ratio=0.0, gradient_checkpointing=False
)  # memory is plentiful here; time is not
# What an instruct model answers "hey" with when it is still an assistant.
ASSISTANT = re.compile(r"\b(how can i (help|assist)|assist you|as an ai|language model)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def trained_twin(tmp_path_factory, embedded_model_dir):
    root = tmp_path_factory.mktemp("real-twin")
    settings = Settings(
        _env_file=None,
        data_dir=root / "data",
        owner_id=1000,
        base_model=str(embedded_model_dir),
        engine="transformers",
        reply_temperature=0.0,
    )
    settings.ensure_data_dir()
    made, store = import_chitchat(settings, root / "result.json", partners=PARTNERS)
    result = run_round(settings, SHORT_ROUND, full=True)
    yield settings, store, made, result
    store.close()


def test_a_short_round_on_real_chats_lowers_the_owners_held_out_loss(trained_twin):
    settings, store, made, result = trained_twin
    assert result.promoted and result.counts["eval_sessions"] >= 2
    figures = json.loads(store.adapter(result.version)["eval_json"])
    owner, base = figures["eval"]["per_persona"][made.owner_slug], figures["base"]["per_persona"][made.owner_slug]
    assert owner < base - 0.1, (owner, base)
    assert result.eval_loss < result.base_eval_loss


async def test_the_twin_answers_hey_with_a_short_chat_message_not_an_assistants_paragraph(trained_twin):
    settings, store, made, result = trained_twin
    friend = next(iter(made.partners)).lower()
    engine = build_engine(settings)
    await engine.start()
    try:
        adapter = AdapterRef.from_row(store.adapter(result.version), settings.data_dir)
        assert await engine.load(adapter)
        reply = await engine.reply([ChatTurn(friend, ("hey",))], made.owner_slug, friend, adapter)
        base = await engine.reply([ChatTurn(friend, ("hey",))], made.owner_slug, friend, None)
    finally:
        await engine.close()
    text = " ".join(reply)
    assert reply and len(reply[0]) <= 100 and len(text) <= 200, reply  # a chat line or two, not a paragraph
    assert not ASSISTANT.search(text), reply
    assert reply != base, (reply, base)  # the adapter changed what the model says
