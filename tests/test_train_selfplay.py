"""Self-play preference training (trainer/selfplay.py) in a real round with the tiny model and real peft."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from core.settings import Settings
from engine import transformers_engine
from storage import Storage
from tests.train_corpus import Corpus
from trainer import selfplay
from trainer.config import TrainConfig
from trainer.packing import PACKED_SDPA
from trainer.train import run_round

pytestmark = pytest.mark.slow

CFG = TrainConfig(
    lora_r=8,
    lora_alpha=16,
    learning_rate=3e-3,
    epochs=1,
    pack_tokens=512,
    grad_accum=2,
    max_steps=12,
    eval_pack_tokens=4096,
    selfplay_pairs=6,
    selfplay_iterations=2,
    selfplay_epochs=3,
    selfplay_lr=1e-3,  # the tiny model needs a visible move within a few steps
)


@pytest.fixture(scope="module")
def played(tmp_path_factory, tiny_model_dir):
    """One round with self-play; every pair, reference forward and margin before/after each iteration."""
    path = tmp_path_factory.mktemp("selfplay")
    settings = Settings(
        data_dir=path, owner_id=1, base_model=str(tiny_model_dir), reply_max_new_tokens=16, _env_file=None
    )
    settings.ensure_data_dir()
    corpus = Corpus(Storage(settings.db_path))
    corpus.add(12, 6)
    seen = {"pairs": [], "reference_forwards": 0, "margins": [], "batches": []}
    real_generate = transformers_engine.generate_batch

    def recording_generate(model, prompts, *args, **kwargs):
        seen["batches"].append(len(prompts))
        return real_generate(model, prompts, *args, **kwargs)

    real_losses, real_make, real_iteration = selfplay.token_losses, selfplay.make_pairs, selfplay.SelfPlay.iteration

    def counting_losses(*args, **kwargs):
        seen["reference_forwards"] += not torch.is_grad_enabled()
        return real_losses(*args, **kwargs)

    def recording_make(*args, **kwargs):
        pairs = real_make(*args, **kwargs)
        seen["pairs"].append(pairs)
        return pairs

    def measured_iteration(stage, n, spots):
        figures = real_iteration(stage, n, spots)
        base = stage.r.peft_model.get_base_model()
        assert base.config._attn_implementation == PACKED_SDPA and not base.config.use_cache  # as training had it
        forwards, pairs = seen["reference_forwards"], [p for p in seen["pairs"][-1] if p.weight]
        with torch.no_grad():
            after = [selfplay.pair_logps(stage.r.peft_model, p, stage.device, 0) for p in pairs]
        before = sum(p.ref[0] - p.ref[1] for p in pairs) / len(pairs)
        seen["margins"].append((before, sum(float(c - r) for c, r in after) / len(pairs)))
        seen["reference_forwards"] = forwards  # the measurement above is the test's, not the stage's
        return figures

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(selfplay, "token_losses", counting_losses)
        mp.setattr(transformers_engine, "generate_batch", recording_generate)
        mp.setattr(selfplay, "make_pairs", recording_make)
        mp.setattr(selfplay.SelfPlay, "iteration", measured_iteration)
        result = run_round(settings, CFG)
    return settings, corpus, result, seen


def test_selfplay_raises_the_real_replys_margin_over_the_adapters_own(played):
    *_, seen = played
    assert len(seen["margins"]) == CFG.selfplay_iterations
    for before, after in seen["margins"]:
        assert after > before + 0.5, seen["margins"]


def test_the_reference_is_forwarded_once_per_pair_per_iteration(played):
    *_, seen = played
    assert [len(p) for p in seen["pairs"]] == [CFG.selfplay_pairs] * CFG.selfplay_iterations
    assert seen["reference_forwards"] == CFG.selfplay_pairs * CFG.selfplay_iterations
    assert seen["batches"][0] == CFG.selfplay_pairs  # the replies are generated as one batch


def test_selfplay_pairs_come_from_training_sessions_only_and_the_owner_first(played):
    _, corpus, _, seen = played
    eval_ids = {s["id"] for s in corpus.store.sessions(split="eval")}
    used = {p.chosen.session_id for pairs in seen["pairs"] for p in pairs}
    assert len(eval_ids) == 6 and used and not used & eval_ids
    assert {p.chosen.personas for pairs in seen["pairs"] for p in pairs} == {("alice",)}  # the owner
    real = [p for pairs in seen["pairs"] for p in pairs if p.weight]
    assert real and all(p.rejected.ids != p.chosen.ids for p in real)


def test_the_round_records_the_selfplay_stage(played):
    settings, corpus, result, _ = played
    meta = json.loads((settings.adapters_dir / f"{result.version:04d}" / "meta.json").read_text())
    figures = meta["selfplay"]
    assert figures == result.selfplay
    assert figures["iterations"] == 2 and figures["contexts"] == 6 and 0 < figures["pairs"] <= 6
    assert figures["accuracy"] > 0.5 and figures["loss"] < 0.6931  # below log 2: the real reply is preferred
    assert [h["iteration"] for h in figures["history"]] == [1, 2]


def owner_reply_ids(store: Storage, session_id: str) -> list[int]:
    """The ids of the owner's messages that open a reply turn (not the session's first turn) in a session."""
    session = next(s for s in store.sessions() if s["id"] == session_id)
    ids, previous = [], None
    for m in store.session_messages(session):
        if m["sender_id"] == 1 and previous not in (None, 1):
            ids.append(m["id"])
        previous = m["sender_id"]
    return ids


def test_the_owners_edited_drafts_are_preference_pairs_with_self_play_off(tmp_path, tiny_model_dir, monkeypatch):
    """With no self-play asked for, a round still prefers the owner's real reply over the twin's draft they
    edited, in a training session; a draft answered in a held-out session is never used."""
    settings = Settings(data_dir=tmp_path, owner_id=1, base_model=str(tiny_model_dir), _env_file=None)
    settings.ensure_data_dir()
    store = Storage(settings.db_path)
    corpus = Corpus(store)
    trained = [corpus.add_session("bob", "train", turns=6) for _ in range(4)]
    held_out = corpus.add_session("carol", "eval", turns=6)
    for dialog in (2, 3):
        store.rebuild_sessions(dialog, settings.session_gap_seconds)
    for session_id, draft in ((trained[1], "зебра xylophone\n斑马"), (held_out, "held out words")):
        reply_id = owner_reply_ids(store, session_id)[0]
        draft_id = store.open_draft(int(session_id.split("-")[0]), "alice", None, draft)
        store.close_draft(draft_id, "edited", "apple", 9, reply_message_id=reply_id)
    made: list = []
    real_make = selfplay.make_pairs

    def recording_make(*args, **kwargs):
        pairs = real_make(*args, **kwargs)
        made.extend(pairs)
        return pairs

    monkeypatch.setattr(selfplay, "make_pairs", recording_make)
    cfg = CFG.model_copy(update={"max_steps": 2, "selfplay_pairs": 0, "selfplay_iterations": 1, "selfplay_epochs": 1})
    result = run_round(settings, cfg)
    assert result.selfplay is not None and (result.selfplay["contexts"], result.selfplay["drafts"]) == (1, 1)
    (pair,) = made
    assert pair.weight == 1.0 and pair.chosen.session_id == trained[1]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rejected = tokenizer.decode([i for i, keep in zip(pair.rejected.ids, pair.rejected.loss, strict=True) if keep])
    assert "зебра xylophone" in rejected and "斑马" in rejected and "held out" not in rejected


def test_a_round_without_self_play_or_drafts_has_no_preference_stage(tmp_path, tiny_model_dir):
    settings = Settings(data_dir=tmp_path, owner_id=1, base_model=str(tiny_model_dir), _env_file=None)
    settings.ensure_data_dir()
    Corpus(Storage(settings.db_path)).add(4, 2)
    result = run_round(settings, CFG.model_copy(update={"max_steps": 2, "selfplay_pairs": 0}))
    assert result.selfplay is None
