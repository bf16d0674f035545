"""The engine interface the bot calls, and the reply logic every engine shares.

An engine only knows how to `generate(prompt_ids, adapter, sampling)`. Everything that must be the same
whichever engine serves a reply lives here, once: the prompt comes from the core conversation format (the
one the adapter was trained on), a degenerate reply is retried once and then dropped, and an adapter that
does not change the model's output is refused (vLLM silently serves the base model when an adapter's
module names do not match it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core.format import NO_MEMORY, ChatFormat, ChatTurn, MemoryBlock, Recalled
from core.memory import memory_budget
from core.paths import artifact_path
from core.shaping import shape

from .compat import adapter_mismatch
from .decoding import PROBE, Generation, Sampling, degenerate_reason

log = logging.getLogger(__name__)

# The fixed prompt of the smoke check: any trained persona adapter changes how a reply to it begins.
PROBE_TURNS = (ChatTurn("friend", ("hey! how are you? what are you up to tonight?",)),)
PROBE_PERSONA = "owner"
# Log-probabilities closer than this count as unchanged (fp noise between batched and single kernels).
PROBE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class AdapterRef:
    """One trained adapter as the engine serves it: `version` is vLLM's lora_int_id, never reused."""

    version: int
    path: Path
    rank: int

    @property
    def name(self) -> str:
        """The versioned name an engine knows it by (a promotion is a new name, never a reload)."""
        return f"twin-{self.version:04d}"

    @classmethod
    def from_row(cls, row: Mapping[str, Any], data_dir: Path | None = None) -> AdapterRef:
        """From a storage `adapters` row; its path is found by core.paths (None: relative to the working
        directory, for benches that store absolute paths)."""
        path = artifact_path(row["path"], Path() if data_dir is None else data_dir)
        return cls(version=int(row["version"]), path=path, rank=adapter_rank(path))


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank in a peft folder's adapter_config.json (0 when it cannot be read)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return 0
    return max([int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())])


@runtime_checkable
class Engine(Protocol):
    """What the bot calls. `reply` returns the burst's messages, or [] when there is nothing worth sending;
    `load` checks an adapter ahead of its first reply (False: refused, `rejected[version]` says why)."""

    rejected: dict[int, str]

    async def start(self) -> None: ...

    async def reply(
        self,
        turns: Sequence[ChatTurn],
        persona: str,
        partner: str,
        adapter: AdapterRef | None,
        memory: MemoryBlock = NO_MEMORY,
        time: str = "",
    ) -> list[str]: ...

    def memory_block(self, recalled: Sequence[Recalled], budget: int) -> MemoryBlock: ...

    async def load(self, adapter: AdapterRef) -> bool: ...

    async def drop(self, versions: Sequence[int]) -> None: ...

    async def close(self) -> None: ...


class BaseEngine:
    """Reply logic on top of `generate`; subclasses start a model, set `format` and `max_context`."""

    name = "engine"
    # Errors that say nothing about an adapter (a dropped connection, a dead engine): its check is redone.
    transient_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

    def __init__(self, sampling: Sampling | None = None):
        self.sampling = sampling or Sampling()
        self.format: ChatFormat | None = None  # set by start(): built from the base model's tokenizer
        self.base_model: str | None = None  # set by start(): folder or hub id, to check adapters against
        self.max_context: int = 4096  # prompt + reply tokens the model accepts; set by start()
        self.rejected: dict[int, str] = {}  # adapter version → why it is not served
        self._checks: dict[int, asyncio.Future[str | None]] = {}
        self._good: list[AdapterRef] = []  # adapters that passed the smoke check, newest use last
        self._base_probe: asyncio.Future[Generation] | None = None

    # -- what subclasses provide --------------------------------------------------------------------
    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def generate(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> Generation:
        """Generate one reply's tokens for `prompt_ids` with `adapter` (None: the base model)."""
        raise NotImplementedError

    def adapter_problem(self, adapter: AdapterRef) -> str | None:
        """Why this engine cannot load `adapter` at all (checked before the smoke check), or None.

        Runs before the adapter reaches the model: vLLM dies on an adapter of another model."""
        if not (adapter.path / "adapter_config.json").exists():
            return f"{adapter.path} has no adapter_config.json (not a peft adapter folder)"
        return adapter_mismatch(adapter.path, self.base_model)

    # -- the interface -------------------------------------------------------------------------------
    async def reply(
        self,
        turns: Sequence[ChatTurn],
        persona: str,
        partner: str,
        adapter: AdapterRef | None,
        memory: MemoryBlock = NO_MEMORY,
        time: str = "",
    ) -> list[str]:
        """`persona`'s next burst in a chat with `partner` (the turns name every speaker; `partner` is
        who the reply is for, used in logs), `memory` before the turns, `time` the reply's own time mark
        (core.timemarks; "" for none). Degenerate output is retried once, then dropped ([])."""
        adapter = await self.usable_adapter(adapter)
        prompt = self.prompt_ids(turns, persona, memory, time)
        for sampling in (self.sampling, self.sampling.for_retry()):
            gen = await self.generate(prompt, adapter, sampling)
            # A message of dashes alone is a separator the model broke ("\n---\n---"), not something to send.
            messages = [m for m in self.format.decode_reply(gen.token_ids) if m.strip("-")]
            reason = degenerate_reason(gen, messages)
            if reason is None:
                return shape(messages, sampling.shaping, sampling.max_messages)
            log.info("%s reply as %s to %s was degenerate (%s)", self.name, persona, partner, reason)
        log.warning("%s: dropped a reply as %s to %s: degenerate twice", self.name, persona, partner)
        return []

    def memory_block(self, recalled: Sequence[Recalled], budget: int) -> MemoryBlock:
        """The memory block of the recalled exchanges that fit `budget` tokens, and a quarter of the context
        window at most, as in training (what `reply` is given)."""
        return self.format.memory(recalled, memory_budget(budget, self.max_context))

    def prompt_ids(
        self, turns: Sequence[ChatTurn], persona: str, memory: MemoryBlock = NO_MEMORY, time: str = ""
    ) -> list[int]:
        """The core format's prompt, with the oldest turns left out until it fits the context window."""
        budget = self.max_context - self.sampling.for_retry().max_new_tokens
        turns = list(turns)
        prompt = self.format.prompt(turns, persona, memory, time)
        while len(prompt) > budget and len(turns) > 1:
            turns = turns[1:]
            prompt = self.format.prompt(turns, persona, memory, time)
        # One huge turn: keep its newest tokens after the header so the persona header still ends it.
        return prompt if len(prompt) <= budget else prompt[-budget:]

    async def load(self, adapter: AdapterRef) -> bool:
        """Check (and load) an adapter ahead of its first reply, e.g. at promotion. False: rejected."""
        return await self.usable_adapter(adapter) == adapter

    async def drop(self, versions: Sequence[int]) -> None:
        """Never serve these adapters again, not even as a fallback (deleted, e.g. trained on a forgotten
        person), and free what the engine holds of them."""
        for version in versions:
            refused = asyncio.get_running_loop().create_future()
            refused.set_result("deleted")
            self._checks[version] = refused  # a request naming it gets the base model, never a new check
            self._good = [a for a in self._good if a.version != version]
            self.rejected[version] = "deleted"
            await self.release(version)

    async def release(self, version: int) -> None:
        """Free an adapter's weights held by the engine (subclasses that cache them)."""

    # -- the smoke check -----------------------------------------------------------------------------
    async def usable_adapter(self, adapter: AdapterRef | None) -> AdapterRef | None:
        """`adapter` if it passed the smoke check, else the last adapter that did, else the base model."""
        if adapter is None:
            return None
        if adapter.version not in self._checks:
            self._checks[adapter.version] = asyncio.ensure_future(self._smoke_check(adapter))
        # shield: one check per version even when a cancelled reply was the one that started it.
        reason = await asyncio.shield(self._checks[adapter.version])
        if reason is None:
            if adapter in self._good:
                self._good.remove(adapter)
            self._good.append(adapter)
            return adapter
        fallback = self._good[-1] if self._good else None
        log.debug("adapter %d rejected; replying with %s", adapter.version, fallback or "the base model")
        return fallback

    async def _smoke_check(self, adapter: AdapterRef) -> str | None:
        reason = await asyncio.to_thread(self.adapter_problem, adapter)
        if reason is None:
            try:
                reason = await self._unchanged_output(adapter)
            except self.transient_errors:  # the engine or the network failed, not the adapter: check again
                self._checks.pop(adapter.version, None)
                raise
            except Exception as exc:  # a broken adapter must not take the engine down
                log.exception("adapter %d failed to load", adapter.version)
                reason = f"failed to load: {exc}"
        if reason is not None:
            self.rejected[adapter.version] = reason
            log.error("refusing to serve adapter %d (%s): %s", adapter.version, adapter.path, reason)
        else:
            log.info("%s: adapter %d passed the smoke check", self.name, adapter.version)
        return reason

    async def _unchanged_output(self, adapter: AdapterRef) -> str | None:
        prompt = self.format.prompt(PROBE_TURNS, PROBE_PERSONA)
        if self._base_probe is None:
            self._base_probe = asyncio.ensure_future(self.generate(prompt, None, PROBE))
        try:
            base = await asyncio.shield(self._base_probe)
        except Exception:
            self._base_probe = None  # the next adapter's check tries again
            raise
        tuned = await self.generate(prompt, adapter, PROBE)
        if tuned.token_ids != base.token_ids:
            return None
        diffs = [abs(a - b) for a, b in zip(tuned.logprobs, base.logprobs, strict=False)]
        if diffs and max(diffs) > PROBE_TOLERANCE:
            return None
        return (
            "its output equals the base model's on a fixed prompt (zero weights, or module names that do "
            "not match the base model): retrain it for this base model"
        )
