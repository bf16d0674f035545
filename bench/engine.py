"""Bench the reply engines: how much faster 32 concurrent chats are served than one chat at a time (goal
for vLLM ≥ 8×), and how long a promoted adapter takes to serve its first reply (no restart).

By default on the tiny model of the tests (built here, offline) with two tiny adapters trained here; pass
--model and --adapters to bench a real base model and three of its adapters.

    python bench/engine.py                                  # vllm, transformers and remote
    python bench/engine.py --engines vllm --chats 64
    python bench/engine.py --model Qwen/Qwen2.5-1.5B-Instruct --adapters data/adapters/000{2,3,4}
    python bench/engine.py --decoding --data-dir data   # greedy vs sampling on your held-out chats
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.format import ChatTurn  # noqa: E402
from core.settings import Settings  # noqa: E402
from engine.base import AdapterRef  # noqa: E402
from engine.build import reply_sampling  # noqa: E402
from storage import Storage  # noqa: E402

GOAL_RATIO = {"vllm": 8.0}
PERSONA, PARTNER = "owner", "friend"
# What the tiny adapters answer (greedy): 1 is active first, 2 and 3 are promoted while the engine runs.
SAYS = [("ok see you", "bring the book"), ("see you", "lol 😂"), ("yes",)]


def chat(i: int) -> list[ChatTurn]:
    """A different short conversation per chat, as the bot sees many chats at once."""
    openers = ["hey how are you?", "let's meet at 7 pm tomorrow", "lol 😂", "bring the book please"]
    return [
        ChatTurn(PARTNER, (openers[i % len(openers)],)),
        ChatTurn(PERSONA, ("ok",)),
        ChatTurn(PARTNER, (f"and what about {i}?",)),
    ]


def tiny_setup(work: Path) -> tuple[Path, list[Path]]:
    from tests.adapters import train_parrot_adapter
    from tests.tiny import build_tiny_model

    model = build_tiny_model(work / "model")
    adapters = work / "adapters"
    return model, [train_parrot_adapter(model, adapters / f"{i + 1:04d}", says, seed=i) for i, says in enumerate(SAYS)]


class Recorder:
    """Wraps an engine's generate: which adapter each reply (not smoke-check probe) used, and its length."""

    def __init__(self, engine):
        self.replies: list[tuple[int, int]] = []  # (adapter version or 0, generated tokens)
        inner = engine.generate

        async def generate(prompt_ids, adapter, sampling):
            gen = await inner(prompt_ids, adapter, sampling)
            if not sampling.logprobs:
                self.replies.append((adapter.version if adapter else 0, len(gen.token_ids)))
            return gen

        engine.generate = generate

    def served_by(self, version: int) -> bool:
        return any(v == version for v, _ in self.replies)


def build(kind: str, settings: Settings, refs: list[AdapterRef]):
    """The engine of `kind`, and the local vLLM server it talks to for `remote` (else None)."""
    sampling = reply_sampling(settings)
    if kind == "vllm":
        from engine.vllm_engine import VLLMEngine

        return VLLMEngine(settings, sampling, refs), None
    if kind == "transformers":
        from engine.transformers_engine import TransformersEngine

        return TransformersEngine(settings, sampling), None
    from engine.remote import RemoteEngine, start_local_server
    from engine.vllm_engine import max_lora_rank

    server, url = start_local_server(settings, max_lora_rank(r.rank for r in refs))
    return RemoteEngine(settings.model_copy(update={"engine_url": url}), sampling), server


async def bench_engine(kind: str, settings: Settings, store: Storage, sequential: int, chats: int) -> dict:
    refs = [AdapterRef.from_row(row) for row in store.adapters()]
    store.activate_adapter(refs[0].version)
    engine, server = build(kind, settings, refs)
    t0 = time.perf_counter()
    await engine.start()
    figures = {"engine": kind, "start_s": time.perf_counter() - t0}
    recorder = Recorder(engine)
    try:
        active = AdapterRef.from_row(store.active_adapter())
        await engine.reply(chat(0), PERSONA, PARTNER, active)  # warm-up, and the smoke check
        t0 = time.perf_counter()
        for i in range(sequential):
            await engine.reply(chat(i), PERSONA, PARTNER, active)
        figures["one_at_a_time_rps"] = sequential / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[engine.reply(chat(i), PERSONA, PARTNER, active) for i in range(chats)])
        figures["concurrent_rps"] = chats / (time.perf_counter() - t0)
        figures["ratio"] = figures["concurrent_rps"] / figures["one_at_a_time_rps"]
        figures["tokens_per_reply"] = sum(n for _, n in recorder.replies) / len(recorder.replies)
        figures["promotion_idle_s"] = await promotion_latency(engine, recorder, store, refs[1].version, 0)
        figures["promotion_busy_s"] = await promotion_latency(engine, recorder, store, refs[2].version, chats)
    finally:
        await engine.close()
        if server is not None:
            from engine.remote import stop_local_server

            stop_local_server(server)
    return figures


async def promotion_latency(engine, recorder: Recorder, store: Storage, version: int, busy: int) -> float:
    """Seconds from promoting `version` in storage to the end of the first reply it served, with `busy`
    chats still being answered by the previous adapter."""
    old = AdapterRef.from_row(store.active_adapter())
    in_flight = [asyncio.create_task(engine.reply(chat(i), PERSONA, PARTNER, old)) for i in range(busy)]
    await asyncio.sleep(0.05 if busy else 0)  # let them start
    t0 = time.perf_counter()
    store.activate_adapter(version)  # what the trainer does; the engine keeps running
    active = AdapterRef.from_row(store.active_adapter())  # what the bot passes with the next reply
    reply = await engine.reply([ChatTurn(PARTNER, ("hey how are you?",))], PERSONA, PARTNER, active)
    elapsed = time.perf_counter() - t0
    await asyncio.gather(*in_flight)
    if version in engine.rejected or not recorder.served_by(version):
        raise RuntimeError(f"adapter {version} did not serve: {engine.rejected.get(version)}")
    print(f"  {engine.name}: first reply of adapter {version}: {reply}", file=sys.stderr)
    return elapsed


async def bench_decoding(settings: Settings, limit: int) -> None:
    """Greedy vs the default sampling vs T=1 on held-out sessions of settings.data_dir (its active adapter)."""
    from dataclasses import replace

    from engine.build import build_engine, stored_adapters
    from tests.decoding_eval import compare_decodings, persona_turns
    from trainer.dataset import iter_sessions

    store = Storage(settings.db_path)
    persona = store.owner_slug(settings.owner_id)
    pairs = persona_turns((s.turns for s in iter_sessions(store, settings, split="eval")), persona, limit)
    if not pairs:
        raise SystemExit(f"no held-out turns of {persona!r} in {settings.data_dir}: import chats first")
    row = store.active_adapter()
    adapter = AdapterRef.from_row(row, settings.data_dir) if row else None
    engine = build_engine(settings, stored_adapters(store, settings))
    await engine.start()
    default = reply_sampling(settings)
    decodings = {
        "greedy": replace(default, temperature=0.0),
        f"T={default.temperature} top_p={default.top_p}": default,
        "T=1.0 top_p=1.0": replace(default, temperature=1.0, top_p=1.0),
    }
    try:
        rows = await compare_decodings(engine, pairs, adapter, decodings)
    finally:
        await engine.close()
    print(f"\n{len(pairs)} held-out turns of {persona}, adapter {adapter.version if adapter else 'none (base model)'}")
    print("".join(f"{k:>18}" for k in rows[0]))
    for r in rows:
        print("".join(f"{v:>18.2f}" if isinstance(v, float) else f"{v:>18}" for v in r.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["vllm", "transformers", "remote"])
    parser.add_argument("--model", help="base model (default: the tiny test model, built here)")
    parser.add_argument("--adapters", nargs=3, type=Path, help="three adapters of --model: active, promoted twice")
    parser.add_argument("--chats", type=int, default=32, help="concurrent chats")
    parser.add_argument("--sequential", type=int, default=16, help="replies timed one at a time")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads here (default: 1 on the tiny model, whose "
        "matmuls are slower split over threads; vLLM's CPU workers also use 1)",
    )
    parser.add_argument("--decoding", action="store_true", help="instead: compare decodings on --data-dir")
    parser.add_argument("--data-dir", type=Path, help="twin data dir with imported chats (for --decoding)")
    parser.add_argument("--limit", type=int, default=200, help="held-out turns scored (for --decoding)")
    args = parser.parse_args()
    if args.decoding:
        if not args.data_dir:
            parser.error("--decoding needs --data-dir (and TWIN_BASE_MODEL / .env settings)")
        asyncio.run(bench_decoding(Settings(data_dir=args.data_dir), args.limit))
        return
    if args.threads or not args.model:
        import torch

        torch.set_num_threads(args.threads or 1)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="twin-bench-engine-"))
    model, adapters = (args.model, args.adapters) if args.model else tiny_setup(work)
    store = Storage(work / "twin.db")
    for version, path in enumerate(adapters, start=1):
        store.add_adapter({"version": version, "path": str(Path(path).resolve()), "base_model": str(model)}, [])
    cpu = not _cuda()
    settings = Settings(
        _env_file=None,
        data_dir=work,
        base_model=str(model),
        vllm_dtype="float32" if cpu else "auto",
        vllm_max_model_len=512 if cpu else 4096,
    )
    rows = [asyncio.run(bench_engine(kind, settings, store, args.sequential, args.chats)) for kind in args.engines]
    print(
        f"\n{args.chats} concurrent chats vs one at a time; model {model} ({'CPU' if cpu else 'GPU'}); "
        f"promotion: seconds to the first reply of a new adapter, idle / with {args.chats} chats in flight"
    )
    print(
        f"{'engine':<13}{'start s':>8}{'tokens/reply':>13}{'1-by-1 r/s':>11}{'concurrent r/s':>15}"
        f"{'ratio':>8}{'goal':>6}{'promotion idle s':>18}{'busy s':>8}"
    )
    for r in rows:
        goal = GOAL_RATIO.get(r["engine"])
        print(
            f"{r['engine']:<13}{r['start_s']:>8.1f}{r['tokens_per_reply']:>13.1f}{r['one_at_a_time_rps']:>11.2f}"
            f"{r['concurrent_rps']:>15.2f}{r['ratio']:>7.1f}×{f'≥{goal:.0f}×' if goal else '':>6}"
            f"{r['promotion_idle_s']:>18.2f}{r['promotion_busy_s']:>8.2f}"
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
