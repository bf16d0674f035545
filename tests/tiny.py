"""Tiny models built offline for tests and benches: a byte-level BPE tokenizer trained here with the
`tokenizers` library (ChatML turn tokens like Qwen's) and a randomly initialised Qwen2 of a few hundred
thousand parameters, saved as an ordinary Hugging Face folder; or a random llama with the same tokenizer as one
GGUF file, the way llama.cpp and Ollama ship models (`build_tiny_gguf`). No download anywhere.

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


def build_tokenizer(out_dir: Path, vocab_size: int = 512, specials: list[str] | None = None, chat_tokens: bool = True):
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
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[s for s in specials if s != "<|endoftext|>"],
    )
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


# ChatML as Qwen and SmolLM2 GGUFs carry it: a GGUF has no tokenizer_config.json, the template is metadata.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_gguf(path: Path | str, seed: int = 0, hidden_size: int = 128, layers: int = 2) -> Path:
    """A random llama in f32 as one GGUF file at `path` (returned), written the way llama.cpp writes one: the
    tokenizer above as metadata (tokens, merges, token types, special ids, a ChatML template), tied embeddings.

    Weights are random, so llama.cpp's q/k row permutation (undone by transformers on load) does not matter.
    """
    import json
    import tempfile

    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built away from `path`: tokenizer files next to the GGUF would be read instead of its metadata.
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer(Path(folder))
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    special = set(tokenizer.all_special_ids)
    heads, kv_heads, ffn = 2, 1, hidden_size * 2  # head_dim 64: a size every vLLM attention backend supports
    head_dim = hidden_size // heads

    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(1024)
    writer.add_embedding_length(hidden_size)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_bos_token_id(vocab["<|endoftext|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    rng = np.random.default_rng(seed)
    weight = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)  # noqa: E731
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden_size))  # (rows, cols) as in PyTorch
    writer.add_tensor("output_norm.weight", np.ones(hidden_size, dtype=np.float32))
    for i in range(layers):
        for name, shape in (
            ("attn_q", (hidden_size, hidden_size)),
            ("attn_k", (kv_heads * head_dim, hidden_size)),
            ("attn_v", (kv_heads * head_dim, hidden_size)),
            ("attn_output", (hidden_size, hidden_size)),
            ("ffn_gate", (ffn, hidden_size)),
            ("ffn_up", (ffn, hidden_size)),
            ("ffn_down", (hidden_size, ffn)),
        ):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(hidden_size, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
