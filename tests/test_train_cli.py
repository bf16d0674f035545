"""`twin import` a shared Telegram export, `twin train` it on the tiny model, `twin adapters` lists it; the
training knobs, their overrides and the scheduled-training rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.errors import UserError
from core.settings import Settings
from trainer.config import TrainConfig, load_config
from trainer.rounds import RoundOptions
from twin.cli import app

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/telegram-export"
OWNER_ID = "6565661032"  # "Batman & Robin" (from_id user6565661032) in the fixture


@pytest.mark.slow
def test_import_train_and_list_adapters_from_the_command_line(tmp_path, tiny_model_dir):
    (tmp_path / "train.toml").write_text("max_steps = 2\nlora_r = 8\nlora_alpha = 16\n")
    env = {
        "TWIN_DATA_DIR": str(tmp_path / "data"),
        "TWIN_BASE_MODEL": str(tiny_model_dir),
        "TWIN_TRAIN_CONFIG": str(tmp_path / "train.toml"),
        "COLUMNS": "200",
    }
    cli = CliRunner()
    fixture = FIXTURES / "langchain_personal_chat_result.json"
    imported = cli.invoke(app, ["import", str(fixture), "--owner-id", OWNER_ID], env=env)
    assert imported.exit_code == 0, imported.output

    dry = cli.invoke(app, ["train", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "dry run" in dry.output and "train_sessions: 1" in dry.output
    assert not (tmp_path / "data" / "adapters").exists()

    trained = cli.invoke(app, ["train"], env=env)
    assert trained.exit_code == 0, trained.output
    # The fixture's one session is a train session: no eval data, so the first adapter is promoted with a warning.
    assert "adapter 1 (active)" in trained.stdout
    assert "no eval sessions" in trained.output

    listed = cli.invoke(app, ["adapters"], env=env)
    assert listed.exit_code == 0
    assert "│ 1 " in listed.stdout and "active" in listed.stdout and "- (no eval sessions)" in listed.stdout

    again = cli.invoke(app, ["train"], env=env)
    assert again.exit_code == 0 and "nothing to train" in again.stdout
    assert "nothing to train: 0 new closed sessions" in cli.invoke(app, ["train", "--if-needed"], env=env).stdout
    rolled = cli.invoke(app, ["rollback"], env=env)
    assert rolled.exit_code == 1 and "no earlier adapter" in rolled.output and "Traceback" not in rolled.output


def test_show_config_lists_every_knob_with_its_why(tmp_path):
    result = CliRunner().invoke(app, ["train", "--show-config"], env={"TWIN_DATA_DIR": str(tmp_path), "COLUMNS": "250"})
    assert result.exit_code == 0
    for name, _, why in TrainConfig().whys():
        assert name in result.stdout and why, f"{name} has no why"


def test_knobs_come_from_a_toml_file_and_flags(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text('lora_r = 32\nlora_alpha = 64\nlr_schedule = "linear"\n')
    settings = Settings(data_dir=tmp_path, train_config=toml, _env_file=None)
    cfg = load_config(settings, max_steps=7)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lr_schedule, cfg.max_steps, cfg.epochs) == (32, 64, "linear", 7, 2)
    toml.write_text("lora_rank = 8\n")
    with pytest.raises(UserError, match="unknown training knob"):
        load_config(settings)
    opts = RoundOptions(full=True, max_steps=3, num_processes=2, strategy="ddp")
    assert RoundOptions.from_json(opts.to_json()) == opts  # what a child process of `twin train` rebuilds


def test_train_prints_every_step_with_its_eta_then_the_reports_progress(capsys):
    from rich.console import Console

    from core.progress import ProgressDisplay
    from trainer.commands import RoundProgress

    with ProgressDisplay(Console(stderr=True, force_terminal=False)) as display:
        progress = RoundProgress(display)
        for step in range(1, 5):
            progress(
                {"event": "step", "step": step, "of": 4, "loss": 3.0 - step / 10, "tokens": 2000, "tokens_per_s": 100.0}
            )
        for done in range(3):
            progress(
                {
                    "event": "report_progress",
                    "stage": "replies",
                    "model": "current",
                    "persona": "casey",
                    "done": done,
                    "of": 2,
                }
            )
    lines = capsys.readouterr().err.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert steps[0] == "step 1/4 loss 2.9000, 100 tok/s, eta 1m00s" and steps[2].endswith("eta 20s")
    assert steps[3] == "step 4/4 loss 2.6000, 100 tok/s" and len(steps) == 4
    assert any(line.startswith("replies current/casey: 2/2 done in") for line in lines)
