"""Storage for the bot: chat personas, the allowlist, and the bot's own conversations (mixed into Storage).

The bot's conversations live apart from `messages`, so nothing the twin said is ever trained on.
"""

from __future__ import annotations

import time
from typing import Any

from .db import Database


class BotStore(Database):
    # -- per-chat persona -----------------------------------------------------------------------------
    def chat_persona(self, chat_id: int) -> str | None:
        rows = self.query("SELECT persona FROM chats WHERE chat_id = ?", (chat_id,))
        return rows[0][0] if rows else None

    def set_chat_persona(self, chat_id: int, persona: str | None) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO chats (chat_id, persona, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(chat_id) DO UPDATE SET persona = excluded.persona, updated_at = excluded.updated_at",
                (chat_id, persona, int(time.time())),
            )

    # -- allowlist ------------------------------------------------------------------------------------
    def allow(self, user_id: int | None = None, username: str | None = None) -> None:
        username = username.lstrip("@").lower() if username else None
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO access (user_id, username, added_at) VALUES (?, ?, ?)",
                (user_id, username, int(time.time())),
            )

    def deny(self, user_id: int | None = None, username: str | None = None) -> int:
        username = username.lstrip("@").lower() if username else None
        with self.transaction() as c:
            return c.execute(
                "DELETE FROM access WHERE (? IS NOT NULL AND user_id = ?) OR (? IS NOT NULL AND username = ?)",
                (user_id, user_id, username, username),
            ).rowcount

    def is_allowed(self, user_id: int, username: str | None = None) -> bool:
        """On the allowlist by id, or by @username (then the id is remembered for next time)."""
        if self.query("SELECT 1 FROM access WHERE user_id = ?", (user_id,)):
            return True
        if not username:
            return False
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE access SET user_id = ? WHERE username = ? AND user_id IS NULL",
                (user_id, username.lower()),
            )
            return cur.rowcount > 0 or bool(
                c.execute(
                    "SELECT 1 FROM access WHERE username = ? AND user_id = ?", (username.lower(), user_id)
                ).fetchone()
            )

    def allowed(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT user_id, username, added_at FROM access ORDER BY added_at")]

    # -- the bot's own conversations ------------------------------------------------------------------
    def add_bot_message(
        self, chat_id: int, user_id: int | None, speaker: str, text: str, from_twin: bool, date: int | None = None
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO bot_messages (chat_id, user_id, speaker, from_twin, date, text) VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, user_id, speaker, int(from_twin), date or int(time.time()), text),
            )

    def recent_bot_messages(self, chat_id: int, since: int, limit: int = 50) -> list[dict[str, Any]]:
        """The chat's messages newer than `since` (unix), oldest first, at most `limit`."""
        rows = self.query(
            "SELECT * FROM (SELECT * FROM bot_messages WHERE chat_id = ? AND date >= ?"
            " ORDER BY date DESC, id DESC LIMIT ?) ORDER BY date, id",
            (chat_id, since, limit),
        )
        return [dict(r) for r in rows]
