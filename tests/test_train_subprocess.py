"""The trainer as the bot runs it: a child process reporting JSON lines, killed or cancelled without harm,
and the same round data-parallel over 2 CPU processes (torchrun + accelerate, gloo)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from safetensors.torch import load_file

from core.settings import Settings
from storage import Storage
from tests.train_corpus import Corpus
from trainer.rounds import RoundOptions
from trainer.runner import run_training_subprocess
from trainer.train import LOCK

pytestmark = pytest.mark.slow

KNOBS = "lora_r = 8\nlora_alpha = 16\nlearning_rate = 3e-3\nepochs = 1\npack_tokens = 256\nlora_dropout = 0.0\n"


def _settings(tmp_path, tiny_model_dir, knobs: str = KNOBS, n_train: int = 12, n_eval: int = 3) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    toml = tmp_path / "train.toml"
    toml.write_text(knobs)
    settings = Settings(
        data_dir=tmp_path / "data",
        owner_id=1,
        base_model=str(tiny_model_dir),
        train_config=toml,
        train_min_new_sessions=5,
        _env_file=None,
    )
    settings.ensure_data_dir()
    Corpus(Storage(settings.db_path)).add(n_train, n_eval)
    return settings


def test_subprocess_reports_json_progress_and_the_result(tmp_path, tiny_model_dir):
    settings = _settings(tmp_path, tiny_model_dir)
    events: list[dict] = []
    outcome = asyncio.run(run_training_subprocess(settings, RoundOptions(max_steps=3), events.append))
    assert outcome.status == "done", outcome.stderr_tail
    assert outcome.returncode == 0 and outcome.version == 1 and outcome.promoted and outcome.eval_loss > 0
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds.count("step") == 3 and kinds[-1] == "done"
    assert kinds.index("eval") > max(i for i, k in enumerate(kinds) if k == "step")
    assert Storage(settings.db_path).active_adapter()["version"] == 1


def test_a_killed_trainer_leaves_the_database_as_it_was(tmp_path, tiny_model_dir):
    settings = _settings(tmp_path, tiny_model_dir)
    store = Storage(settings.db_path)

    def kill_on_first_step(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 1:
            os.kill(store.lock_holder(LOCK)["pid"], signal.SIGKILL)  # as the OOM killer would

    outcome = asyncio.run(run_training_subprocess(settings, RoundOptions(max_steps=50), kill_on_first_step))
    assert outcome.status == "error" and outcome.returncode == -signal.SIGKILL
    assert store.adapters() == [] and store.active_adapter() is None
    assert store.lock_holder(LOCK) is None, "the lock of a dead process is stale"
    assert store.fail_dead_runs() == 1 and store.runs()[0]["status"] == "failed"
    assert not list(settings.adapters_dir.glob("*")) or all(
        p.name.startswith(".tmp") for p in settings.adapters_dir.iterdir()
    )
    store.acquire_lock(LOCK)  # the next round may start


def test_cancelling_stops_the_child_and_records_the_round_failed(tmp_path, tiny_model_dir):
    settings = _settings(tmp_path, tiny_model_dir)

    async def scenario():
        started = asyncio.Event()
        task = asyncio.create_task(
            run_training_subprocess(
                settings, RoundOptions(max_steps=50), lambda e: e["event"] == "step" and started.set()
            )
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    store = Storage(settings.db_path)
    run = store.runs()[0]
    assert run["status"] == "failed" and "terminated by signal 15" in run["error"]
    assert store.lock_holder(LOCK) is None and store.adapters() == []


def _lora_weights(settings: Settings, version: int) -> dict:
    return load_file(str(settings.adapters_dir / f"{version:04d}" / "adapter_model.safetensors"))


def test_two_process_data_parallel_round_equals_one_process_with_accumulation(tmp_path, tiny_model_dir):
    """DDP over 2 processes (grad_accum 1) and 1 process with grad_accum 2 see the same packs per step and
    weigh every token the same, so they must produce the same adapter."""
    ddp = _settings(tmp_path / "ddp", tiny_model_dir, KNOBS + "grad_accum = 1\n")
    single = _settings(tmp_path / "single", tiny_model_dir, KNOBS + "grad_accum = 2\n")
    events: list[dict] = []
    outcome = asyncio.run(run_training_subprocess(ddp, RoundOptions(max_steps=3, num_processes=2), events.append))
    assert outcome.status == "done", outcome.stderr_tail
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3], "only rank 0 reports"
    assert asyncio.run(run_training_subprocess(single, RoundOptions(max_steps=3))).status == "done"
    a, b = _lora_weights(ddp, 1), _lora_weights(single, 1)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-4, key
    import json

    assert json.loads((ddp.adapters_dir / "0001" / "meta.json").read_text())["processes"] == 2


def test_selfplay_runs_data_parallel_with_a_context_count_the_processes_do_not_divide(tmp_path, tiny_model_dir):
    """5 contexts over 2 processes: one gets a zero-weight filler, both run the same steps (no deadlock), and
    the figures count every real pair once."""
    knobs = KNOBS + "grad_accum = 1\nselfplay_pairs = 5\nselfplay_epochs = 1\n"
    settings = _settings(tmp_path, tiny_model_dir, knobs)
    events: list[dict] = []
    outcome = asyncio.run(run_training_subprocess(settings, RoundOptions(max_steps=3, num_processes=2), events.append))
    assert outcome.status == "done", outcome.stderr_tail
    figures = json.loads((settings.adapters_dir / "0001" / "meta.json").read_text())["selfplay"]
    assert figures["contexts"] == 5 and figures["pairs"] + figures["dropped"] == 5 and figures["pairs"] >= 3
    trained = [e for e in events if e["event"] == "selfplay" and e["phase"] == "train"]
    assert [e["done"] for e in trained] == [1, 2, 3]  # 3 slots a process, one pair a step


def test_training_subprocess_gets_no_telegram_secrets(tmp_path, monkeypatch):
    import json

    from core.settings import Settings
    from trainer.runner import SETTINGS_VARIABLE, child_env

    monkeypatch.setenv("TWIN_BOT_TOKEN", "123:SECRET")
    monkeypatch.setenv("TWIN_API_HASH", "hash-secret")
    monkeypatch.setenv("TWIN_SESSION", "session-secret")
    env = child_env(Settings(data_dir=tmp_path))
    assert not {"TWIN_BOT_TOKEN", "TWIN_API_HASH", "TWIN_SESSION"} & set(env)
    assert "SECRET" not in json.dumps(env) and "secret" not in env[SETTINGS_VARIABLE]
    assert json.loads(env[SETTINGS_VARIABLE])["data_dir"] == str(tmp_path)


# The child as the bot starts it (trainer.__main__.main), its round replaced by a probe that reports the
# settings and options the child built.
SETTINGS_PROBE = """
import sys
from dataclasses import asdict
import trainer.rounds

def probe(settings, opts, on_event=None, after_round=None):
    secret = lambda value: value.get_secret_value() if value is not None else None
    return {"event": "done", "bot_token": secret(settings.bot_token), "api_hash": secret(settings.api_hash),
            "session": secret(settings.session), "data_dir": str(settings.data_dir),
            "base_model": settings.base_model, "owner_id": settings.owner_id, "options": asdict(opts)}

trainer.rounds.round_once = probe
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_training_child_reads_no_dotenv_and_gets_its_settings_and_options_from_the_parent(tmp_path, monkeypatch):
    import sys
    from dataclasses import asdict

    from trainer import runner

    (tmp_path / ".env").write_text(
        "TWIN_BOT_TOKEN=123:DOTENV-SECRET\nTWIN_API_HASH=dotenv-hash\nTWIN_SESSION=dotenv-session\n"
        "TWIN_DATA_DIR=/nowhere\nTWIN_BASE_MODEL=dotenv/model\n"
    )
    monkeypatch.chdir(tmp_path)  # where the bot runs: its .env is in the working directory
    probe = lambda module="trainer": [sys.executable, "-c", SETTINGS_PROBE]  # noqa: E731
    monkeypatch.setattr(runner, "trainer_command", probe)
    settings = Settings(data_dir=tmp_path / "data", owner_id=7, base_model="parent/model", _env_file=None)
    options = RoundOptions(full=True, max_steps=3, if_needed=True, strategy="fsdp")
    outcome = asyncio.run(run_training_subprocess(settings, options))
    assert outcome.status == "done", outcome.stderr_tail
    got = outcome.final
    assert got["bot_token"] is None and got["api_hash"] is None and got["session"] is None
    assert got["data_dir"] == str(tmp_path / "data") and got["base_model"] == "parent/model" and got["owner_id"] == 7
    assert got["options"] == asdict(options)


# The child as the bot's job and `twin train` start it (`python -m evaluation.round`), its round replaced by
# a probe that says which report it was given.
REPORT_PROBE = """
import runpy
import sys
import trainer.rounds

def probe(settings, opts, on_event=None, after_round=None):
    return {"event": "done", "after_round": after_round.__name__, "module": after_round.__module__}

trainer.rounds.round_once = probe
sys.argv = ["evaluation.round"]
runpy.run_module("evaluation.round", run_name="__main__")
"""


def test_the_bot_and_twin_train_start_rounds_that_end_with_evaluations_report(tmp_path, monkeypatch):
    import sys

    from bot.jobs import ROUND_WITH_REPORT
    from trainer import runner

    assert ROUND_WITH_REPORT == "evaluation.round"
    monkeypatch.setattr(runner, "trainer_command", lambda module: [sys.executable, "-c", REPORT_PROBE])
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)
    outcome = asyncio.run(run_training_subprocess(settings, module=ROUND_WITH_REPORT))
    assert outcome.status == "done", outcome.stderr_tail
    assert outcome.final["after_round"] == "report_after_round"
    assert outcome.final["module"] == "__main__"  # evaluation.round, run as `python -m evaluation.round`
