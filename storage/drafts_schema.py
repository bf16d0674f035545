"""The drafts table (migrations _v10, _v11; rows written by storage.drafts)."""

DRAFTS_SCHEMA = (
    "CREATE TABLE drafts (id INTEGER PRIMARY KEY, dialog_id INTEGER NOT NULL, persona TEXT NOT NULL,"
    " adapter_version INTEGER, text TEXT NOT NULL, created_at INTEGER NOT NULL, owner_text TEXT,"
    " verdict TEXT CHECK (verdict IN ('accepted', 'edited', 'ignored')), distance INTEGER, closed_at INTEGER)",
    # The writer asks for a chat's open draft on every update: one row per chat at most is open.
    "CREATE INDEX drafts_open ON drafts (dialog_id) WHERE closed_at IS NULL",
)
# v11: the message that closed a draft, so the preference stage finds the context and the real reply it answers.
DRAFTS_REPLY_ID = ("ALTER TABLE drafts ADD COLUMN reply_message_id INTEGER",)
