"""The CLI documents itself: every command has an example, and the README mentions every command."""

from pathlib import Path

import typer
from typer.testing import CliRunner

from core.settings import Settings
from twin.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group, prefix: str = ""):
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, full + " ")
        else:
            yield full, cmd


def test_every_command_has_an_example_and_is_in_the_readme():
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 5
    for name, cmd in commands:
        assert "Example:" in (cmd.help or ""), f"`twin {name}` --help has no Example:"
        assert f"twin {name}" in README, f"README does not mention `twin {name}`"


def test_status_on_a_fresh_data_dir(tmp_path):
    result = CliRunner().invoke(app, ["status"], env={"TWIN_DATA_DIR": str(tmp_path / "d")})
    assert result.exit_code == 0, result.output
    assert "messages" in result.output and "never" in result.output
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700


def test_serve_without_bot_token_says_how_to_get_one(tmp_path):
    result = CliRunner().invoke(app, ["serve"], env={"TWIN_DATA_DIR": str(tmp_path), "TWIN_BOT_TOKEN": ""})
    assert result.exit_code == 1
    assert "@BotFather" in result.output
    assert "Traceback" not in result.output


def test_invalid_setting_names_the_variable(tmp_path):
    result = CliRunner().invoke(app, ["status"], env={"TWIN_DATA_DIR": str(tmp_path), "TWIN_OWNER_ID": "abc"})
    assert result.exit_code == 2
    assert "TWIN_OWNER_ID" in result.output


def test_persona_rename_of_unknown_persona_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["persona", "rename", "ghost", "friend2"], env={"TWIN_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "twin personas" in result.output and "Traceback" not in result.output


def test_an_adapter_fits_the_same_base_model_by_id_or_by_a_local_copy_of_it():
    settings = Settings(_env_file=None, base_model="/models/Qwen2.5-1.5B-Instruct/")
    assert settings.fits_base_model("Qwen/Qwen2.5-1.5B-Instruct") and settings.fits_base_model(None)
    assert not settings.fits_base_model("Qwen/Qwen2.5-7B-Instruct")
