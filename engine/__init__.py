"""Reply engines: vLLM in-process, a remote vLLM server, or transformers; one interface for the bot.

engine = build_engine(settings, stored_adapters(store, settings))
await engine.start()
messages = await engine.reply(turns, persona, partner, AdapterRef.from_row(store.active_adapter()))
await engine.close()
"""

from .base import AdapterRef, Engine
from .build import build_engine, stored_adapters

__all__ = ["AdapterRef", "Engine", "build_engine", "stored_adapters"]
