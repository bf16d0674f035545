"""SQLite storage: the only package that knows table names and SQL."""

from .db import BUSY_TIMEOUT_MS, SCHEMA_VERSION, SchemaTooNew
from .store import MESSAGE_COLUMNS, Storage, UnknownPersona, open_storage
from .training import LockHeld

__all__ = [
    "LockHeld",
    "BUSY_TIMEOUT_MS",
    "MESSAGE_COLUMNS",
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "Storage",
    "UnknownPersona",
    "open_storage",
]
