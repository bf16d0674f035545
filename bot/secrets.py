"""Keep secrets out of logs: aiogram's network errors can carry request URLs, which hold the bot token; the
API hash and the session string are redacted too, should any library ever echo them."""

from __future__ import annotations

import logging

REDACTED = "<secret>"


class RedactSecrets(logging.Filter):
    """Replaces each secret in a record's message and traceback text before any handler formats it."""

    def __init__(self, *secrets: str):
        super().__init__()
        # The token's secret half alone also goes: a URL-quoted or truncated token still leaks it.
        parts = [s for secret in secrets if secret for s in (secret, secret.partition(":")[2]) if len(s) >= 8]
        self.secrets = sorted(set(parts), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def hide_in_logs(*secrets: str) -> RedactSecrets:
    """Install the filter on every root handler (records from all loggers pass through them)."""
    redactor = RedactSecrets(*secrets)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        handler.addFilter(redactor)
    return redactor
