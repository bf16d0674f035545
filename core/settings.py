"""One typed settings object, read from the environment and `.env` (prefix `TWIN_`).

Built once in a command's main and passed down; never at import time, so tests can build their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import UserError

EngineName = Literal["auto", "vllm", "remote", "transformers"]


class MissingSetting(UserError):
    """A command needs a setting the user has not given; the message says how to get it."""


# How a user obtains each setting a command may need; used in one-line errors.
HOW_TO_GET = {
    "owner_id": "TWIN_OWNER_ID is not set: send any message to @userinfobot in Telegram to learn your user id, "
    "then put it into .env",
    "base_model": "TWIN_BASE_MODEL is not set: put a Hugging Face model id (e.g. Qwen/Qwen2.5-1.5B-Instruct) "
    "or a local model folder into .env",
    "bot_token": "TWIN_BOT_TOKEN is not set: create a bot with @BotFather and put the token into .env",
    "api_id": "TWIN_API_ID is not set: create an app at my.telegram.org → API development tools and put "
    "api_id into .env",
    "api_hash": "TWIN_API_HASH is not set: create an app at my.telegram.org → API development tools and put "
    "api_hash into .env",
    "engine_url": "TWIN_ENGINE_URL is not set: TWIN_ENGINE=remote needs the URL of a vLLM OpenAI-compatible "
    "server, e.g. http://gpu-box:8000",
}


class Settings(BaseSettings):
    # env_ignore_empty: `TWIN_OWNER_ID=` as left in a fresh .env means "not set", not "invalid".
    model_config = SettingsConfigDict(env_prefix="TWIN_", env_file=".env", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(Path("data"), description="Holds twin.db, adapters/ and the Telethon session.")
    owner_id: int | None = Field(None, description="The owner's Telegram user id.")
    base_model: str | None = Field(None, description="Hugging Face model id or local folder to fine-tune.")
    engine: EngineName = Field("auto", description="auto | vllm | remote | transformers")
    engine_url: str | None = Field(None, description="vLLM OpenAI-compatible server for TWIN_ENGINE=remote.")

    bot_token: SecretStr | None = Field(None, description="Bot token from @BotFather.")
    bot_api_url: str | None = Field(None, description="Self-hosted Bot API server, e.g. http://localhost:8081.")
    api_id: int | None = Field(None, description="Telegram API id from my.telegram.org (collector).")
    api_hash: SecretStr | None = Field(None, description="Telegram API hash from my.telegram.org (collector).")
    session: SecretStr | None = Field(None, description="Telethon StringSession; else data_dir/owner.session.")

    # 60 min: a reply after lunch still sees its question; a next-day chat starts a fresh session.
    session_gap_minutes: float = Field(60.0, gt=0, description="Silence that ends a session (minutes).")
    # Stickers carry tone ("😂") that is part of how people write; drop them if they drown the text.
    keep_stickers: bool = Field(True, description="Import stickers as their emoji.")
    scrub_words: list[str] = Field(default_factory=list, description="Extra words scrubbed from training text.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "twin.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def session_gap_seconds(self) -> float:
        return self.session_gap_minutes * 60

    def require(self, name: str):
        """The value of setting `name`, or a MissingSetting error that says how to get it."""
        value = getattr(self, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise MissingSetting(HOW_TO_GET.get(name, f"TWIN_{name.upper()} is not set: put it into .env"))
        return value

    def ensure_data_dir(self) -> Path:
        """Create the data dir private to the owner (0700): it holds private messages and secrets."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return self.data_dir
