"""Telethon message → storage row: the pure conversion, on real Telethon objects built offline."""

from __future__ import annotations

import datetime as dt

from telethon.tl import types

from collector.telethon_rows import media_type_of, message_to_row, person_of, skip_reason
from tests.fake_telegram import FakeAccount, FakeTelegramClient

OWNER, ALICE = 1000, 101
WHEN = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _message(account: FakeAccount, **fields):
    """One message in Alice's chat, served the way a real client would hand it out."""
    msg_id = account.add_message(ALICE, **fields)
    spec = next(s for s in account.history[ALICE] if s.id == msg_id)
    return account.build(ALICE, spec, FakeTelegramClient(account))


def _document(*attributes) -> types.MessageMediaDocument:
    doc = types.Document(
        id=1,
        access_hash=1,
        file_reference=b"",
        date=WHEN,
        mime_type="application/x",
        size=1,
        dc_id=2,
        attributes=list(attributes),
    )
    return types.MessageMediaDocument(document=doc)


def _account() -> FakeAccount:
    account = FakeAccount(me_id=OWNER)
    account.add_user(ALICE, "Alice")
    return account


def test_incoming_text_message_is_from_the_other_person():
    row = message_to_row(_message(_account(), text="hi there"), ALICE, OWNER)
    assert row["sender_id"] == ALICE and row["out"] == 0 and row["text"] == "hi there"
    assert row["source"] == "telethon" and row["media_type"] is None and row["forwarded"] == 0


def test_outgoing_message_is_from_the_owner():
    row = message_to_row(_message(_account(), text="hello", out=True), ALICE, OWNER)
    assert row["sender_id"] == OWNER and row["out"] == 1


def test_date_and_edit_are_unix_seconds():
    account = _account()
    msg = _message(account, text="x", edit_date=WHEN)
    row = message_to_row(msg, ALICE, OWNER)
    assert row["date"] == int(msg.date.timestamp()) and row["edited"] == int(WHEN.timestamp())


def test_reply_forward_and_via_bot_are_kept():
    fwd = types.MessageFwdHeader(date=WHEN, from_name="Some Channel")
    row = message_to_row(_message(_account(), text="look", fwd_from=fwd, reply_to_id=7, via_bot_id=55), ALICE, OWNER)
    assert row["reply_to"] == 7 and row["forwarded"] == 1 and row["forwarded_from"] == "Some Channel"
    assert row["via_bot"] == 1


def test_forward_from_a_known_user_names_them():
    fwd = types.MessageFwdHeader(date=WHEN, from_id=types.PeerUser(ALICE))
    row = message_to_row(_message(_account(), text="fw", fwd_from=fwd), ALICE, OWNER)
    assert row["forwarded_from"] == "Alice"


def test_media_types_follow_telegram_desktop_export_names():
    cases = {
        "photo": types.MessageMediaPhoto(photo=types.PhotoEmpty(id=1)),
        "voice_message": _document(types.DocumentAttributeAudio(duration=3, voice=True)),
        "audio_file": _document(types.DocumentAttributeAudio(duration=3)),
        "video_message": _document(types.DocumentAttributeVideo(duration=3, w=1, h=1, round_message=True)),
        "video_file": _document(types.DocumentAttributeVideo(duration=3, w=1, h=1)),
        "animation": _document(types.DocumentAttributeAnimated(), types.DocumentAttributeVideo(3, 1, 1)),
        "file": _document(types.DocumentAttributeFilename(file_name="a.pdf")),
        "location": types.MessageMediaGeo(geo=types.GeoPointEmpty()),
        "dice": types.MessageMediaDice(value=3, emoticon="🎲"),
    }
    account = _account()
    for expected, media in cases.items():
        assert media_type_of(_message(account, media=media)) == expected


def test_media_only_message_has_no_text():
    row = message_to_row(_message(_account(), media=types.MessageMediaPhoto(photo=None)), ALICE, OWNER)
    assert row["text"] is None and row["media_type"] == "photo"


def test_sticker_becomes_its_emoji_unless_stickers_are_dropped():
    sticker = _document(types.DocumentAttributeSticker(alt="😂", stickerset=types.InputStickerSetEmpty()))
    msg = _message(_account(), media=sticker)
    assert message_to_row(msg, ALICE, OWNER)["text"] == "😂"
    assert message_to_row(msg, ALICE, OWNER, keep_stickers=False)["text"] is None


def test_service_message_is_typed_by_its_action():
    msg = _message(_account(), action=types.MessageActionScreenshotTaken())
    row = message_to_row(msg, ALICE, OWNER)
    assert row["media_type"] == "service:screenshot_taken" and row["text"] is None


def test_link_preview_is_a_text_message():
    page = types.MessageMediaWebPage(webpage=types.WebPageEmpty(id=1))
    assert media_type_of(_message(_account(), text="https://example.org", media=page)) is None


def test_person_row_has_names_and_a_fallback_username():
    user = types.User(
        id=5,
        first_name="Sasha",
        last_name="K",
        usernames=[
            types.Username(username="old", editable=True, active=False),
            types.Username(username="sasha_k", editable=True, active=True),
        ],
    )
    assert person_of(user) == {
        "id": 5,
        "first_name": "Sasha",
        "last_name": "K",
        "username": "sasha_k",
        "name": "Sasha K",
    }


def test_skip_reason_names_what_is_not_a_person():
    assert skip_reason(types.User(id=5, first_name="A")) is None
    assert skip_reason(types.User(id=5, bot=True)) == "bot"
    assert skip_reason(types.User(id=5, deleted=True)) == "deleted account"
    assert skip_reason(types.User(id=5, is_self=True)) == "Saved Messages"
    assert skip_reason(types.User(id=777000, first_name="Telegram")) == "Telegram service account"
    assert skip_reason(types.ChatEmpty(id=3)) == "not a one-to-one chat"
