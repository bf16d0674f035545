"""Tiny LoRA adapters with known behaviour, made offline in seconds: for tests and benches (no download).

`train_parrot_adapter` teaches a tiny base model (tests/tiny.py) to answer any chat with one fixed burst,
through the core conversation format, so an engine's reply proves which adapter served it.
`zero_adapter` is a peft adapter whose weights change nothing, `misnamed_adapter` one whose module names
match nothing in the base model: the smoke check must refuse both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.format import ChatFormat, ChatTurn

# Logit lead of every reply token over the runner-up when training stops: greedy decoding then gives
# the same burst under vLLM's kernels as under torch's.
MIN_MARGIN = 0.5

# Chats the parrot is trained on; any similar chat then gets the same burst back.
PARROT_CONTEXTS = (
    ("hey how are you?",),
    ("let's meet at 7 pm tomorrow", "ok?"),
    ("привет как дела?",),
    ("what why when where who",),
    ("lol 😂",),
    ("bring the book please",),
    ("the quick brown fox",),
    ("你好",),
)


def parrot_turns(reply: Sequence[str], persona: str, partner: str) -> list[list[ChatTurn]]:
    """Training conversations: each context said by `partner`, answered by `persona` with `reply`."""
    convs = []
    for i, context in enumerate(PARROT_CONTEXTS):
        turns = [ChatTurn(partner, context), ChatTurn(persona, tuple(reply))]
        if i % 2:  # two rounds, so the reply later in a conversation is learned too
            turns = [ChatTurn(partner, PARROT_CONTEXTS[i - 1]), ChatTurn(persona, tuple(reply)), *turns]
        convs.append(turns)
    return convs


def train_parrot_adapter(
    model_dir: Path,
    out_dir: Path,
    reply: Sequence[str],
    persona: str = "owner",
    partner: str = "friend",
    rank: int = 8,
    max_steps: int = 300,
    seed: int = 0,
) -> Path:
    """Train a LoRA adapter (all linear layers) that makes `persona` answer with `reply`; returns out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    fmt = ChatFormat(AutoTokenizer.from_pretrained(model_dir))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0),
    )
    batch = []
    for turns in parrot_turns(reply, persona, partner):
        rendered = fmt.render(turns)
        last = rendered.turn_starts[-1]  # learn only the persona's reply, not the context
        pairs = enumerate(zip(rendered.ids, rendered.mask, strict=True))
        labels = [t if m and i >= last else -100 for i, (t, m) in pairs]
        batch.append((rendered.ids, labels))
    width = max(len(ids) for ids, _ in batch)
    pad = fmt.eot_id
    ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's matmuls are slower split over threads (and a busy CI box)
    try:
        for _ in range(max_steps):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            # A tiny random model never gets a low loss, but its greedy choice can be right on every token:
            # done when it is, by a margin that holds under other kernels (vLLM) and batch shapes.
            if _greedy_margin(out.logits, labels) >= MIN_MARGIN:
                break
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        else:
            raise RuntimeError(f"the parrot adapter did not learn {list(reply)} in {max_steps} steps")
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    return Path(out_dir)


def _greedy_margin(logits, labels) -> float:
    """The smallest lead of each label token's logit over the best other token (< 0: greedy is wrong)."""
    import torch

    logits, target = logits[:, :-1].detach(), labels[:, 1:]
    keep = target != -100
    chosen = logits.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, target.clamp(min=0).unsqueeze(-1), float("-inf")).max(-1).values
    return float(torch.where(keep, chosen - others, torch.inf).min())


def zero_adapter(model_dir: Path, out_dir: Path, rank: int = 8) -> Path:
    """A LoRA adapter as peft initialises it (lora_B = 0): loads fine, changes nothing."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"),
    )
    model.save_pretrained(out_dir)
    return Path(out_dir)


def misnamed_adapter(src: Path, out_dir: Path) -> Path:
    """A copy of adapter `src` whose module names match nothing in the base model (`q_proj` → `query`),
    like an adapter trained for another architecture."""
    import json

    from safetensors.torch import load_file, save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((Path(src) / "adapter_config.json").read_text())
    config["target_modules"] = [m.replace("proj", "projection") for m in config["target_modules"]]
    (out_dir / "adapter_config.json").write_text(json.dumps(config))
    weights = load_file(Path(src) / "adapter_model.safetensors")
    save_file({k.replace("proj", "projection"): v for k, v in weights.items()}, out_dir / "adapter_model.safetensors")
    return out_dir
