"""Training data without a training run: windows of long sessions, padding-free packs, packed attention."""

from __future__ import annotations

import random

import pytest
import torch

from core.format import ChatFormat, ChatTurn
from trainer import packing
from trainer.dataset import TrainingSession
from trainer.loop import step_groups
from trainer.model import load_base
from trainer.packing import IGNORE, Pack, collate, pack_examples
from trainer.windows import Example, session_examples, window_bounds


@pytest.fixture(scope="module", params=["sdpa", "trainer"])
def tiny_model(request, tiny_model_dir):
    """The tiny model with transformers' sdpa (packing read from position_ids by masking_utils) and as the
    trainer loads it (packed_sdpa: sdpa per example)."""
    from transformers import AutoModelForCausalLM

    if request.param == "trainer":
        model = load_base(str(tiny_model_dir), torch.float32, torch.device("cpu"))
        assert model.config._attn_implementation == packing.PACKED_SDPA
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    return model.eval()


def _session(n_turns: int, words: int = 6, sid: str = "9-100") -> TrainingSession:
    rng = random.Random(n_turns)
    turns = [
        ChatTurn("bob" if i % 2 == 0 else "alice", (" ".join(rng.choices(["banana", "apple", "bus", "cat"], k=words)),))
        for i in range(n_turns)
    ]
    return TrainingSession(sid, 9, "train", "h" + sid, 0, turns, [2 if i % 2 == 0 else 1 for i in range(n_turns)])


def _random_examples(n: int, lo: int, hi: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(lo, hi)
        out.append(Example(f"s{i}", [rng.randrange(3, 500) for _ in range(length)], [1] * length, [0] * length, ("a",)))
    return out


def test_short_session_is_one_example_with_the_format_mask(tiny_tokenizer):
    fmt = ChatFormat(tiny_tokenizer)
    session = _session(4)
    [example] = session_examples(fmt, session, max_len=1024, context=0.5)
    rendered = fmt.render(session.turns)
    assert example.ids == rendered.ids and example.loss == rendered.mask
    assert example.personas == ("bob", "alice", "bob", "alice")


def test_windows_put_loss_only_on_the_new_part_and_learn_every_token_once(tiny_tokenizer):
    fmt = ChatFormat(tiny_tokenizer)
    session = _session(40)
    rendered = fmt.render(session.turns)
    max_len = 96
    bounds = window_bounds(len(rendered.ids), rendered.turn_starts, max_len, 0.5)
    examples = session_examples(fmt, session, max_len, 0.5)
    assert len(examples) == len(bounds) > 3
    learned = [0] * len(rendered.ids)
    for (start, new_from, end), ex in zip(bounds, examples, strict=True):
        assert len(ex) <= max_len and ex.ids == rendered.ids[start:end]
        # Context before the new part carries no loss; the new part carries exactly the format's mask.
        assert not any(ex.loss[: new_from - start])
        assert ex.loss[new_from - start :] == rendered.mask[new_from:end]
        if start > 0:
            assert new_from - start > 0, "a later window keeps preceding context"
        for i in range(new_from, end):
            learned[i] += rendered.mask[i]
    assert learned == rendered.mask, "every learned token is learned in exactly one window"
    assert sum(b[0] in rendered.turn_starts for b in bounds[1:]) >= len(bounds) // 2, "contexts start at headers"


def test_packing_is_padding_free_and_fills_packs():
    examples = _random_examples(400, 20, 300)
    packs = pack_examples(examples, capacity=1024)
    fed = sum(collate(p)["input_ids"].numel() for p in packs)
    assert fed == sum(len(e) for e in examples), "every fed token is real: no padding at all"
    # Per optimiser step (4 packs), real tokens over fed tokens, and packs nearly full.
    for group in step_groups(packs, per_step=4, seed=0)[:-1]:
        assert sum(p.n_tokens for p in group) / sum(collate(p)["input_ids"].numel() for p in group) >= 0.95
    assert sum(p.n_tokens for p in packs) / (len(packs) * 1024) >= 0.95
    assert sorted(e.session_id for p in packs for e in p.examples) == sorted(e.session_id for e in examples)


def test_collate_restarts_positions_and_never_predicts_across_examples():
    pack = Pack(_random_examples(3, 5, 9, seed=1))
    batch = collate(pack)
    lengths = [len(e) for e in pack.examples]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert [batch["position_ids"][0, s].item() for s in starts] == [0, 0, 0]
    assert all(batch["labels"][0, s].item() == IGNORE for s in starts)
    assert pack.n_loss == int((batch["labels"] != IGNORE).sum())


def _separate_logits(model, pack: Pack) -> list[torch.Tensor]:
    return [model(input_ids=torch.tensor([e.ids]), use_cache=False).logits[0] for e in pack.examples]


@torch.no_grad()
def test_packed_forward_gives_the_same_logits_as_separate_forwards(tiny_model):
    pack = Pack(_random_examples(4, 30, 120, seed=2))
    batch = collate(pack)
    packed = tiny_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
    offset = 0
    for ex, alone in zip(pack.examples, _separate_logits(tiny_model, pack), strict=True):
        torch.testing.assert_close(packed[offset : offset + len(ex)], alone, atol=1e-4, rtol=1e-4)
        offset += len(ex)


@torch.no_grad()
def test_packed_examples_do_not_attend_to_each_other(tiny_model):
    a, b = _random_examples(2, 40, 40, seed=3)
    changed = Example(a.session_id, [(t + 7) % 500 for t in a.ids], a.loss, a.speaker, a.personas)
    logits_b = []
    for first in (a, changed):
        batch = collate(Pack([first, b]))
        out = tiny_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        logits_b.append(out.logits[0, len(first) :])
    torch.testing.assert_close(logits_b[0], logits_b[1])
