"""The loss a round trains on: computed in chunks it equals the whole-pack loss (values and gradients), and
`loss_on = "owner"` leaves loss on the owner's turns alone."""

from __future__ import annotations

import pytest
import torch

from core.format import ChatFormat, ChatTurn
from trainer import model as tm
from trainer.config import TrainConfig
from trainer.dataset import TrainingSession
from trainer.loop import output_head, token_losses
from trainer.packing import pack_examples
from trainer.windows import build_examples


def _sessions(n: int) -> list[TrainingSession]:
    lines = [
        "hey how are you?",
        "fine thanks, and you?",
        "let's meet at 7 pm tomorrow",
        "ok see you then",
        "bring the book please",
        "lol 😂 haha yes",
        "привет как дела?",
        "the quick brown fox",
    ]
    out = []
    for i in range(n):
        turns = [
            ChatTurn("owner" if t % 2 else f"friend{i % 3}", (lines[(i + t) % 8], lines[(i * t) % 8]))
            for t in range(12)
        ]
        out.append(TrainingSession(f"{i}-1", i, "train", "h", 0, turns, [1, 2] * 6))
    return out


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    torch.manual_seed(0)
    base = tm.load_base(str(tiny_model_dir), torch.float32, torch.device("cpu"))
    return tm.attach_lora(base, TrainConfig(lora_r=8, lora_alpha=16))


def _loss_and_grads(model, pack, chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    losses = token_losses(model, pack, torch.device("cpu"), chunk).loss
    losses.sum().backward()
    return losses.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
def test_the_chunked_loss_equals_the_whole_pack_loss_and_its_gradients(lora_model, tiny_tokenizer, chunk):
    fmt = ChatFormat(tiny_tokenizer)
    pack = pack_examples(list(build_examples(fmt, _sessions(6), 256, 0.5)), 512, seed=0)[0]
    assert output_head(lora_model) is not None  # the chunked path really runs
    whole, whole_grads = _loss_and_grads(lora_model, pack, chunk=0)
    chunked, chunked_grads = _loss_and_grads(lora_model, pack, chunk=chunk)
    assert len(whole) == pack.n_loss and torch.allclose(chunked, whole, atol=1e-5)
    for a, b in zip(chunked_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        assert torch.allclose(token_losses(lora_model, pack, torch.device("cpu"), chunk).loss, whole, atol=1e-5)


def test_owner_only_loss_keeps_the_friends_turns_as_context(tiny_tokenizer):
    fmt = ChatFormat(tiny_tokenizer)
    everyone = list(build_examples(fmt, _sessions(3), 256, 0.5))
    owner = list(build_examples(fmt, _sessions(3), 256, 0.5, only="owner"))
    assert [e.ids for e in owner] == [e.ids for e in everyone]
    for e_all, e_owner in zip(everyone, owner, strict=True):
        spoke = [e_all.personas[s] for s in e_all.speaker]
        assert all(e_owner.loss[i] == (e_all.loss[i] if who == "owner" else 0) for i, who in enumerate(spoke))
    assert 0 < sum(e.n_loss for e in owner) < sum(e.n_loss for e in everyone)
