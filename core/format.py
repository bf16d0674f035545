"""The conversation format: how turns become token ids and a loss mask, for training and for replies.

One class renders both, so the trainer and the bot can never disagree about a prompt:

* `render(turns)` → `Rendered(ids, mask)` for training. **mask=1** marks tokens the model learns to
  produce: every speaker's message text, the burst separators inside it and the end-of-turn token.
  **mask=0** marks what is given, never predicted: speaker headers, the BOS token and the newline between
  turns. Loss on every speaker (not only the owner) lets the model play any persona later.
* `prompt(turns, persona)` → the ids of `render(turns)` followed by `persona`'s header: exactly the prefix
  the model saw in training before `persona` spoke. Generation stops at the end-of-turn token.

Example with a ChatML tokenizer (Qwen) — the owner `alice` answers `bob` in a burst of two messages:

    <|im_start|>bob\n          mask 0  (header)
    are you coming?<|im_end|>   mask 1  (text + end-of-turn)
    \n<|im_start|>alice\n      mask 0
    yes\n---\n10 min<|im_end|>  mask 1  ("\n---\n" separates the burst's messages)

With time marks on (core.timemarks), a `(time)` block (mask 0) comes before a session's first turn and before
a turn after a long pause; `prompt(..., time=...)` puts one before the reply's header:

    <|im_start|>(time)\nSaturday night, 23:40 · 3 days since the last message<|im_end|>\n   mask 0
    <|im_start|>bob\n ...

A memory block may come first (`memory(...)`, mask 0): earlier exchanges the twin recalls, under a header
no persona can have, one `speaker: message` line per message and a blank line between exchanges:

    <|im_start|>(memory)\n    mask 0
    bob: where do you study?\nalice: physics at MIT<|im_end|>\n   mask 0
    <|im_start|>bob\n ...

Llama-3 tokenizers use `<|start_header_id|>name<|end_header_id|>\n\n ... <|eot_id|>`; a tokenizer with
neither uses `### name:\n ... </s>` (its EOS). No token is ever added: vLLM cannot serve LoRA adapters
that train embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.timemarks import TIME_HEADER

BURST_SEP = "\n---\n"
# The memory block's header: parentheses never occur in a persona slug, so no one can be "(memory)".
MEMORY_HEADER = "(memory)"
# Between two recalled exchanges in the memory block.
MEMORY_GAP = "\n\n"
_SEP_LINE = re.compile(r"^---$", re.M)


@dataclass(frozen=True)
class ChatTurn:
    """One speaker's burst, as the format sees it: a header name (persona slug) and its messages."""

    speaker: str
    messages: tuple[str, ...]
    time: str = ""  # the time mark shown before this turn (core.timemarks); "" for none


@dataclass(frozen=True)
class Recalled:
    """An earlier exchange the twin remembers: its turns, oldest first, and when its best hit was said."""

    turns: tuple[ChatTurn, ...]
    date: int  # unix seconds


def memory_text(recalled: Sequence[Recalled]) -> str:
    """The memory block's body: one `speaker: message` line per message, a blank line between exchanges."""
    return MEMORY_GAP.join(
        "\n".join(f"{turn.speaker}: {' '.join(m.split())}" for turn in r.turns for m in turn.messages) for r in recalled
    )


@dataclass(frozen=True)
class MemoryBlock:
    """The memory part of a prompt: the exchanges that fit its token budget, and their ids (all mask 0)."""

    recalled: tuple[Recalled, ...] = ()
    ids: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        return memory_text(self.recalled)


NO_MEMORY = MemoryBlock()


@dataclass
class Rendered:
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1 = learn to produce this token, 0 = given
    turn_starts: list[int] = field(default_factory=list)  # index in ids where each turn's header begins
    prefix_len: int = 0  # BOS and memory block: what comes before the first turn


def join_burst(messages: Sequence[str]) -> str:
    """A burst's messages joined by the separator; a `---` line inside a message is defused to `--`.

    Every such line, also a first or last one: a message ending in a `---` line would otherwise merge
    with the separator and split back at the wrong place.
    """
    return BURST_SEP.join(_SEP_LINE.sub("--", m.strip()) for m in messages)


# Control characters (but newline and tab) that a weak model may emit; Telegram rejects or garbles them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def split_burst(text: str) -> list[str]:
    """Generated text → the messages of a burst (blank parts and control characters dropped)."""
    parts = (_CONTROL.sub("", part).strip() for part in text.split(BURST_SEP))
    return [part for part in parts if part]


class ChatFormat:
    """Renders turns with one tokenizer. Build it once per tokenizer and share it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
            self.style = "chatml"
            self._open, self._close, self.eot_id = [vocab["<|im_start|>"]], "\n", vocab["<|im_end|>"]
        elif all(t in vocab for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")):
            self.style = "llama3"
            self._open, self.eot_id = [vocab["<|start_header_id|>"]], vocab["<|eot_id|>"]
            self._end_header = [vocab["<|end_header_id|>"]]
        elif tokenizer.eos_token_id is not None:
            self.style = "plain"
            self._open, self._close, self.eot_id = [], ":\n", tokenizer.eos_token_id
        else:
            raise ValueError("the tokenizer has no chat-turn tokens and no EOS token: pick another base model")
        bos = tokenizer.bos_token_id
        # Only prepend BOS where the tokenizer would add it itself (Llama does, Qwen has none).
        adds_bos = bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
        self._bos = [bos] if adds_bos else []
        self._turn_gap = self._encode("\n")

    def _encode(self, text: str) -> list[int]:
        # split_special_tokens: a message that types "<|im_end|>" must not end its turn.
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def header(self, speaker: str, first: bool) -> list[int]:
        """The ids that open `speaker`'s turn (mask 0)."""
        gap = [] if first else self._turn_gap
        if self.style == "chatml":
            return gap + self._open + self._encode(f"{speaker}\n")
        if self.style == "llama3":
            return gap + self._open + self._encode(speaker) + self._end_header + self._encode("\n\n")
        return gap + self._encode(f"### {speaker}{self._close}")

    def memory(self, recalled: Sequence[Recalled], budget: int) -> MemoryBlock:
        """The memory block of the exchanges, in the order given, that fit `budget` tokens together (an
        exchange too long to fit is left out and the next one tried)."""
        used: list[Recalled] = []
        ids: list[int] = []
        for r in recalled:
            trial = self._memory_ids([*used, r])
            if len(trial) <= budget:
                used, ids = [*used, r], trial
        return MemoryBlock(tuple(used), tuple(ids))

    def _memory_ids(self, recalled: Sequence[Recalled]) -> list[int]:
        return self.header(MEMORY_HEADER, first=True) + self._encode(memory_text(recalled)) + [self.eot_id]

    def render(self, turns: Sequence[ChatTurn], memory: MemoryBlock = NO_MEMORY) -> Rendered:
        """Turns (after the memory block, if any) → ids and loss mask."""
        out = Rendered(ids=list(self._bos) + list(memory.ids), mask=[0] * (len(self._bos) + len(memory.ids)))
        out.prefix_len = len(out.ids)
        for i, turn in enumerate(turns):
            out.turn_starts.append(len(out.ids))  # a turn begins with its time mark, if it has one
            first = i == 0 and not memory.ids
            if turn.time:
                mark = self._time_ids(turn.time, first)
                out.ids += mark
                out.mask += [0] * len(mark)
                first = False
            head = self.header(turn.speaker, first=first)
            body = self._encode(join_burst(turn.messages)) + [self.eot_id]
            out.ids += head + body
            out.mask += [0] * len(head) + [1] * len(body)
        return out

    def prompt(
        self, turns: Sequence[ChatTurn], persona: str, memory: MemoryBlock = NO_MEMORY, time: str = ""
    ) -> list[int]:
        """Memory block, context turns, the reply's time mark if any, then `persona`'s header: the model
        continues as `persona`."""
        ids = self.render(turns, memory).ids
        first = not turns and not memory.ids
        if time:
            ids += self._time_ids(time, first)
            first = False
        return ids + self.header(persona, first=first)

    def _time_ids(self, mark: str, first: bool) -> list[int]:
        return self.header(TIME_HEADER, first) + self._encode(mark) + [self.eot_id]

    @property
    def stop_token_ids(self) -> list[int]:
        """End of turn, and the token that opens a header (ChatML, Llama-3): a turn never holds a header, so a
        model that opens one has ended its turn (else "user\nCan you help me…" went out as a message)."""
        return [self.eot_id, *self._open]

    def decode_reply(self, ids: Sequence[int]) -> list[str]:
        """Generated ids (up to, maybe including, a stop token) → the burst's messages."""
        ids = list(ids)
        stops = set(self.stop_token_ids)
        ids = ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]
        # No clean-up: it would turn "ну ?" into "ну?" (transformers < 5 applies it to BPE tokenizers too).
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return split_burst(text)

    def text(self, turns: Sequence[ChatTurn], memory: MemoryBlock = NO_MEMORY) -> str:
        """Human-readable rendering (for docs, `--dry-run` and debugging)."""
        return self.tokenizer.decode(self.render(turns, memory).ids)
