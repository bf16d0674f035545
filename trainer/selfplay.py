"""Self-play preference training (SPIN, arXiv 2401.01335): a stage of a round after the supervised steps.

For contexts of the round's training sessions (never held-out ones), the adapter writes its own reply with the
bot's decoding and the engine's reply logic; a DPO loss then prefers the real reply over it:

    loss = -logsigmoid(beta * ((pi(real) - ref(real)) - (pi(own) - ref(own))))

where pi and ref are a reply's summed log-probabilities, over the reply's tokens only. The reference is the
adapter as the stage found it: its log-probabilities are computed once per pair, before the steps, so no
second model is held. Each SPIN iteration repeats generate → reference → DPO with the updated adapter.

The owner's drafts (collector/drafts.py) that they edited before sending are pairs of the same kind, judged by
the one person who knows: in a training session of the round, the owner's real reply is preferred over the
twin's draft for that moment. They come first, beside the self-play contexts, and keep their draft as the
rejected reply in every iteration.

Data-parallel: every process builds the same contexts and takes every N-th; a context whose reply was dropped
(degenerate) or equals the real one stays as a zero-weight pair, so every process runs the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import UserError
from core.format import NO_MEMORY, ChatFormat, ChatTurn, MemoryBlock
from core.memory import memory_budget
from core.scrub import Scrubber
from engine.build import reply_sampling
from engine.transformers_engine import HeldModelEngine
from trainer.config import TrainConfig
from trainer.dataset import TrainingSession
from trainer.loop import make_optimizer, token_losses
from trainer.packing import PACKED_SDPA, Pack
from trainer.windows import Example

Emit = Callable[[dict], None]
# Replies generated as one batch: padded prompts × this many fit a small GPU or a laptop's memory with room.
GENERATE_BATCH = 16


@dataclass(frozen=True)
class Spot:
    """A context to pair: turn `t` of `session` is the real reply. `draft`: the rejected reply when the owner
    edited the twin's draft there; None: the adapter writes its own."""

    session: TrainingSession
    t: int
    draft: tuple[str, ...] | None = None


@dataclass
class Pair:
    """One context with its real reply (`chosen`) and the adapter's own (`rejected`); weight 0: a filler."""

    chosen: Example
    rejected: Example
    weight: float = 1.0
    ref: tuple[float, float] = (0.0, 0.0)  # the reference's log-probabilities of chosen and rejected

    @property
    def pack(self) -> Pack:
        return Pack([self.chosen, self.rejected])


def contexts(
    sessions: Sequence[TrainingSession], owner: str | None, limit: int, seed: int, taken: Sequence[Spot] = ()
) -> list[Spot]:
    """Up to `limit` spots where a persona really replied (not a session's first turn, nor one `taken`): the
    owner's first, the others after, each group in an order drawn by `seed`."""
    skip = {(s.session.id, s.t) for s in taken}
    spots = [
        Spot(s, t)
        for s in sessions
        for t in range(1, len(s.turns))
        if any(m.strip() for m in s.turns[t].messages) and (s.id, t) not in skip
    ]
    random.Random(seed).shuffle(spots)
    spots.sort(key=lambda sp: sp.session.turns[sp.t].speaker != owner)  # stable: the shuffle stays within groups
    return spots[:limit]


def draft_spots(sessions: Sequence[TrainingSession], drafts: Sequence[dict], scrub: Callable[[str], str]) -> list[Spot]:
    """The edited drafts (storage's draft_preference_pairs rows) whose owner's reply is in one of `sessions`:
    that reply preferred over the draft, scrubbed as training text is. One per reply turn, the first draft."""
    by_id = {s.id: s for s in sessions}
    spots: dict[tuple[str, int], Spot] = {}
    for d in drafts:
        session = by_id.get(d["session_id"])
        if session is None:  # not trained in this round (an older session, or one left out)
            continue
        t = next((i for i, ids in enumerate(session.message_ids) if d["reply_message_id"] in ids), 0)
        messages = tuple(scrub(m) for m in d["text"].split("\n") if m.strip())  # a line per message of the burst
        if t >= 1 and messages:
            spots.setdefault((session.id, t), Spot(session, t, messages))
    return list(spots.values())


def reply_example(fmt: ChatFormat, session_id: str, context: list[ChatTurn], reply: ChatTurn, memory) -> Example:
    """The context and a reply in the core format, the loss on the reply's own tokens alone."""
    rendered = fmt.render([*context, reply], memory)
    start = rendered.turn_starts[-1]
    loss = [m if i >= start else 0 for i, m in enumerate(rendered.mask)]
    return Example(session_id, rendered.ids, loss, [0] * len(loss), (reply.speaker,))


def fitted_context(fmt: ChatFormat, turns: list[ChatTurn], t: int, memory, max_len: int, room: int) -> list[ChatTurn]:
    """The turns before turn `t`, oldest left out until the real reply fits `max_len` and the prompt leaves
    `room` tokens for the generated one (so the engine trims nothing and both replies share one context)."""
    persona = turns[t].speaker
    for start in range(t):
        context = turns[start:t]
        prompt = fmt.prompt(context, persona, memory, turns[t].time)
        if len(prompt) + room <= max_len and len(fmt.render([*context, turns[t]], memory).ids) <= max_len:
            return context
    return []


def session_memory(fmt: ChatFormat, session: TrainingSession, memory_tokens: int, max_len: int) -> MemoryBlock:
    budget = memory_budget(memory_tokens, max_len)
    return fmt.memory(session.recalled, budget) if session.recalled and budget else NO_MEMORY


def make_pairs(engine: HeldModelEngine, spots: list[Spot], cfg: TrainConfig, memory_tokens: int, emit: Emit) -> list:
    """A pair per spot (a zero-weight filler where the reply was dropped, equals the real one, or the context
    does not fit), the adapter's reply generated as the bot would ask for it, GENERATE_BATCH at a time (a
    draft's spot keeps its draft)."""
    fmt, room = engine.format, engine.sampling.for_retry().max_new_tokens
    asks = []  # (spot, memory, context): what the adapter is asked
    for spot in spots:
        memory = session_memory(fmt, spot.session, memory_tokens, cfg.max_seq_len)
        asks.append((spot, memory, fitted_context(fmt, spot.session.turns, spot.t, memory, cfg.max_seq_len, room)))
    own: list[list[str]] = []
    for k in range(0, len(asks), GENERATE_BATCH):
        own += asyncio.run(replies(engine, asks[k : k + GENERATE_BATCH]))
        emit({"phase": "generate", "done": len(own), "of": len(asks)})
    pairs = []
    for (spot, memory, context), reply in zip(asks, own, strict=True):
        session, real = spot.session, spot.session.turns[spot.t]
        chosen = reply_example(fmt, session.id, context, real, memory)
        if not context:  # no room for the reply: a filler of its first tokens alone
            chosen = Example(
                session.id, *(x[: cfg.max_seq_len] for x in (chosen.ids, chosen.loss, chosen.speaker)), chosen.personas
            )
        rejected = (
            reply_example(fmt, session.id, context, ChatTurn(real.speaker, tuple(reply), real.time), memory)
            if reply
            else chosen
        )
        useful = rejected.ids != chosen.ids
        pairs.append(Pair(chosen, rejected if useful else chosen, 1.0 if useful else 0.0))
    return pairs


async def replies(engine: HeldModelEngine, asks: list[tuple]) -> list[list[str]]:
    """The adapter's reply to each ask, asked together so the engine generates them as one batch."""

    async def ask(spot: Spot, memory, context) -> list[str]:
        if not context:
            return []
        if spot.draft is not None:
            return list(spot.draft)
        real, partner = spot.session.turns[spot.t], spot.session.turns[spot.t - 1].speaker
        return await engine.reply(context, real.speaker, partner, None, memory, real.time)

    return list(await asyncio.gather(*(ask(*a) for a in asks)))


@contextlib.contextmanager
def generating(peft_model):
    """The model in eval mode with plain sdpa attention while it generates: the trainer's packed attention
    takes one packed row, not a padded batch, and a KV cache (off for packing) makes decoding linear."""
    base = peft_model.get_base_model()
    attention, cache = base.config._attn_implementation, base.config.use_cache
    plain = attention == PACKED_SDPA
    if plain:
        base.set_attn_implementation("sdpa")
    base.config.use_cache = True
    peft_model.eval()
    try:
        yield
    finally:
        if plain:
            base.set_attn_implementation(attention)
        base.config.use_cache = cache


def pair_logps(model, pair: Pair, device, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the chosen and the rejected reply, in one forward of both."""
    tl = token_losses(model, pair.pack, device, chunk)
    return -tl.loss[tl.example == 0].sum(), -tl.loss[tl.example == 1].sum()


def reference(model, pairs: list[Pair], device, chunk: int) -> None:
    """The reference's log-probabilities, once per pair: the adapter as it is before this iteration's steps."""
    with torch.no_grad():
        for pair in pairs:
            c, r = pair_logps(model, pair, device, chunk)
            pair.ref = (float(c), float(r))


def dpo_terms(pi: tuple[torch.Tensor, torch.Tensor], ref: tuple[float, float], beta: float):
    """(loss, reward margin) of one pair: the margin is beta × how much more the real reply gained."""
    margin = beta * ((pi[0] - ref[0]) - (pi[1] - ref[1]))
    return -F.logsigmoid(margin), margin


class SelfPlay:
    """The stage on a trained round: `run()` returns its figures for the round's meta."""

    def __init__(self, round_, emit: Emit):
        self.r, self.cfg, self.acc = round_, round_.cfg, round_.acc
        self.emit = emit
        self.device = self.acc.device

    def spots(self) -> tuple[list[Spot], int]:
        """The same contexts on every process, the owner's edited drafts first (and how many those are); a
        leak check as the round's data makes one."""
        data = self.r.data
        eval_ids = {s.id for s in data.eval_sessions}
        if leaked := [s.id for s in data.chosen if s.split != "train" or s.id in eval_ids]:
            raise AssertionError(f"eval session in self-play contexts: {leaked[:5]}")
        owner, drafts = self.from_storage()
        drafted = draft_spots(data.chosen, drafts, Scrubber(self.r.settings.scrub_words).scrub)
        played = contexts(data.chosen, owner, self.cfg.selfplay_pairs, self.cfg.seed, drafted)
        return drafted + played, len(drafted)

    def from_storage(self) -> tuple[str | None, list[dict]]:
        """The owner's persona and the edited drafts: read by the main process (the only one that touches
        storage), sent to all."""
        got: list = [None, []]
        if self.acc.is_main_process:
            store = self.r.store
            got = [
                store.owner_slug(self.r.settings.owner_id),
                store.draft_preference_pairs() if self.cfg.selfplay_drafts else [],
            ]
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            got = broadcast_object_list(got)
        return got[0], got[1]

    def step(self, group: list[Pair], optimizer, beta: float) -> list[tuple[float, float]]:
        """One optimiser step over this process's pairs; (loss, margin) of each real one."""
        acc, world = self.acc, self.acc.num_processes
        n_global = float(acc.reduce(torch.tensor([sum(p.weight for p in group)], device=self.device), "sum")[0])
        scale = world / max(1.0, n_global)  # DDP averages over processes: × world makes it a mean over pairs
        seen = []
        for i, pair in enumerate(group):
            with contextlib.nullcontext() if i == len(group) - 1 else acc.no_sync(self.r.model):
                loss, margin = dpo_terms(
                    pair_logps(self.r.model, pair, self.device, self.cfg.loss_chunk_tokens), pair.ref, beta
                )
                acc.backward(loss * pair.weight * scale)
            if pair.weight:
                seen.append((float(loss.detach()), float(margin.detach())))
        acc.clip_grad_norm_(self.r.model.parameters(), self.cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return seen

    def iteration(self, n: int, spots: list[Spot]) -> dict:
        cfg, acc, world = self.cfg, self.acc, self.acc.num_processes
        # Every process gets as many: the first spots again, as fillers, up to a multiple of the processes.
        slots = [spots[i % len(spots)] for i in range(len(spots) + -len(spots) % world)] if spots else []
        mine = list(range(acc.process_index, len(slots), world))
        emit = lambda e: self.emit({"iteration": n, **e})  # noqa: E731
        peft = self.r.peft_model
        engine = HeldModelEngine(peft, self.r.fmt, reply_sampling(self.r.settings), cfg.max_seq_len)
        with generating(peft):
            pairs = make_pairs(engine, [slots[i] for i in mine], cfg, self.r.memory_tokens, emit)
        for i, pair in zip(mine, pairs, strict=True):
            pair.weight *= i < len(spots)  # a repeated spot is a filler
        self.r.model.train()
        reference(peft, pairs, self.device, cfg.loss_chunk_tokens)
        per_step = cfg.grad_accum
        steps = cfg.selfplay_epochs * math.ceil(len(pairs) / per_step)
        sp_cfg = cfg.model_copy(update={"learning_rate": cfg.selfplay_lr, "lr_schedule": "constant", "warmup_ratio": 0})
        optimizer, _ = make_optimizer(self.r.model, sp_cfg, steps)
        done, last = 0, []
        for epoch in range(cfg.selfplay_epochs):
            order = list(pairs)
            random.Random(cfg.seed + epoch).shuffle(order)
            last = []
            for k in range(0, len(order), per_step):
                last += self.step(order[k : k + per_step], optimizer, cfg.selfplay_beta)
                done += 1
                emit({"phase": "train", "done": done, "of": steps, "loss": last[-1][0] if last else None})
        return self.figures(n, len(spots), last)

    def figures(self, n: int, spots: int, last: list[tuple[float, float]]) -> dict:
        """The last epoch's mean loss and margin, and the share of pairs whose real reply gained more (all
        processes together)."""
        sums = torch.tensor(
            [
                len(last),
                sum(lo for lo, _ in last),
                sum(m for _, m in last),
                sum(m > 0 for _, m in last),
            ],
            device=self.device,
            dtype=torch.float64,
        )
        seen, loss, margin, ahead = self.acc.reduce(sums, "sum").tolist()
        mean = (lambda x: round(x / seen, 5)) if seen else (lambda x: None)
        return {
            "iteration": n,
            "pairs": int(seen),  # each real pair is stepped on once an epoch
            "dropped": spots - int(seen),  # replies dropped as degenerate, equal to the real one, or no room
            "loss": mean(loss),
            "margin": mean(margin),
            "accuracy": mean(ahead),
        }

    def run(self) -> dict | None:
        t0, (spots, drafts) = time.perf_counter(), self.spots()
        if not spots:  # no self-play asked for and no edited draft in this round's sessions
            return None
        if str(self.acc.distributed_type).endswith("FSDP"):
            raise UserError("self-play generates with the whole model on each process: use --strategy ddp")
        history = [self.iteration(n + 1, spots) for n in range(self.cfg.selfplay_iterations)]
        last = history[-1] if history else {}
        return {
            **{k: last.get(k) for k in ("pairs", "dropped", "loss", "margin", "accuracy")},
            "contexts": len(spots),
            "drafts": drafts,  # of the contexts, the owner's edited drafts
            "iterations": self.cfg.selfplay_iterations,
            "beta": self.cfg.selfplay_beta,
            "seconds": round(time.perf_counter() - t0, 1),
            "history": history,
        }


def run_selfplay(round_, emit: Emit) -> dict | None:
    """The self-play stage on a round that has trained; its figures for the round's meta (None: no pairs)."""
    return SelfPlay(round_, lambda e: emit({"event": "selfplay", **e})).run()
