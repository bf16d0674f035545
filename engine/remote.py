"""Replies from a vLLM OpenAI-compatible server elsewhere (TWIN_ENGINE=remote, TWIN_ENGINE_URL).

The server runs with `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (see `server_command`).
Each adapter version is loaded at run time under its own name (`twin-0003`, /v1/load_lora_adapter); the
adapter used before it is unloaded once its requests in flight have finished. Prompts go as token ids to
/v1/completions, so the server never applies a chat template of its own. Adapter paths are sent as they
are: the server must see the same folder (same machine or a shared mount of the data dir).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

import aiohttp

from core.errors import UserError
from core.process import stop_group
from core.settings import Settings

from .base import AdapterRef, BaseEngine
from .base_model import base_model_path
from .decoding import Generation, Sampling
from .vllm_engine import vllm_dtype

log = logging.getLogger(__name__)

# A reply from a busy CPU server can take tens of seconds; past this the chat is better off without one.
REQUEST_TIMEOUT_S = 300
# Idle pooled connections are dropped before the server's keep-alive (uvicorn's, 5 s in vLLM) closes them,
# else a request can go out on a connection the server is closing (ServerDisconnectedError under load).
CLIENT_KEEPALIVE_S = 2.0


class RemoteError(UserError):
    pass


def server_command(settings: Settings, host: str, port: int, max_lora_rank: int) -> list[str]:
    """The command that starts a vLLM server this engine can use (set VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        base_model_path(settings),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank),
        "--max-loras",
        str(settings.vllm_max_loras),
        "--max-model-len",
        str(settings.vllm_max_model_len),
        "--dtype",
        vllm_dtype(settings.vllm_dtype),
        "--gpu-memory-utilization",
        str(settings.vllm_gpu_memory_utilization),
        "--tensor-parallel-size",
        str(settings.vllm_tensor_parallel_size),
    ]
    if settings.vllm_quantization:
        argv += ["--quantization", settings.vllm_quantization]
    return argv


def start_local_server(settings: Settings, max_lora_rank: int, timeout_s: float = 300) -> tuple[subprocess.Popen, str]:
    """Start `server_command` on 127.0.0.1 (a free port) with runtime LoRA loading; returns (process, url).

    For tests and benches on one machine; stop it with `stop_local_server`.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HF_HUB_OFFLINE": "1"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    argv = server_command(settings, "127.0.0.1", port, max_lora_rank)
    # Its own session, so stopping it also stops the engine processes it starts.
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, argv, timeout_s)
    except BaseException:  # also Ctrl-C: the server has its own session, so nothing else would stop it
        stop_local_server(proc)
        raise
    return proc, url


def _wait_healthy(proc: subprocess.Popen, url: str, argv: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # the engine processes it started may outlive it: stopped by the caller
            raise RemoteError(f"the vLLM server exited with code {proc.returncode}: run {' '.join(argv)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RemoteError(f"the vLLM server did not answer within {timeout_s:.0f} s")


def stop_local_server(proc: subprocess.Popen) -> None:
    """Stop a server from `start_local_server` and the processes it started (its session), also when the
    server itself is gone already (its engine core would otherwise live on, holding gigabytes)."""
    stop_group(proc.pid, reap=proc.poll)  # TERM the whole group, wait for every member, then KILL
    proc.wait()


class RemoteEngine(BaseEngine):
    name = "remote"
    transient_errors = (aiohttp.ClientError, ConnectionError, TimeoutError)

    def __init__(self, settings: Settings, sampling: Sampling | None = None):
        super().__init__(sampling)
        self.settings = settings
        self.url = settings.require("engine_url").rstrip("/")
        self._http: aiohttp.ClientSession | None = None
        self._base_model = ""
        self._loaded: set[int] = set()  # adapter versions loaded on the server under their names
        self._in_flight: Counter[int] = Counter()
        self._locks: dict[int, asyncio.Lock] = {}
        self._latest: int | None = None  # the adapter of the most recent request: the one kept loaded

    async def start(self) -> None:
        from transformers import AutoTokenizer

        from core.format import ChatFormat

        self._http = self.open_session()
        try:
            async with self._http.get(f"{self.url}/v1/models") as resp:
                resp.raise_for_status()
                models = (await resp.json())["data"]
        except (aiohttp.ClientError, OSError, KeyError) as exc:
            await self._http.close()
            raise RemoteError(
                f"no vLLM server at TWIN_ENGINE_URL={self.url} ({exc}): start one with "
                "--enable-lora, or set TWIN_ENGINE=auto"
            ) from None
        base = next(m for m in models if not m.get("parent"))
        self._base_model = base["id"]
        self.max_context = base.get("max_model_len") or self.settings.vllm_max_model_len
        for m in models:  # adapters a previous run of twin left loaded
            if m.get("parent") and m["id"].startswith("twin-") and m["id"][5:].isdigit():
                self._loaded.add(int(m["id"][5:]))
        # TWIN_BASE_MODEL when set (a GGUF as the folder it converts to), else what the server says it serves.
        tokenizer_from = (
            await asyncio.to_thread(base_model_path, self.settings)
            if self.settings.base_model
            else base.get("root") or base["id"]
        )
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, tokenizer_from)
        self.format = ChatFormat(tokenizer)
        self.base_model = tokenizer_from  # checked against adapters only when its files are here too
        log.info("remote engine ready: %s at %s, context %d", self._base_model, self.url, self.max_context)

    def open_session(self) -> aiohttp.ClientSession:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(keepalive_timeout=CLIENT_KEEPALIVE_S),
        )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def generate(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> Generation:
        version = adapter.version if adapter else 0
        self._in_flight[version] += 1
        if adapter is not None:
            self._latest = adapter.version
        try:
            for attempt in range(2):
                if adapter is not None:
                    await self._ensure_loaded(adapter)
                status, data = await self._post("/v1/completions", self._body(prompt_ids, adapter, sampling))
                if status == 404 and adapter is not None and attempt == 0:
                    self._loaded.discard(adapter.version)  # the server restarted and forgot it: load again
                    continue
                if status != 200:
                    raise RemoteError(f"vLLM server {self.url} answered {status}: {data}")
                return self._generation(data["choices"][0], sampling)
        finally:
            self._in_flight[version] -= 1
            await self._unload_idle()
        raise AssertionError("unreachable")

    def _body(self, prompt_ids: list[int], adapter: AdapterRef | None, sampling: Sampling) -> dict[str, Any]:
        body = {
            "model": adapter.name if adapter else self._base_model,
            "prompt": prompt_ids,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "repetition_penalty": sampling.repetition_penalty,
            "stop_token_ids": self.format.stop_token_ids,
            "return_token_ids": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.min_p:  # vLLM's extra sampling parameter; left out when off, for other servers
            body["min_p"] = sampling.min_p
        if sampling.logprobs:
            body["logprobs"] = 0  # only the chosen token's
        return body

    def _generation(self, choice: dict[str, Any], sampling: Sampling) -> Generation:
        ids = choice.get("token_ids")
        if ids is None:  # a server older than return_token_ids: re-encode its text
            ids = self.format.tokenizer(choice["text"], add_special_tokens=False)["input_ids"]
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or [] if sampling.logprobs else []
        return Generation(
            token_ids=list(ids),
            finished=choice.get("finish_reason") == "stop",
            logprobs=[lp for lp in logprobs if lp is not None],
        )

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            return await self._post_once(path, body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError, aiohttp.ClientOSError):
            # Most often a pooled connection the server closed as the request went out. Once more, on a fresh
            # connection: every call here is safe to repeat (a completion, or an adapter load that tolerates
            # "already loaded"); a server that is really gone fails the second try too.
            return await self._post_once(path, body)

    async def _post_once(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self._http.post(f"{self.url}{path}", json=body) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            return resp.status, data

    async def _ensure_loaded(self, adapter: AdapterRef) -> None:
        async with self._locks.setdefault(adapter.version, asyncio.Lock()):
            if adapter.version in self._loaded:
                return
            status, data = await self._post(
                "/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": str(adapter.path)}
            )
            if status != 200 and "already been loaded" not in str(data):
                hint = ""
                if status == 404:
                    hint = ": start the server with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"
                raise RemoteError(f"loading adapter {adapter.version} into {self.url} failed ({status}: {data}){hint}")
            self._loaded.add(adapter.version)
            log.info("remote: loaded adapter %s from %s", adapter.name, adapter.path)

    async def release(self, version: int) -> None:
        if self._latest == version:
            self._latest = None
        await self._unload_idle()  # now, or when its last request in flight ends

    async def _unload_idle(self) -> None:
        """Unload adapters other than the latest one once nothing runs on them (older versions)."""
        for version in sorted(self._loaded):
            if version == self._latest or self._in_flight[version] > 0:
                continue
            async with self._locks.setdefault(version, asyncio.Lock()):
                if version not in self._loaded or self._in_flight[version] > 0:
                    continue
                self._loaded.discard(version)
                name = f"twin-{version:04d}"
                status, data = await self._post("/v1/unload_lora_adapter", {"lora_name": name})
                if status != 200:
                    log.warning("remote: unloading %s failed (%s: %s)", name, status, data)
                else:
                    log.info("remote: unloaded %s", name)
