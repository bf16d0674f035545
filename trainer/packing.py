"""Padding-free batches: examples packed end to end into one row, without attending to each other.

A pack is fed as batch size 1: the examples' ids concatenated, `position_ids` restarting at 0 for each
example and no attention mask. transformers (>= 4.5x, `masking_utils.find_packed_sequence_indices`) reads
the restarts and builds a block-diagonal causal mask for eager/sdpa attention, so every token is real and
no example sees another (tests/test_train_packing.py checks the logits against separate forwards). Older
versions get the block-diagonal mask passed explicitly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

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


def _has_packed_detection() -> bool:
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        return False
    return True


def block_causal_mask(lengths: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A (1, 1, T, T) additive mask: causal inside each example, nothing across examples."""
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(list(lengths)))
    allowed = (seq[:, None] == seq[None, :]) & torch.ones(len(seq), len(seq), dtype=torch.bool).tril()
    mask = torch.zeros(len(seq), len(seq), dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def collate(pack: Pack, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Model inputs of one pack plus `labels` (IGNORE where nothing is learned). Labels are not shifted:
    labels[t] is the target predicted at position t - 1."""
    ids, pos, labels, speaker = [], [], [], []
    for ex in pack.examples:
        ids += ex.ids
        pos += range(len(ex))
        # The first token of an example is never predicted: position t - 1 belongs to another example.
        labels += [IGNORE] + [t if keep else IGNORE for t, keep in zip(ex.ids[1:], ex.loss[1:], strict=True)]
        speaker += ex.speaker
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([pos]),
        "labels": torch.tensor([labels]),
    }
    if not _has_packed_detection():
        batch["attention_mask"] = block_causal_mask([len(e) for e in pack.examples], dtype)
    return batch


def real_token_share(packs: Sequence[Pack]) -> float:
    """Share of fed tokens that are real (not padding): 1.0 by construction for padding-free packs."""
    fed = sum(len(collate(p)["input_ids"][0]) for p in packs)
    return sum(p.n_tokens for p in packs) / fed if fed else 1.0
