"""Each sender's message and session counts per dialog, so `Storage.personas()` reads a few rows, not the
history: on a 1,000,000-message account counting them from `messages` took seconds, and every /start,
/personas and `twin personas` asked.

`messages` is counted in by the two methods that insert messages (`Storage.insert_messages` and
`insert_many_messages`: every insert goes through them), one statement at the end of their transaction; it is
counted out by triggers on `messages`, so a re-read after an edit (INSERT OR REPLACE: recursive triggers count
the old row out) and `/forget` keep it right without a line of their own. `sessions` changes only where a
dialog's sessions do: they are replaced a dialog at a time (`Storage.replace_sessions` recounts them with
SESSION_RECOUNT), and deleting a dialog's sessions (`delete_dialog`, `/forget`) zeroes its counts by trigger.
A row goes when its sender has neither messages nor sessions left in the dialog, so a forgotten person leaves
no row here.
"""

from __future__ import annotations

# An UPSERT, not INSERT OR IGNORE + UPDATE: one statement per message, and the outer statement's conflict
# clause (an INSERT OR REPLACE of a message) applies to plain inserts only, never to an UPSERT's own.
_COUNT_IN = (
    "INSERT INTO dialog_senders (dialog_id, sender_id, messages) SELECT NEW.dialog_id, NEW.sender_id, 1"
    " WHERE NEW.sender_id IS NOT NULL ON CONFLICT (dialog_id, sender_id) DO UPDATE SET messages = messages + 1;"
)
# The rows an insert added, counted in by rowid range: a new row's rowid is above every row before the insert
# (SQLite gives it before a REPLACE deletes the row it replaces). A statement, not an AFTER INSERT trigger: a
# trigger costs its invocation on every row, even one its WHEN clause skips (about 40% of an import's inserts).
# NOT INDEXED: the rowid range, not a walk of a whole index in GROUP BY order (the planner's choice). A list,
# so a test can run an old schema's code without it (parameter: the first new rowid).
COUNT_ADDED = [
    "INSERT INTO dialog_senders (dialog_id, sender_id, messages) SELECT dialog_id, sender_id, count(*)"
    " FROM messages NOT INDEXED WHERE rowid >= ?1 AND sender_id IS NOT NULL GROUP BY dialog_id, sender_id"
    " ON CONFLICT (dialog_id, sender_id) DO UPDATE SET messages = messages + excluded.messages"
]
# v12: COUNT_ADDED takes the insert trigger's place, and the index of messages by sender goes with it (about
# 30% of an import's inserts): only /forget reads messages by sender alone, once, and may scan.
COUNT_BY_STATEMENT = ["DROP TRIGGER IF EXISTS dialog_senders_add", "DROP INDEX IF EXISTS idx_messages_sender_id"]
# A sender's row goes with their last message of the dialog, unless sessions still count them (an INSERT OR
# REPLACE counts the row out and back in; a deletion's sessions are recounted when they are rebuilt).
_COUNT_OUT = (
    "UPDATE dialog_senders SET messages = messages - 1 WHERE dialog_id = OLD.dialog_id AND sender_id = OLD.sender_id;"
    " DELETE FROM dialog_senders WHERE dialog_id = OLD.dialog_id AND sender_id = OLD.sender_id"
    " AND messages = 0 AND sessions = 0;"
)

COUNTS_SCHEMA = [
    "CREATE TABLE dialog_senders (dialog_id INTEGER NOT NULL, sender_id INTEGER NOT NULL,"
    " messages INTEGER NOT NULL DEFAULT 0, sessions INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (dialog_id, sender_id)) WITHOUT ROWID",
    f"CREATE TRIGGER dialog_senders_add AFTER INSERT ON messages WHEN NEW.sender_id IS NOT NULL BEGIN {_COUNT_IN} END",
    "CREATE TRIGGER dialog_senders_drop AFTER DELETE ON messages WHEN OLD.sender_id IS NOT NULL"
    f" BEGIN {_COUNT_OUT} END",
    "CREATE TRIGGER dialog_senders_move AFTER UPDATE OF dialog_id, sender_id ON messages"
    f" BEGIN {_COUNT_OUT} {_COUNT_IN} END",
    "CREATE TRIGGER dialog_senders_sessions_gone AFTER DELETE ON sessions BEGIN"
    " UPDATE dialog_senders SET sessions = 0 WHERE dialog_id = OLD.dialog_id AND sessions <> 0;"
    " DELETE FROM dialog_senders WHERE dialog_id = OLD.dialog_id AND messages = 0; END",
]

# Sessions of each sender: those holding one of their messages (by id range, as sessions are cut). CROSS JOIN
# keeps sessions outside, so each session reads its own messages once through the (dialog_id, id) key; the
# planner's own choice walked every session of the dialog for every message.
_RECOUNT = (
    "INSERT INTO dialog_senders (dialog_id, sender_id, sessions)"
    " SELECT s.dialog_id, m.sender_id, count(DISTINCT s.id) FROM sessions s CROSS JOIN messages m"
    " ON m.dialog_id = s.dialog_id AND m.id BETWEEN s.first_message_id AND s.last_message_id"
    " WHERE {where} AND m.sender_id IS NOT NULL GROUP BY s.dialog_id, m.sender_id"
    " ON CONFLICT (dialog_id, sender_id) DO UPDATE SET sessions = excluded.sessions"
)
# One dialog's session counts, after its sessions were replaced (parameter: the dialog id).
SESSION_RECOUNT = [
    "UPDATE dialog_senders SET sessions = 0 WHERE dialog_id = ?1 AND sessions <> 0",
    _RECOUNT.format(where="s.dialog_id = ?1"),
]
# An existing database's counts, made once by the migration.
COUNTS_BACKFILL = [
    "INSERT INTO dialog_senders (dialog_id, sender_id, messages) SELECT dialog_id, sender_id, count(*)"
    " FROM messages WHERE sender_id IS NOT NULL GROUP BY dialog_id, sender_id",
    _RECOUNT.format(where="1"),
]
