"""Tiny models built offline for tests and benches: a byte-level BPE tokenizer trained here with the
`tokenizers` library (ChatML turn tokens like Qwen's) and a randomly initialised Qwen2 of a few hundred
thousand parameters, saved as an ordinary Hugging Face folder. No download anywhere.

    python -m tests.tiny OUT_DIR      # build one by hand (e.g. TWIN_BASE_MODEL=OUT_DIR for `twin train`)
"""

from __future__ import annotations

import sys
from pathlib import Path

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "hey how are you? fine thanks, and you? let's meet at 7 pm tomorrow",
    "ok see you then --- bring the book please",
    "привет как дела? нормально, а у тебя? давай встретимся завтра",
    "你好 你怎么样 我很好 明天见",
    "lol 😂 haha yes no maybe what why when where who",
    "the quick brown fox jumps over the lazy dog 0123456789 !?.,:;-()[]",
    "alice bob carol dave sasha owner friend persona",
]


def build_tokenizer(out_dir: Path, vocab_size: int = 512, specials: list[str] | None = None,
                    chat_tokens: bool = True):  # fmt: skip
    """Train a byte-level BPE tokenizer and save it as a transformers fast tokenizer in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = specials or (CHATML_SPECIALS if chat_tokens else ["<|endoftext|>"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=[s for s in specials if s != "<|endoftext|>"],
    )  # fmt: skip
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: Path | str, seed: int = 0, hidden_size: int = 128, layers: int = 2) -> Path:
    """A random Qwen2 with the tokenizer above, in fp32, saved to `out_dir` (returned)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,  # head_dim 64: a size every vLLM attention backend supports
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    model.generation_config.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
