"""The base model: the embedded SmolLM2 converted once and reused, never a partial conversion, and a model that
cannot load stopping `twin train`, `chat` and `serve` with one line that names the setting."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import EMBEDDED_MODEL, Settings
from engine import base_model as bm
from tests.bot_api_stub import BotApiStub
from tests.conftest import SHARED_MODELS_DIR
from twin.cli import app


@pytest.fixture(autouse=True)
def _fresh_resolution():
    """Each test resolves as a new process would (the in-process cache would hide a second conversion)."""
    bm._resolve.cache_clear()
    yield
    bm._resolve.cache_clear()


def test_the_embedded_model_is_the_default_and_converts_into_a_loadable_folder(embedded_model_dir):
    assert embedded_model_dir == SHARED_MODELS_DIR / EMBEDDED_MODEL
    assert Settings(_env_file=None).base_model_name == str(embedded_model_dir)
    assert bm.is_converted(embedded_model_dir) and (embedded_model_dir / "model.safetensors").stat().st_size > 1e8
    from transformers import AutoConfig, AutoTokenizer

    from core.format import ChatFormat

    config = AutoConfig.from_pretrained(embedded_model_dir)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    fmt = ChatFormat(AutoTokenizer.from_pretrained(embedded_model_dir))
    assert fmt.style == "chatml"  # its own <|im_start|>/<|im_end|> head every turn; nothing added


def test_a_second_start_reuses_the_converted_folder(embedded_model_dir, monkeypatch):
    weights = embedded_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def convert_again(*_):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(bm, "_write_converted", convert_again)
    assert bm.base_model_path(Settings(_env_file=None)) == str(embedded_model_dir)
    assert weights.stat().st_mtime_ns == before


def test_a_conversion_that_breaks_midway_is_never_used(tmp_path, monkeypatch, embedded_model_dir):
    real = bm._write_converted

    def crash_after_config(source: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    settings = Settings(_env_file=None, models_dir=tmp_path / "models")
    monkeypatch.setattr(bm, "_write_converted", crash_after_config)
    with pytest.raises(OSError, match="disk full"):
        bm.base_model_path(settings)
    assert [
        p for p in (tmp_path / "models").iterdir() if p.suffix != ".lock"
    ] == []  # no folder, no temporary left behind

    # A folder without the marker (a crash of an older version, a copy cut short) is converted again.
    target = tmp_path / "models" / EMBEDDED_MODEL
    target.mkdir()
    (target / "config.json").write_text("{}")
    calls = []

    def copy_converted(source: Path, out: Path) -> None:  # the real conversion, without its minute
        calls.append(source)
        out.mkdir(parents=True)
        for file in embedded_model_dir.iterdir():
            os.link(file, out / file.name)

    monkeypatch.setattr(bm, "_write_converted", copy_converted)
    bm._resolve.cache_clear()
    assert bm.base_model_path(settings) == str(target) and calls == [bm.embedded_gguf()]
    assert bm.is_converted(target) and (target / "model.safetensors").exists()
    assert real is not copy_converted


def unloadable(tmp_path: Path) -> dict[str, str]:
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "llama"}')
    return {
        "hub id (offline, or a typo)": "Qwen/Qwen2.5-0.5B-Instructt",
        "folder without weights": str(no_weights),
        "missing folder": str(tmp_path / "models" / "Qwen2.5"),
        "missing GGUF": str(tmp_path / "model.Q4_K_M.gguf"),
    }


def assert_one_line_naming_the_setting(output: str, value: str, case: str) -> None:
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"TWIN_BASE_MODEL={value}" in error[0], (case, output)
    assert "leave it empty to use the embedded" in error[0] and "Traceback" not in output, case


@pytest.mark.parametrize("command", [["train"], ["chat"]])
def test_a_base_model_that_cannot_load_stops_the_command_with_one_line(tmp_path, command):
    for case, value in unloadable(tmp_path).items():
        bm._resolve.cache_clear()
        env = {
            "TWIN_DATA_DIR": str(tmp_path / "data"),
            "TWIN_BASE_MODEL": value,
            "TWIN_OWNER_ID": "1",
            "HF_HUB_OFFLINE": "1",
            "COLUMNS": "300",
        }
        result = CliRunner().invoke(app, command, env=env, input="hey\n")
        assert result.exit_code == 1, (case, result.output)
        assert_one_line_naming_the_setting(result.output, value, case)


async def test_twin_serve_with_a_base_model_that_cannot_load_stops_with_one_line(tmp_path):
    """A real `twin serve` process; Telegram (a local Bot API stub) accepts the token, the model cannot load."""
    stub = BotApiStub("999:the-right-token")
    url = await stub.start()
    try:
        for case, value in unloadable(tmp_path).items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")} | {
                "TWIN_DATA_DIR": str(tmp_path / "data"),
                "TWIN_OWNER_ID": "1",
                "TWIN_BOT_TOKEN": "999:the-right-token",
                "TWIN_BOT_API_URL": url,
                "TWIN_BASE_MODEL": value,
                "HF_HUB_OFFLINE": "1",
                "COLUMNS": "300",
            }
            twin = str(Path(sys.executable).with_name("twin"))
            proc = await asyncio.create_subprocess_exec(twin, "serve", cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 1, (case, (out + err).decode())
            assert_one_line_naming_the_setting((out + err).decode(), value, case)
    finally:
        await stub.stop()
