"""Replies from transformers + peft: the fallback for machines without vLLM (a laptop, CPU only).

Generation runs on one worker thread, never on the event loop. Requests that arrive within a few
milliseconds of each other are batched: grouped by adapter and sampling, left-padded, generated together.
peft keeps a few adapters loaded by version and switches between them per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

from core.settings import Settings

from .base import AdapterRef, BaseEngine
from .base_model import base_model_path
from .decoding import Generation, Sampling

log = logging.getLogger(__name__)

# Wait this long after a request for others to batch with it: a few ms of latency saves whole passes.
BATCH_WINDOW_S = 0.005
# Larger batches grow the padded batch's memory; 32 covers a busy evening of chats.
MAX_BATCH = 32
# Adapters kept loaded in peft (the active one, the one being promoted, a spare); older ones are deleted.
MAX_LOADED_ADAPTERS = 3


@dataclass
class _Request:
    prompt_ids: list[int]
    adapter: AdapterRef | None
    sampling: Sampling
    future: asyncio.Future = field(repr=False)


class TransformersEngine(BaseEngine):
    name = "transformers"

    def __init__(self, settings: Settings, sampling: Sampling | None = None):
        super().__init__(sampling)
        self.settings = settings
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-generate")
        self._queue: asyncio.Queue[_Request] | None = None
        self._batcher: asyncio.Task | None = None
        self._model = None  # the base model, or the PeftModel wrapping it once an adapter is loaded
        self._loaded: OrderedDict[int, str] = OrderedDict()  # version → peft adapter name, oldest first
        self.batch_sizes: list[int] = []  # sizes of the batches generated so far (tests, benches)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._load_base)
        self._queue = asyncio.Queue()
        self._batcher = asyncio.create_task(self._batch_forever(), name="twin-batcher")

    def _load_base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.format import ChatFormat

        model_name = base_model_path(self.settings)
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        self.format = ChatFormat(tokenizer)
        self.base_model = model_name
        self._stops, self._pad_id = stops_and_pad(self.format)
        # bf16 halves memory on a GPU that has it; older GPUs (T4, V100) and CPUs compute it slowly: fp32 there.
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=dtype)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = model.to(self._device).eval()
        positions = getattr(model.config, "max_position_embeddings", None) or self.settings.vllm_max_model_len
        self.max_context = min(positions, self.settings.vllm_max_model_len)
        log.info("transformers engine ready: %s on %s, context %d", model_name, self._device, self.max_context)

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._worker.shutdown(wait=True)

    async def generate(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> Generation:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(list(prompt_ids), adapter, sampling, future))
        return await future

    async def _batch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            await asyncio.sleep(BATCH_WINDOW_S)
            while not self._queue.empty() and len(pending) < MAX_BATCH:
                pending.append(self._queue.get_nowait())
            groups: dict[tuple, list[_Request]] = {}
            for request in pending:
                key = (request.adapter.version if request.adapter else 0, request.sampling)
                groups.setdefault(key, []).append(request)
            for group in groups.values():
                group = [r for r in group if not r.future.cancelled()]
                if not group:
                    continue
                try:
                    results = await loop.run_in_executor(self._worker, self._generate_batch, group)
                except Exception as exc:  # one bad batch fails its requests, not the engine
                    for r in group:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                for r, result in zip(group, results, strict=True):
                    if not r.future.done():
                        r.future.set_result(result)

    async def release(self, version: int) -> None:
        if version in self._loaded:
            await asyncio.get_running_loop().run_in_executor(self._worker, self._unload, version)

    # -- on the worker thread ----------------------------------------------------------------------------
    def _use_adapter(self, adapter: AdapterRef | None):
        """The model to generate with: peft switched to `adapter`, or the base model (None)."""
        from peft import PeftModel

        if adapter is None:
            return self._model
        if adapter.version not in self._loaded:
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(str(adapter.path), adapter_name=adapter.name)
            else:
                self._model = PeftModel.from_pretrained(self._model, str(adapter.path), adapter_name=adapter.name)
            self._model.eval()
            self._loaded[adapter.version] = adapter.name
            while len(self._loaded) > MAX_LOADED_ADAPTERS:
                _, old = self._loaded.popitem(last=False)
                self._model.delete_adapter(old)
        self._loaded.move_to_end(adapter.version)
        self._model.set_adapter(adapter.name)
        return self._model

    def _unload(self, version: int) -> None:
        if (name := self._loaded.pop(version, None)) is not None:
            self._model.delete_adapter(name)

    def _generate_batch(self, group: list[_Request]) -> list[Generation]:
        from peft import PeftModel

        adapter, sampling = group[0].adapter, group[0].sampling
        model = self._use_adapter(adapter)
        # An adapter-less batch on a PeftModel must not pick up the last adapter set.
        base_only = adapter is None and isinstance(self._model, PeftModel)
        with model.disable_adapter() if base_only else nullcontext():
            out = generate_batch(model, [r.prompt_ids for r in group], sampling, self._stops, self._pad_id)
        self.batch_sizes.append(len(group))
        return out


def stops_and_pad(fmt) -> tuple[list[int], int]:
    """Where generation stops (end of turn, and the tokenizer's EOS as vLLM also stops there) and what pads."""
    tokenizer = fmt.tokenizer
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.eot_id
    return list(dict.fromkeys(fmt.stop_token_ids + eos)), pad


def generate_batch(
    model, prompts: list[list[int]], sampling: Sampling, stops: list[int], pad_id: int
) -> list[Generation]:
    """One `model.generate` over left-padded prompts with `sampling`: the engine's decoding, also used by the
    trainer's self-play stage on the model it holds in memory."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not sampling.greedy,
        eos_token_id=stops,
        pad_token_id=pad_id,
        repetition_penalty=sampling.repetition_penalty,
        return_dict_in_generate=True,
        output_logits=sampling.logprobs,
    )
    if not sampling.greedy:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, min_p=sampling.min_p or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    return [_one(out, row, width, stops) for row in range(len(prompts))]


def _one(out, row: int, width: int, stops: list[int]) -> Generation:
    new = out.sequences[row, width:].tolist()
    end = next((i for i, t in enumerate(new) if t in set(stops)), None)
    ids = new if end is None else new[: end + 1]
    logprobs = []
    if out.logits is not None:
        for step, token in enumerate(ids):
            logprobs.append(out.logits[step][row].float().log_softmax(-1)[token].item())
    return Generation(token_ids=ids, finished=end is not None, logprobs=logprobs)


class HeldModelEngine(BaseEngine):
    """The engine's reply logic (prompt fitting, degenerate retry and drop) over a model already in memory:
    the trainer's self-play stage asks the adapter it is training, as the bot would ask it once served.
    Replies asked for together (one `asyncio.gather`) are generated as one batch per sampling."""

    name = "held-model"

    def __init__(self, model, fmt, sampling: Sampling, max_context: int):
        super().__init__(sampling)
        self.model, self.format, self.max_context = model, fmt, max_context
        self._stops, self._pad_id = stops_and_pad(fmt)
        self._pending: list[tuple[list[int], Sampling, asyncio.Future]] = []

    async def start(self) -> None:
        """Nothing to load: the model is the caller's."""

    async def close(self) -> None:
        """Nothing to free: the model is the caller's."""

    async def generate(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> Generation:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(prompt_ids), sampling, future))
        await asyncio.sleep(0)  # the other replies of the same gather queue theirs before the first one runs
        self._run_pending()
        return await future

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[Sampling, list] = {}
        for request in pending:
            groups.setdefault(request[1], []).append(request)
        for sampling, group in groups.items():
            out = generate_batch(self.model, [r[0] for r in group], sampling, self._stops, self._pad_id)
            for (_, _, future), generation in zip(group, out, strict=True):
                future.set_result(generation)
