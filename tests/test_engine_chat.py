"""`twin chat` answers scripted stdin lines, one reply message per line, with the transformers and vLLM engines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import Settings
from engine.chat import DEFAULT_PARTNER, chat_roles
from storage import Storage
from tests.adapters import train_parrot_adapter
from twin.cli import app

V1 = ("ok see you", "bring the book")
LINES = "hey how are you?\n\nlet's meet at 7 pm tomorrow\n"  # a blank line is no message


@pytest.fixture(scope="module")
def chat_data(tiny_model_dir, tmp_path_factory) -> Path:
    """A data dir whose owner is `owner`, with a friend `sasha` and adapter 1 (says V1) active."""
    data = tmp_path_factory.mktemp("chat-data")
    store = Storage(data / "twin.db")
    store.upsert_people([{"id": 1, "username": "owner"}, {"id": 2, "username": "sasha"}])
    store.set_meta("owner_id", 1)
    path = train_parrot_adapter(tiny_model_dir, data / "adapters" / "0001", V1)
    store.add_adapter({"version": 1, "path": "adapters/0001", "base_model": str(tiny_model_dir)}, [])
    store.activate_adapter(1)
    assert path.exists()
    return data


def chat_env(data: Path, model: Path, engine: str) -> dict[str, str]:
    return {
        "TWIN_DATA_DIR": str(data),
        "TWIN_BASE_MODEL": str(model),
        "TWIN_ENGINE": engine,
        "TWIN_REPLY_TEMPERATURE": "0",  # greedy: the parrot's burst, word for word
        "TWIN_REPLY_MAX_NEW_TOKENS": "24",
        "TWIN_VLLM_DTYPE": "float32",
        "TWIN_VLLM_MAX_MODEL_LEN": "256",
    }


def test_roles_default_to_the_owner_the_active_adapter_and_a_generic_partner(chat_data):
    store, settings = Storage(chat_data / "twin.db"), Settings(_env_file=None, data_dir=chat_data)
    roles = chat_roles(store, settings, None, None, None)
    assert (roles.persona, roles.partner, roles.adapter.version) == ("owner", DEFAULT_PARTNER, 1)
    assert roles.adapter.path == (chat_data / "adapters" / "0001").resolve()
    friend = chat_roles(store, settings, "sasha", None, None)
    assert (friend.persona, friend.partner) == ("sasha", "owner")  # playing a friend: you are yourself


def test_chat_with_an_unknown_persona_or_adapter_says_what_exists(chat_data, tiny_model_dir):
    env = chat_env(chat_data, tiny_model_dir, "transformers")
    result = CliRunner().invoke(app, ["chat", "--persona", "ghost"], env=env, input="hi\n")
    assert result.exit_code == 1 and "twin personas" in result.output
    result = CliRunner().invoke(app, ["chat", "--adapter", "7"], env=env, input="hi\n")
    assert result.exit_code == 1 and "twin adapters" in result.output


def test_chat_answers_scripted_lines_with_the_transformers_engine(chat_data, tiny_model_dir):
    result = CliRunner().invoke(app, ["chat"], env=chat_env(chat_data, tiny_model_dir, "transformers"), input=LINES)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [*V1, *V1]


def test_chat_shows_the_memory_each_reply_recalled_on_stderr(chat_data, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(chat_data, data)
    store = Storage(data / "twin.db")
    store.upsert_dialog({"id": 2, "type": "personal_chat", "name": "Sasha", "person_id": 2})
    store.insert_messages(
        [
            {"dialog_id": 2, "id": 1, "sender_id": 2, "date": 1_600_000_000, "text": "my sister moved to Valparaiso"},
            {"dialog_id": 2, "id": 2, "sender_id": 1, "date": 1_600_000_060, "text": "how nice"},
        ]
    )
    store.close()
    env = {**chat_env(data, tiny_model_dir, "transformers"), "TWIN_MEMORY_SCOPE": "pair"}  # off by default
    result = CliRunner().invoke(
        app, ["chat", "--as", "sasha", "--show-memory"], env=env, input="your sister, Valparaiso?\n"
    )
    assert result.exit_code == 0, result.output
    shown = [line for line in result.stderr.splitlines() if line.startswith("[memory]")]
    assert shown == ["[memory] sasha: my sister moved to Valparaiso", "[memory] owner: how nice"]
    assert "[memory]" not in result.stdout  # stdout keeps the twin's messages alone


@pytest.mark.slow
def test_chat_answers_scripted_lines_with_the_vllm_engine(chat_data, tiny_model_dir, tmp_path):
    twin = Path(sys.executable).parent / "twin"
    argv = [str(twin)] if twin.exists() else [sys.executable, "-m", "twin"]
    repo = str(Path(__file__).resolve().parents[1])  # this checkout, whatever the venv's install points at
    path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        **chat_env(chat_data, tiny_model_dir, "vllm"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": path,
    }
    done = subprocess.run(
        [*argv, "chat", "--as", "friend"],
        input=LINES,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [*V1, *V1]  # stdout holds the replies only (vLLM logs to stderr)
