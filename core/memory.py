"""The memory's rules, decided here once for the bot, `twin chat`, the trainer, the report and the bench.

Whether the twin recalls at all (`memory_on`), how much of a context window a memory block may take
(`memory_budget`) and who may be recalled to whom (`may_recall`):

* scope `pair`: only what was said between the two people now talking, that is the owner's one-to-one
  dialog with the partner (the twin plays the owner) or with the persona (the owner talks to a friend's
  persona). Both of them already know it. Two friends talking have no shared dialog: no memory.
* scope `owner`: as `pair`, and when the twin plays the owner, the owner's own words in every other
  dialog too (never the other people's words there).
* `off`: no memory. In a group nothing is recalled under any scope: the others would hear what only two
  of its members share.

Storage finds a person's dialog (one way, `Storage.person_dialog`), never searches excluded dialogs, and
a forgotten person's messages leave the index with their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from core.settings import Settings

MemoryScope = Literal["off", "pair", "owner"]
MEMORY_SCOPES: tuple[MemoryScope, ...] = ("off", "pair", "owner")
# A memory block takes a quarter of the context window at most: the conversation and the reply must still
# fit beside it (training windows and served prompts alike).
CONTEXT_SHARE = 4


def memory_on(settings: Settings) -> bool:
    """Whether the twin recalls anything at all: a scope other than `off`, and room for at least one
    exchange (TWIN_MEMORY_EXCERPTS and TWIN_MEMORY_TOKENS above 0)."""
    return settings.memory_scope != "off" and settings.memory_excerpts > 0 and settings.memory_tokens > 0


def memory_budget(tokens: int, context: int) -> int:
    """The memory block's token budget: `tokens` (TWIN_MEMORY_TOKENS), at most a CONTEXT_SHARE-th of a
    `context`-token window."""
    return max(0, min(tokens, context // CONTEXT_SHARE))


@dataclass(frozen=True)
class Recallable:
    """What a reply may be shown: the owner's one-to-one dialog with `pair_person` (both people's words),
    and with `owner_elsewhere` the owner's own words in every other dialog (nobody else's)."""

    pair_person: int | None = None
    owner_elsewhere: bool = False

    def __bool__(self) -> bool:
        return self.pair_person is not None or self.owner_elsewhere


NOTHING = Recallable()


def may_recall(
    scope: MemoryScope, owner_id: int, persona_id: int | None, partner_id: int | None, *, group: bool
) -> Recallable:
    """The privacy rule: what the twin playing `persona_id` may recall to `partner_id` (None: someone
    storage does not know) in a group or a one-to-one chat under `scope`."""
    if scope == "off" or group:
        return NOTHING
    if persona_id == owner_id:
        pair = partner_id if partner_id != owner_id else None
    else:  # a friend's persona knows only what they said with the owner, and only to the owner
        pair = persona_id if partner_id == owner_id else None
    return Recallable(pair, scope == "owner" and persona_id == owner_id)
