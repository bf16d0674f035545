"""Errors a user can fix. The CLI prints them as one line (no traceback); the bot as one short reply."""


class UserError(Exception):
    """Something the user can fix; the message says what to do."""
