"""The bot's own sync with fake Telegram secrets (API hash, session string, bot token) that go wrong: what
the owner is told and what is logged never holds a secret."""

from __future__ import annotations

import logging

from tests.bot_fakes import OWNER, TOKEN, TwinUnderTest

API_HASH = "0123456789abcdef0123456789abcdef"
BAD_SESSION = "1BVtsOKABu2Zr8mJXQeU-not-a-real-session-string-9f8e7d6c5b4a"  # a StringSession Telethon refuses


async def test_a_sync_with_a_broken_session_reports_and_logs_no_secret(tmp_path, caplog):
    twin = TwinUnderTest(tmp_path / "data", api_id=12345, api_hash=API_HASH, session=BAD_SESSION)
    twin.store.upsert_people([{"id": OWNER, "first_name": "Olga", "username": "olga"}])
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            await twin.say(OWNER, "/sync")
            await twin.settle(timeout=30)
        logged = "\n".join(handler.format(r) for r in caplog.records)
    finally:
        logging.getLogger().removeHandler(handler)
        twin.close()
    told = "\n".join(twin.session.texts(OWNER))
    assert "Sync failed" in told and "twin login" in told, told  # the failure path ran and says what to do
    for text in (told, logged):
        assert API_HASH not in text and BAD_SESSION not in text and BAD_SESSION[5:30] not in text
        assert TOKEN.split(":")[1] not in text


def test_the_api_hash_and_session_string_are_redacted_like_the_token():
    from bot.secrets import RedactSecrets

    handler = logging.StreamHandler()
    handler.addFilter(RedactSecrets(TOKEN, API_HASH, BAD_SESSION))
    record = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "connect %s with %s at %s",
        (BAD_SESSION, API_HASH, f"https://api.telegram.org/bot{TOKEN}/getMe"),
        None,
    )
    handler.filter(record)
    assert record.getMessage() == "connect <secret> with <secret> at https://api.telegram.org/bot<secret>/getMe"
