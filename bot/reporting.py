"""Messages to the owner from background work (sync, training, forget): they never raise, and progress
edits one message instead of flooding the chat."""

from __future__ import annotations

import logging
import time

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest

log = logging.getLogger(__name__)

# Progress edits at most this often: Telegram limits edits, and the owner needs no more.
PROGRESS_EVERY_SECONDS = 5.0
MAX_REPORT_CHARS = 4000


class OwnerReports:
    """Sends to the owner's chat. A failure to deliver is logged, never raised into the job."""

    def __init__(self, bot: Bot, owner_id: int):
        self.bot, self.owner_id = bot, owner_id

    async def say(self, text: str) -> int | None:
        try:
            sent = await self.bot.send_message(self.owner_id, text[:MAX_REPORT_CHARS])
            return sent.message_id
        except TelegramAPIError as exc:
            log.warning("could not report to the owner: %s", type(exc).__name__)
            return None

    def progress(self) -> Progress:
        return Progress(self)


class Progress:
    """One message that follows a job: the first update sends it, later ones edit it (throttled)."""

    def __init__(self, reports: OwnerReports):
        self.reports = reports
        self.message_id: int | None = None
        self._last = 0.0
        self._text = ""

    async def update(self, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if text == self._text or (not final and now - self._last < PROGRESS_EVERY_SECONDS):
            return
        self._last, self._text = now, text
        if self.message_id is None:
            self.message_id = await self.reports.say(text)
            return
        try:
            await self.reports.bot.edit_message_text(
                text=text[:MAX_REPORT_CHARS], chat_id=self.reports.owner_id, message_id=self.message_id
            )
        except TelegramBadRequest:  # e.g. the owner deleted the message: carry on in a new one
            self.message_id = await self.reports.say(text)
        except TelegramAPIError as exc:
            log.warning("could not update progress: %s", type(exc).__name__)
