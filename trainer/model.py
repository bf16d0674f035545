"""The base model and its LoRA adapter: load, attach (fresh or from a parent adapter), pick the dtype."""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path

import torch

from trainer.config import TrainConfig
from trainer.packing import register_packed_attention

log = logging.getLogger(__name__)


# glibc's malloc raises its mmap threshold after each large free, so later activations come from a heap that
# never shrinks: a CPU round's RSS grew to 7.4 GB where 4.1 GB were ever live (bench/train.py --part memory).
MMAP_THRESHOLD = 64 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def return_freed_memory() -> None:
    """Serve large allocations with mmap, handed back to the OS when freed, instead of glibc's growing heap
    (a fixed threshold also stops glibc from raising it). Once per process, before training; Linux only."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (half the memory, full range); fp32 elsewhere (bf16 on CPU is slow)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def attention_for(device: torch.device) -> str:
    """An attention that keeps packed examples apart without computing across them: flash-attention 2 on
    GPUs that have it (variable-length sequences from position_ids), else sdpa per example (packing.py)."""
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return register_packed_attention()


def load_base(base_model: str, dtype: torch.dtype, device: torch.device):
    """The frozen base model in `dtype` on `device`, with an attention that keeps packed examples apart."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, attn_implementation=attention_for(device))
    model.config.use_cache = False  # a cache would switch off packed-sequence masking
    return model.to(device)


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    # No modules_to_save, no DoRA, no new tokens: vLLM must be able to serve every adapter.
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model, cfg: TrainConfig, parent: Path | None = None):
    """A trainable LoRA on `model`: continued from the `parent` adapter folder, or freshly initialised."""
    from peft import PeftModel, get_peft_model

    if parent is not None:
        log.info("continuing from adapter %s", parent)
        peft_model = PeftModel.from_pretrained(model, str(parent), is_trainable=True)
    else:
        peft_model = get_peft_model(model, lora_config(cfg))
    if cfg.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model
