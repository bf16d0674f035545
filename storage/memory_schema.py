"""The memory index's schema: an FTS5 table over every trainable message, kept in step by triggers.

The index exists only while memory is on (see storage.memory_index): then triggers on `messages` keep it in
the same transaction as the rows it mirrors: a sync, a re-read after an edit (INSERT OR REPLACE, with
recursive triggers on) and `/forget` (DELETE) all update it without a line of their own; an import suspends
the insert trigger and indexes what it wrote in bulk, in the same transaction. The tokenizer is trigram: it
finds words in any script (Cyrillic, CJK, Latin) and parts of words ("ski" in "skiing"), case-insensitively.

The index keeps no copy of the text: it is an external-content table whose content is the view
`memory_source` over `messages`. FTS5 reads that view only to rebuild or to show a column, never to search;
so a message's words are taken out with the 'delete' command and the old text (FTS5 cannot look it up fast).
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
_ADD_SLOT = (
    "INSERT INTO memory_dialogs (dialog_id) SELECT NEW.dialog_id"
    " WHERE NOT EXISTS (SELECT 1 FROM memory_dialogs WHERE dialog_id = NEW.dialog_id);"
)
_ADD = _ADD_SLOT + f" INSERT INTO memory (rowid, text) VALUES ({_KEY.format(row='NEW')}, NEW.text);"
# Only a row that was remembered was indexed, and 'delete' must be given exactly what was indexed.
_DROP = f"INSERT INTO memory (memory, rowid, text) VALUES ('delete', {_KEY.format(row='OLD')}, OLD.text);"

MEMORY_SOURCE = (
    f"CREATE VIEW memory_source AS SELECT (d.slot << {MEMORY_SLOT_SHIFT}) | m.rowid AS key, m.text AS text"
    f" FROM messages m JOIN memory_dialogs d ON d.dialog_id = m.dialog_id WHERE {_REMEMBERED.format(row='m')}"
)
# columnsize=0: no per-row token counts (only bm25 reads them, and recall ranks in Python).
MEMORY_TABLE = (
    "CREATE VIRTUAL TABLE memory USING fts5(text, tokenize = 'trigram',"
    " content = 'memory_source', content_rowid = 'key', columnsize = 0)"
)
# Merge 16 segments of a level at once, not 4: an import writes one small segment per transaction, and
# merging them 4 at a time cost it a third more CPU (bench/import.py); a search reads a few more segments.
MEMORY_AUTOMERGE = "INSERT INTO memory (memory, rank) VALUES ('automerge', 16)"
MEMORY_INSERT_TRIGGER = "memory_add"
MEMORY_TRIGGERS = {
    MEMORY_INSERT_TRIGGER: f"CREATE TRIGGER memory_add AFTER INSERT ON messages"
    f" WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_ADD} END",
    "memory_drop": f"CREATE TRIGGER memory_drop AFTER DELETE ON messages"
    f" WHEN {_REMEMBERED.format(row='OLD')} BEGIN {_DROP} END",
    # BEFORE, not AFTER: SQLite runs a statement's AFTER triggers newest first, so the add would meet the old
    # row's key (same rowid) before its words were taken out.
    "memory_edit_drop": f"CREATE TRIGGER memory_edit_drop BEFORE UPDATE OF text, forwarded ON messages"
    f" WHEN {_REMEMBERED.format(row='OLD')} BEGIN {_DROP} END",
    "memory_edit_add": f"CREATE TRIGGER memory_edit_add AFTER UPDATE OF text, forwarded ON messages"
    f" WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_ADD} END",
}
# Memory off: no index, no triggers, no slots (the most private: nothing of the messages twice on disk).
MEMORY_INDEX_OFF = [
    *(f"DROP TRIGGER IF EXISTS {name}" for name in MEMORY_TRIGGERS),
    "DROP TABLE IF EXISTS memory",
    "DROP VIEW IF EXISTS memory_source",
    "DELETE FROM memory_dialogs",
]
# Every dialog with messages from `?` (a rowid) up gets a slot, in the order the rows were written (so an
# imported database's keys ascend as its rows do).
# MATERIALIZED: read the rowid range, not the whole (dialog_id, date) index in dialog order.
ADD_SLOTS_FROM = (
    "WITH new AS MATERIALIZED (SELECT dialog_id, rowid AS r FROM messages WHERE rowid >= ?)"
    " INSERT INTO memory_dialogs (dialog_id) SELECT dialog_id FROM new"
    " WHERE dialog_id NOT IN (SELECT dialog_id FROM memory_dialogs) GROUP BY dialog_id ORDER BY min(r)"
)
# The remembered messages with rowids in [?, ?), indexed in key order: FTS5 writes out what it holds
# whenever a key is lower than the one before, and a build in rowid order took twice as long.
INDEX_ROWIDS = (
    f"INSERT INTO memory (rowid, text) SELECT (d.slot << {MEMORY_SLOT_SHIFT}) | m.rowid, m.text"
    f" FROM messages m JOIN memory_dialogs d ON d.dialog_id = m.dialog_id"
    f" WHERE m.rowid >= ? AND m.rowid < ? AND {_REMEMBERED.format(row='m')} ORDER BY 1"
)

# -- schema version 6 (frozen: migration v6 still makes what it made; v7 takes it away) ----------------------
_V6_ADD = _ADD_SLOT + f" INSERT INTO memory (rowid, text) VALUES ({_KEY.format(row='NEW')}, NEW.text);"
_V6_DROP = f"DELETE FROM memory WHERE rowid = {_KEY.format(row='OLD')};"
V6_SCHEMA = [
    "CREATE TABLE memory_dialogs (slot INTEGER PRIMARY KEY, dialog_id INTEGER NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE memory USING fts5(text, tokenize = 'trigram')",
    f"CREATE TRIGGER memory_add AFTER INSERT ON messages WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_V6_ADD} END",
    f"CREATE TRIGGER memory_drop AFTER DELETE ON messages BEGIN {_V6_DROP} END",
    f"CREATE TRIGGER memory_edit_drop BEFORE UPDATE OF text, forwarded ON messages BEGIN {_V6_DROP} END",
    f"CREATE TRIGGER memory_edit_add AFTER UPDATE OF text, forwarded ON messages"
    f" WHEN {_REMEMBERED.format(row='NEW')} BEGIN {_V6_ADD} END",
]
V6_BACKFILL = [
    "INSERT OR IGNORE INTO memory_dialogs (dialog_id) SELECT DISTINCT dialog_id FROM messages",
    "INSERT INTO memory (rowid, text)"
    f" SELECT (d.slot << {MEMORY_SLOT_SHIFT}) | m.rowid, m.text FROM messages m"
    f" JOIN memory_dialogs d ON d.dialog_id = m.dialog_id WHERE {_REMEMBERED.format(row='m')}",
]
