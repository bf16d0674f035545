"""Padding-free batches: examples packed end to end into one row, without attending to each other.

A pack is fed as batch size 1: the examples' ids concatenated, `position_ids` restarting at 0 for each
example, no attention mask, so every token is real. Keeping examples apart is the attention's job:

* flash-attention 2 (GPUs that have it) reads the restarts as variable-length sequences;
* elsewhere `packed_sdpa` (registered with transformers' AttentionInterface) runs causal sdpa per example.

transformers' own sdpa also reads the restarts (masking_utils.find_packed_sequence_indices, when there is
no attention mask and no cache) and builds a block-diagonal mask, but it computes the whole pack's square
of scores: on small models that costs more than the padding it saves. tests/test_train_packing.py checks
both against separate forwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainer.windows import Example

IGNORE = -100


@dataclass
class Pack:
    examples: list[Example] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.examples)

    @property
    def n_loss(self) -> int:
        """Tokens that count in the loss (an example's first token is never a target)."""
        return sum(sum(e.loss[1:]) for e in self.examples)

    @property
    def session_ids(self) -> set[str]:
        return {e.session_id for e in self.examples}


def pack_examples(examples: Sequence[Example], capacity: int, seed: int = 0) -> list[Pack]:
    """First-fit decreasing into packs of at most `capacity` tokens (an example longer than that gets its
    own pack), then shuffled: few packs, full packs, and no length-sorted order in training."""
    order = sorted(examples, key=len, reverse=True)
    packs: list[Pack] = []
    room: list[int] = []
    for ex in order:
        for i, free in enumerate(room):
            if len(ex) <= free:
                packs[i].examples.append(ex)
                room[i] -= len(ex)
                break
        else:
            packs.append(Pack([ex]))
            room.append(max(0, capacity - len(ex)))
    random.Random(seed).shuffle(packs)
    return packs


PACKED_SDPA = "twin_packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Attention for one packed row: causal sdpa over each example on its own (found where position_ids
    restart at 0). Exact block-diagonal attention at the cost of separate sequences (sum of squares, not the
    square of the sum), with the linear layers still running on the whole pack at once."""
    position_ids = kwargs.get("position_ids")
    if query.shape[0] != 1 or position_ids is None:
        raise ValueError(f"{PACKED_SDPA} takes one packed row with its position_ids")
    length = query.shape[2]
    starts = sorted({0, *(position_ids[0, :length] == 0).nonzero().flatten().tolist()})
    bounds = list(zip(starts, starts[1:] + [length], strict=True))
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    outs = []
    for a, b in bounds:
        q, k, v = query[:, :, a:b], key[:, :, a:b], value[:, :, a:b]
        outs.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, scale=scaling, enable_gqa=gqa))
    out = torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Make PACKED_SDPA an attention transformers models can be loaded with (no mask is built for it)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    return PACKED_SDPA


def collate(pack: Pack) -> dict[str, torch.Tensor]:
    """Model inputs of one pack plus `labels` (IGNORE where nothing is learned). Labels are not shifted:
    labels[t] is the target predicted at position t - 1."""
    ids, pos, labels, speaker = [], [], [], []
    for ex in pack.examples:
        ids += ex.ids
        pos += range(len(ex))
        # The first token of an example is never predicted: position t - 1 belongs to another example.
        labels += [IGNORE] + [t if keep else IGNORE for t, keep in zip(ex.ids[1:], ex.loss[1:], strict=True)]
        speaker += ex.speaker
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]), "labels": torch.tensor([labels])}
