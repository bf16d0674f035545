"""Bad input: generated exports and conversations (hypothesis), and exports corrupt in ways a disk, a
half-finished download or a hostile file produce. The importer imports, or refuses with ExportError and
writes nothing; the conversation format keeps its contract for any text."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.telegram_export import ExportError, import_export
from core.format import ChatFormat, ChatTurn
from storage import Storage

OWNER, FRIEND = 1000, 2000
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_import(store: Storage, path: Path):
    return import_export(
        store, path, owner_id=None, include_groups=False, keep_stickers=True, gap_seconds=3600, progress=False
    )


# -- generated valid exports ---------------------------------------------------------------------------
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
text_values = st.one_of(
    texts,
    st.lists(
        st.one_of(texts, st.fixed_dictionaries({"type": st.sampled_from(["bold", "link"]), "text": texts})), max_size=3
    ),
)


@st.composite
def messages(draw, ids):
    kind = draw(st.sampled_from(["message"] * 6 + ["service", "unsupported"]))
    sender = draw(st.sampled_from([OWNER, FRIEND]))
    msg = {
        "id": draw(ids),
        "type": kind,
        "date": "2023-01-01T00:00:00",
        "date_unixtime": str(draw(st.integers(1_500_000_000, 1_700_000_000))),
        "from": "Owner" if sender == OWNER else "Friend",
        "from_id": f"user{sender}",
        "text": draw(text_values),
    }
    extra = draw(st.sampled_from(["", "sticker", "photo", "reply", "forward", "edited"]))
    if extra == "sticker":
        msg.update(text="", media_type="sticker", sticker_emoji=draw(st.sampled_from(["🙂", ""])))
    elif extra == "photo":
        msg["photo"] = "(File not included. Change data exporting settings to download.)"
    elif extra == "reply":
        msg["reply_to_message_id"] = draw(ids)
    elif extra == "forward":
        msg["forwarded_from"] = "Somebody"
    elif extra == "edited":
        msg["edited_unixtime"] = "1700000001"
    return msg


@st.composite
def exports(draw):
    ids = st.integers(1, 60)  # a small range: duplicate ids come up
    chats = [
        {
            "name": f"Friend {i}",
            "type": "personal_chat",
            "id": FRIEND + i,
            "messages": draw(st.lists(messages(ids), max_size=25)),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    for i, chat in enumerate(chats):  # each personal chat is with its own friend
        for msg in chat["messages"]:
            if msg["from_id"] != f"user{OWNER}":
                msg["from_id"] = f"user{FRIEND + i}"
    return {"personal_information": {"user_id": OWNER, "first_name": "Owner"}, "chats": {"list": chats}}


@PROPERTY
@given(export=exports())
def test_generated_exports_import_with_every_message_counted_and_a_rerun_adds_nothing(export):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        path.write_bytes(orjson.dumps(export))
        store = Storage(Path(tmp) / "twin.db")
        summary = run_import(store, path)
        total = sum(len(c["messages"]) for c in export["chats"]["list"])
        assert summary.messages_added + summary.messages_known + sum(summary.skipped.values()) == total
        assert store.counts()["messages"] == summary.messages_added
        stored_ids = {(m["dialog_id"], m["id"]) for c in export["chats"]["list"] for m in store.messages(c["id"])}
        assert len(stored_ids) == summary.messages_added
        again = run_import(store, path)
        assert again.messages_added == 0 and again.messages_known == summary.messages_added
        assert store.counts()["messages"] == summary.messages_added
        store.close()


# -- corrupt exports -----------------------------------------------------------------------------------
def _export(messages_: list) -> dict:
    chat = {"name": "Friend", "type": "personal_chat", "id": FRIEND, "messages": messages_}
    return {"personal_information": {"user_id": OWNER, "first_name": "Owner"}, "chats": {"list": [chat]}}


def _msg(i: int, text="hi") -> dict:
    sender = OWNER if i % 2 else FRIEND
    return {
        "id": i,
        "type": "message",
        "date_unixtime": str(1_600_000_000 + i),
        "from": "x",
        "from_id": f"user{sender}",
        "text": text,
    }


def _nested(depth: int) -> str:
    """JSON text of a `text` nested `depth` lists deep (orjson refuses to write it; a broken file may hold it)."""
    return "[" * depth + '"deep"' + "]" * depth


@st.composite
def corruptions(draw):
    """The bytes of a valid export, then damaged: cut short, a field's type changed, bytes made non-UTF-8."""
    data = _export([_msg(i) for i in range(1, 30)])
    raw = orjson.dumps(data)
    how = draw(st.sampled_from(["truncate", "retype", "bytes"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 2))]
    if how == "bytes":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"])) + raw[at + 1 :]
    msg = data["chats"]["list"][0]["messages"][draw(st.integers(0, 28))]
    key = draw(st.sampled_from(["text", "date_unixtime", "id", "from", "reply_to_message_id"]))
    msg[key] = draw(st.sampled_from([None, 3.5, [1, [2]], {"a": 1}, True, "x"]))
    return orjson.dumps(data)


@PROPERTY
@given(raw=corruptions())
def test_a_damaged_export_imports_or_is_refused_whole_with_the_database_unchanged(raw):
    with tempfile.TemporaryDirectory() as tmp:
        db_path, path = Path(tmp) / "twin.db", Path(tmp) / "result.json"
        Storage(db_path).close()
        before = db_path.read_bytes()
        path.write_bytes(raw)
        store = Storage(db_path)
        try:
            summary = run_import(store, path)
        except ExportError as error:
            assert str(path) in str(error)
            store.close()
            assert db_path.read_bytes() == before, "a refused import wrote something"
        else:
            assert store.counts()["messages"] == summary.messages_added
            store.close()


@pytest.mark.parametrize(
    "name, texts_json, outcome",
    [
        ("5 MB single message", ['"' + "x" * 5_000_000 + '"', '"hi"'], "imported"),
        ("deeply nested text", [_nested(5000), '"hi"'], "refused"),
        ("nested text within limits", [_nested(200), '"hi"'], "any"),
    ],
)
def test_extreme_exports_are_imported_or_refused_cleanly(tmp_path, name, texts_json, outcome):
    db_path, path = tmp_path / "twin.db", tmp_path / "result.json"
    Storage(db_path).close()
    before = db_path.read_bytes()
    messages_json = ",".join(
        orjson.dumps(_msg(i, "TEXT")).decode().replace('"TEXT"', text) for i, text in enumerate(texts_json, 1)
    )
    path.write_text(orjson.dumps(_export([])).decode().replace('"messages":[]', f'"messages":[{messages_json}]'))
    store = Storage(db_path)
    t0 = time.perf_counter()
    try:
        summary = run_import(store, path)
    except ExportError as error:
        assert outcome in ("refused", "any"), error
        assert str(path) in str(error)
        store.close()
        assert db_path.read_bytes() == before, "a refused import wrote something"
        return
    finally:
        assert time.perf_counter() - t0 < 30
    assert outcome in ("imported", "any")
    stored = store.messages(FRIEND)
    assert summary.messages_added == len(stored) == len(texts_json)
    if name == "5 MB single message":
        assert len(stored[0]["text"]) == 5_000_000
    store.close()


def test_duplicate_ids_keep_the_first_and_are_counted(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(orjson.dumps(_export([_msg(1), _msg(2), _msg(2, "again"), _msg(1, "again")])))
    store = Storage(tmp_path / "twin.db")
    summary = run_import(store, path)
    assert [m["text"] for m in store.messages(FRIEND)] == ["hi", "hi"]
    assert summary.messages_added == 2 and summary.skipped["duplicate id"] == 2


# -- the conversation format ---------------------------------------------------------------------------
speakers = st.sampled_from(["alice", "bob", "carol", "сашa", "王伟"])
bursts = st.lists(st.text(max_size=30).filter(lambda t: t.strip()), min_size=1, max_size=3)
conversations = st.lists(st.builds(lambda s, m: ChatTurn(s, tuple(m)), speakers, bursts), min_size=1, max_size=5)


@pytest.fixture(scope="module")
def fmt(tiny_tokenizer) -> ChatFormat:
    return ChatFormat(tiny_tokenizer)


@PROPERTY
@given(turns=conversations)
def test_rendered_conversations_keep_the_format_contract(fmt, turns):
    rendered = fmt.render(turns)
    assert len(rendered.ids) == len(rendered.mask)
    assert len(rendered.turn_starts) == len(turns)
    for i, (start, turn) in enumerate(zip(rendered.turn_starts, turns, strict=True)):
        header = fmt.header(turn.speaker, first=i == 0)
        assert rendered.ids[start : start + len(header)] == header
        assert not any(rendered.mask[start : start + len(header)]), "a header token carries loss"
        end = rendered.turn_starts[i + 1] if i + 1 < len(turns) else len(rendered.ids)
        assert all(rendered.mask[start + len(header) : end]), "turn text or its end-of-turn is not learned"
        assert rendered.ids[end - 1] == fmt.eot_id
    # What the bot sends to reply as the last speaker is exactly what training saw before that reply.
    last = turns[-1].speaker
    prompt = fmt.prompt(turns[:-1], last)
    assert prompt == fmt.render(turns[:-1]).ids + fmt.header(last, first=len(turns) == 1)
    assert rendered.ids[: len(prompt)] == prompt
