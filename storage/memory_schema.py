"""The memory index's schema: an FTS5 table over every trainable message, kept in step by triggers.

Triggers on `messages` keep the index in the same transaction as the rows it mirrors: an import, a sync, a
re-read after an edit (INSERT OR REPLACE, with recursive triggers on) and `/forget` (DELETE) all update it
without a line of their own. The tokenizer is trigram: it finds words in any script (Cyrillic, CJK, Latin)
and parts of words ("ski" in "skiing"), case-insensitively.

An index row's rowid is `slot << MEMORY_SLOT_SHIFT | message rowid`, where a slot numbers a dialog: all of a
dialog's rows lie in one rowid range, so a search within one dialog reads only that dialog's part of the
index (FTS5 seeks rowid ranges) however large the database grows.
"""

from __future__ import annotations

# Message rowids below 2**36 (68 billion) and up to 2**27 dialogs fit a 63-bit rowid.
MEMORY_SLOT_SHIFT = 36
MESSAGE_ROWID_MASK = (1 << MEMORY_SLOT_SHIFT) - 1

# Only a person's own words are remembered: text, not forwarded (as core.sessions.is_trainable).
_REMEMBERED = "{row}.text IS NOT NULL AND trim({row}.text) <> '' AND NOT coalesce({row}.forwarded, 0)"
_KEY = f"((SELECT slot FROM memory_dialogs WHERE dialog_id = {{row}}.dialog_id) << {MEMORY_SLOT_SHIFT}) | {{row}}.rowid"
# No OR IGNORE inside a trigger: the outer statement's conflict clause (an INSERT OR REPLACE) would replace it.
_ADD = (
    "INSERT INTO memory_dialogs (dialog_id) SELECT NEW.dialog_id"
    " WHERE NOT EXISTS (SELECT 1 FROM memory_dialogs WHERE dialog_id = NEW.dialog_id);"
    f" INSERT INTO memory (rowid, text) VALUES ({_KEY.format(row='NEW')}, NEW.text);"
)
_DROP = f"DELETE FROM memory WHERE rowid = {_KEY.format(row='OLD')};"

MEMORY_SCHEMA = [
    "CREATE TABLE memory_dialogs (slot INTEGER PRIMARY KEY, dialog_id INTEGER NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE memory USING fts5(text, tokenize = 'trigram')",
    f"CREATE TRIGGER memory_add AFTER INSERT ON messages WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_ADD} END",
    f"CREATE TRIGGER memory_drop AFTER DELETE ON messages BEGIN {_DROP} END",
    # BEFORE, not AFTER: SQLite runs a statement's AFTER triggers newest first, so the add would meet the old
    # row's key (same rowid) and fail the UPDATE, or the drop would then delete the row just added.
    f"CREATE TRIGGER memory_edit_drop BEFORE UPDATE OF text, forwarded ON messages BEGIN {_DROP} END",
    f"CREATE TRIGGER memory_edit_add AFTER UPDATE OF text, forwarded ON messages"
    f" WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_ADD} END",
]
# An existing database's messages, indexed once by the migration.
MEMORY_BACKFILL = [
    "INSERT OR IGNORE INTO memory_dialogs (dialog_id) SELECT DISTINCT dialog_id FROM messages",
    "INSERT INTO memory (rowid, text)"
    f" SELECT (d.slot << {MEMORY_SLOT_SHIFT}) | m.rowid, m.text FROM messages m"
    f" JOIN memory_dialogs d ON d.dialog_id = m.dialog_id WHERE {_REMEMBERED.format(row='m')}",
]
