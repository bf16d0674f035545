"""A database as an older twin made it: today's code with the migrations cut at `version`, and without the
statements of today's storage that need a table of a later version (the per-sender counts came in v9)."""

from __future__ import annotations

import pytest

from storage import db as dbmod
from storage import store as storemod

COUNTS_VERSION = 9  # storage.counts_schema: dialog_senders


def as_of(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """Storage opened from now until `monkeypatch.undo()` migrates only up to `version`."""
    monkeypatch.setattr(dbmod, "MIGRATIONS", dbmod.MIGRATIONS[:version])
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", version)
    if version < COUNTS_VERSION:  # as that twin wrote messages and cut sessions: no counts to keep
        monkeypatch.setattr(storemod, "COUNT_ADDED", [])
        monkeypatch.setattr(storemod, "SESSION_RECOUNT", [])
