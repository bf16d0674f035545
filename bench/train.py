"""Bench the trainer on the tiny model and a synthetic corpus (tests/train_corpus.py), on this machine:

1. share of real (non-padding) tokens per step and training tokens/s, our padding-free packs against a naive
   baseline: HF `Trainer` with pad-to-longest batches, same model, LoRA, examples and one epoch each.
   Goals: share >= 0.95, tokens/s >= 1.5x the baseline.
2. cost of an incremental round after +5% new sessions divided by a full round (wall time of `run_round`,
   model loading and evaluation included). Goal <= 0.2.
3. `--part memory`: peak RSS and tokens/s of training steps on real chats (chitchat-dataset), each variant in
   a fresh process: the whole pack's logits at once on glibc's heap ("before"), the chunked loss, large
   allocations served by mmap, gradient checkpointing. Goal: the default at most half the peak of "before",
   with the same losses (to 1e-4).

    python bench/train.py                  # 400 train + 20 eval sessions
    python bench/train.py --sessions 100   # a quick run
    python bench/train.py --threads 0      # torch's default thread count (noisy on a busy machine)
    python bench/train.py --part memory --model embedded   # SmolLM2-135M (converted once); or tiny, or a folder
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from core.format import ChatFormat  # noqa: E402
from core.settings import Settings  # noqa: E402
from storage import Storage  # noqa: E402
from tests.tiny import build_tiny_model  # noqa: E402
from tests.train_corpus import Corpus  # noqa: E402
from trainer import model as tm  # noqa: E402
from trainer.config import LOSS_CHUNK_TOKENS, TrainConfig  # noqa: E402
from trainer.dataset import iter_sessions  # noqa: E402
from trainer.loop import Trainer, make_optimizer, total_steps  # noqa: E402
from trainer.packing import pack_examples  # noqa: E402
from trainer.train import make_accelerator, run_round  # noqa: E402
from trainer.windows import build_examples  # noqa: E402

GOAL_SHARE, GOAL_SPEEDUP, GOAL_INCREMENTAL = 0.95, 1.5, 0.2
BASELINE_BATCH = 8  # a usual per-device batch for short chat examples
CFG = TrainConfig(epochs=1, learning_rate=1e-3)  # the defaults (2048-token packs, 4 per step), one epoch


def examples_of(settings: Settings, cfg: TrainConfig):
    fmt = ChatFormat(tm.load_tokenizer(settings.base_model))
    sessions = list(iter_sessions(Storage(settings.db_path), settings, "train"))
    return list(build_examples(fmt, sessions, cfg.max_seq_len, cfg.window_context))


def ours(settings: Settings, examples, cfg: TrainConfig) -> dict:
    """One epoch of our loop over padding-free packs: wall time, tokens/s, real share per step."""
    torch.manual_seed(0)
    acc = make_accelerator(cfg)
    model = tm.attach_lora(tm.load_base(settings.base_model, torch.float32, acc.device), cfg)
    packs = pack_examples(examples, cfg.pack_tokens)
    optimizer, scheduler = make_optimizer(model, cfg, total_steps(len(packs), cfg, 1))
    model, optimizer = acc.prepare(model, optimizer)
    t0, c0 = time.perf_counter(), time.process_time()
    history = Trainer(model, optimizer, scheduler, acc, cfg).run(packs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(h["tokens"] for h in history)
    return {
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu,
        "share": min(h["real_share"] for h in history),
        "steps": len(history),
    }


def baseline(settings: Settings, examples, cfg: TrainConfig, out_dir: Path) -> dict:
    """One epoch of HF Trainer over pad-to-longest batches of BASELINE_BATCH examples."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, TrainingArguments
    from transformers import Trainer as HFTrainer

    torch.manual_seed(0)
    tokenizer = tm.load_tokenizer(settings.base_model)
    base = AutoModelForCausalLM.from_pretrained(settings.base_model, dtype=torch.float32, attn_implementation="sdpa")
    model = tm.attach_lora(base, cfg)
    rows = [
        {"input_ids": e.ids, "labels": [t if m else -100 for t, m in zip(e.ids, e.loss, strict=True)]} for e in examples
    ]
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    shares: list[float] = []

    def collate(batch):
        out = pad(batch)
        shares.append(sum(len(b["input_ids"]) for b in batch) / out["input_ids"].numel())
        return out

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=BASELINE_BATCH,
        num_train_epochs=1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        save_strategy="no",
        report_to=[],
        logging_steps=10_000,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
    )
    trainer = HFTrainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    c0 = time.process_time()
    seconds = trainer.train().metrics["train_runtime"]
    cpu = time.process_time() - c0
    tokens = sum(len(e) for e in examples)
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / cpu, "share": statistics.mean(shares)}


def rounds(settings: Settings, corpus: Corpus, n_sessions: int, cfg: TrainConfig) -> dict:
    """Wall time of a full round, then of an incremental round after +5% new train sessions."""
    cfg = cfg.model_copy(update={"epochs": 2})
    t0 = time.perf_counter()
    full = run_round(settings, cfg, full=True)
    full_s = time.perf_counter() - t0
    corpus.add(max(1, round(n_sessions * 0.05)))
    t0 = time.perf_counter()
    inc = run_round(settings, cfg)
    inc_s = time.perf_counter() - t0
    return {
        "full_s": full_s,
        "inc_s": inc_s,
        "full_tokens": full.counts["tokens"],
        "inc_tokens": inc.counts["tokens"],
        "inc_sessions": f"{inc.counts['new_sessions']} new + {inc.counts['replay_sessions']} replayed",
    }


# (name, loss_chunk_tokens, mmap allocations, gradient_checkpointing): what each memory run changes.
MEMORY_VARIANTS = (
    ("before: logits at once, heap", 0, False, False),
    ("chunked loss", LOSS_CHUNK_TOKENS, False, False),
    ("chunked loss + mmap", LOSS_CHUNK_TOKENS, True, False),
    ("chunked + mmap + checkpointing", LOSS_CHUNK_TOKENS, True, True),
)
GOAL_MEMORY = 0.5


def memory_run(model: str, db: str, chunk: int, mmap: bool, checkpointing: bool, steps: int, threads: int, out) -> None:
    """In a fresh process: `steps` optimiser steps of the default config on the first packs of `db`'s real
    chats; puts tokens/s, the losses and peak RSS (the process's own, model included) on `out`."""
    import resource

    if mmap:
        tm.return_freed_memory()
    torch.set_num_threads(threads)
    # One pack a step: the peak is a pack's forward and backward, so more packs a step only cost time.
    cfg = TrainConfig(loss_chunk_tokens=chunk, gradient_checkpointing=checkpointing, max_steps=steps, grad_accum=1)
    settings = Settings(_env_file=None, data_dir=Path(db).parent, base_model=model)
    packs = pack_examples(examples_of(settings, cfg), cfg.pack_tokens, cfg.seed)
    torch.manual_seed(0)
    acc = make_accelerator(cfg)
    peft_model = tm.attach_lora(tm.load_base(model, torch.float32, acc.device), cfg)
    optimizer, scheduler = make_optimizer(peft_model, cfg, steps)
    peft_model, optimizer = acc.prepare(peft_model, optimizer)
    t0 = time.perf_counter()
    history = Trainer(peft_model, optimizer, scheduler, acc, cfg).run(packs)
    seconds = time.perf_counter() - t0
    out.put(
        {
            "tokens_per_s": sum(h["tokens"] for h in history) / seconds,
            "losses": [h["loss"] for h in history],
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        }
    )


def memory(model: str, tmp: Path, steps: int, threads: int) -> None:
    import multiprocessing

    from tests.chitchat import import_chitchat

    settings = Settings(_env_file=None, data_dir=tmp / "chitchat", owner_id=1000)
    settings.ensure_data_dir()
    import_chitchat(settings, tmp / "chitchat.json", partners=10, conversations=120)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for name, *variant in MEMORY_VARIANTS:
        out = ctx.Queue()
        proc = ctx.Process(target=memory_run, args=(model, str(settings.db_path), *variant, steps, threads, out))
        proc.start()
        rows.append((name, out.get()))
        proc.join()
        print(f"  {name}: peak {rows[-1][1]['peak_gb']:.2f} GB, {rows[-1][1]['tokens_per_s']:.0f} tokens/s", flush=True)
    before = rows[0][1]
    print(
        f"\n{Path(model).name}, {steps} steps of one {TrainConfig().pack_tokens}-token pack of real chats, "
        f"{threads} threads, each variant in a fresh process"
    )
    print(f"{'variant':32} {'peak RSS':>9} {'vs before':>9} {'tokens/s':>9} {'vs before':>9} {'max |loss diff|':>15}")
    for name, r in rows:
        diff = max(abs(a - b) for a, b in zip(r["losses"], before["losses"], strict=True))
        print(
            f"{name:32} {r['peak_gb']:8.2f}G {r['peak_gb'] / before['peak_gb']:9.2f} {r['tokens_per_s']:9.0f} "
            f"{r['tokens_per_s'] / before['tokens_per_s']:9.2f} {diff:15.2e}"
        )
    default = TrainConfig().gradient_checkpointing
    ratio = rows[3 if default else 2][1]["peak_gb"] / before["peak_gb"]
    print(
        f"default ({rows[3 if default else 2][0]}) peak / before = {ratio:.2f}; goal <= {GOAL_MEMORY} "
        f"{'OK' if ratio <= GOAL_MEMORY else 'MISSED'}"
    )


def resolve_model(name: str, tmp: Path) -> str:
    if name == "tiny":
        return str(build_tiny_model(tmp / "tiny"))
    from engine.base_model import base_model_path

    return base_model_path(Settings(_env_file=None, base_model=None if name == "embedded" else name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=400, help="train sessions (eval: 5%% more)")
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs of each (median reported)")
    # 1 thread: on a shared 2-core machine, OpenMP threads that wait on each other swamp the figures.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--part", choices=["all", "throughput", "rounds", "memory"], default="all")
    parser.add_argument("--model", default="tiny", help="memory part: tiny | embedded | a model folder or id")
    parser.add_argument("--steps", type=int, default=3, help="memory part: optimiser steps (packs) per variant")
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.part == "memory":
            memory(resolve_model(a.model, tmp), tmp, a.steps, a.threads or torch.get_num_threads())
            return
        base = build_tiny_model(tmp / "tiny")
        settings = Settings(data_dir=tmp / "data", owner_id=1, base_model=str(base), _env_file=None)
        settings.ensure_data_dir()
        corpus = Corpus(Storage(settings.db_path))
        corpus.add(a.sessions, max(1, a.sessions // 20))
        examples = examples_of(settings, CFG)
        print(
            f"tiny model {base.name}: {len(examples)} examples, {sum(map(len, examples)):,} tokens, "
            f"{torch.get_num_threads()} threads",
            flush=True,
        )
        if a.part != "rounds":
            throughput(settings, examples, a.repeats, tmp)
        if a.part != "throughput":
            incremental(settings, corpus, a.sessions)


def throughput(settings: Settings, examples, repeats: int, tmp: Path) -> None:
    ours_runs, base_runs = [], []
    for _ in range(repeats):  # interleaved, so load from other work hits both alike
        ours_runs.append(ours(settings, examples, CFG))
        base_runs.append(baseline(settings, examples, CFG, tmp / "hf"))
    med = lambda key: statistics.median(o[key] / b[key] for o, b in zip(ours_runs, base_runs, strict=True))  # noqa: E731
    wall, cpu = med("tokens_per_s"), med("tokens_per_cpu_s")
    share_o, share_b = min(r["share"] for r in ours_runs), statistics.mean(r["share"] for r in base_runs)
    print(
        f"real-token share per step: packed {share_o:.3f} (min over steps) vs pad-to-longest {share_b:.3f} "
        f"(mean); goal >= {GOAL_SHARE} {'OK' if share_o >= GOAL_SHARE else 'MISSED'}"
    )
    verdict = "OK" if wall >= GOAL_SPEEDUP else "MISSED"
    print(
        f"training tokens/s, packed / HF Trainer (median of {repeats} interleaved pairs): wall {wall:.2f}x, "
        f"per CPU-second {cpu:.2f}x; goal >= {GOAL_SPEEDUP}x {verdict}"
    )
    for key in ("tokens_per_s", "tokens_per_cpu_s"):
        print(f"  {key}: packed {[round(r[key]) for r in ours_runs]}, HF {[round(r[key]) for r in base_runs]}")


def incremental(settings: Settings, corpus: Corpus, n_sessions: int) -> None:
    r = rounds(settings, corpus, n_sessions, CFG)
    ratio = r["inc_s"] / r["full_s"]
    print(
        f"incremental round (+5%: {r['inc_sessions']}, {r['inc_tokens']:,} tokens) {r['inc_s']:.1f} s / "
        f"full round ({r['full_tokens']:,} tokens) {r['full_s']:.1f} s = {ratio:.3f}; "
        f"goal <= {GOAL_INCREMENTAL} {'OK' if ratio <= GOAL_INCREMENTAL else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
