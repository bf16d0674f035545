"""The twin's memory: the index kept by the database itself, recall's order and bounds, and the memory block in
the conversation format and in training windows (real SQLite, a real export, a real tokenizer from tests/tiny.py).

Who may be recalled to whom is tests/test_memory_privacy.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from collector.telegram_export import import_export
from core.format import MEMORY_HEADER, ChatFormat, ChatTurn, Recalled, memory_text
from core.recall import MemoryRequest, query_terms, recall
from storage import Storage
from storage import db as dbmod
from storage.memory import match_expression
from storage.memory_schema import MESSAGE_ROWID_MASK
from storage.store import MESSAGE_COLUMNS
from tests.old_schema import as_of
from trainer.dataset import TrainingSession
from trainer.windows import session_examples

FULL = Path(__file__).resolve().parent / "fixtures" / "full_account_export.json"
OWNER, ANNA = 1000, 2001
GAP, DAY, T0 = 3600, 86400, 1_600_000_000
ASKED = [ChatTurn("anna", ("what about the guitar concert?",))]


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(tmp_path / "twin.db")
    s.turn_memory_index(True)  # memory on
    s.upsert_people([{"id": OWNER, "username": "olga"}, {"id": ANNA, "username": "anna"}])
    s.set_meta("owner_id", OWNER)
    s.upsert_dialog({"id": ANNA, "type": "personal_chat", "name": "Anna", "person_id": ANNA})
    yield s
    s.close()


@pytest.fixture(scope="module")
def fmt(tmp_path_factory) -> ChatFormat:
    from tests.tiny import build_tokenizer

    return ChatFormat(build_tokenizer(tmp_path_factory.mktemp("memory-tokenizer")))


_ids = itertools.count(1)


def msg(sender: int, date: int, text: str | None, dialog: int = ANNA, **kw) -> dict:
    return {
        "dialog_id": dialog,
        "id": next(_ids),
        "sender_id": sender,
        "date": date,
        "text": text,
        "source": "test",
        **kw,
    }


def index_texts(store: Storage, word: str) -> list[str]:
    """The texts of the messages the index itself finds for `word` (a stale index row finds a changed text)."""
    rows = store.query(
        f"SELECT m.text FROM memory f JOIN messages m ON m.rowid = f.rowid & {MESSAGE_ROWID_MASK} WHERE memory MATCH ?",
        (match_expression([word]),),
    )
    return sorted(r[0] for r in rows if word.lower() in r[0].lower())


def indexed_rowids(store: Storage) -> list[int]:
    """The message rowids the index holds, read from the index itself (fts5vocab), not from its content."""
    store.conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.memory_terms USING fts5vocab(main, memory, 'instance')")
    return sorted(r[0] & MESSAGE_ROWID_MASK for r in store.conn.execute("SELECT DISTINCT doc FROM temp.memory_terms"))


def index_is_consistent(store: Storage) -> bool:
    """FTS5's own check of the index, and exactly the remembered messages indexed, each under its words."""
    store.conn.execute("INSERT INTO memory (memory) VALUES ('integrity-check')")  # raises when corrupt
    remembered = store.query(
        "SELECT rowid, text FROM messages WHERE text IS NOT NULL AND trim(text) <> '' AND NOT coalesce(forwarded, 0)"
    )
    trigrams = {r[0]: {r[1].lower()[i : i + 3] for i in range(len(r[1]) - 2)} for r in remembered}
    trigrams = {rowid: terms for rowid, terms in trigrams.items() if terms}  # "ok" has no trigram to index
    store.conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.memory_terms USING fts5vocab(main, memory, 'instance')")
    # A temp table lives on the connection that made it (the writer's), not on this thread's read connection.
    held = {r[0] & MESSAGE_ROWID_MASK: set() for r in store.conn.execute("SELECT DISTINCT doc FROM temp.memory_terms")}
    for doc, term in store.conn.execute("SELECT doc, term FROM temp.memory_terms"):
        held[doc & MESSAGE_ROWID_MASK].add(term)
    return held == trigrams


def ask(store: Storage, turns=ASKED, **kw) -> list[Recalled]:
    request = {"owner_id": OWNER, "persona_id": OWNER, "partner_id": ANNA, "scope": "pair", "k": 3, "gap_seconds": GAP}
    return recall(store, MemoryRequest(**{**request, **kw}), turns)


def lines(recalled: list[Recalled]) -> list[str]:
    return memory_text(recalled).splitlines()


# -- the index -------------------------------------------------------------------------------------------
def test_messages_enter_the_index_in_the_transaction_that_stores_them_and_leave_with_its_rollback(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert_messages([msg(ANNA, T0, "the lighthouse keeper retired")])
            assert index_texts(store, "lighthouse") == ["the lighthouse keeper retired"]
            raise RuntimeError("the import failed")
    assert index_texts(store, "lighthouse") == [] and store.counts()["messages"] == 0
    store.insert_many_messages([tuple(msg(ANNA, T0, "the lighthouse keeper retired").get(k) for k in MESSAGE_COLUMNS)])
    assert index_texts(store, "lighthouse") == ["the lighthouse keeper retired"] and index_is_consistent(store)


def test_an_import_indexes_every_own_word_in_any_script_but_not_forwards(tmp_path):
    store = Storage(tmp_path / "twin.db")
    store.turn_memory_index(True)
    import_export(store, FULL, owner_id=None, include_groups=True, keep_stickers=True, gap_seconds=GAP, progress=False)
    assert index_texts(store, "закат") == ["Смотри, какой закат", "Ссылка: https://example.com/закат"]
    assert index_texts(store, "最近怎") == ["你好！最近怎么样？"]
    assert index_texts(store, "рубля") == []  # "Курс рубля снова упал" was forwarded: not their words
    assert index_is_consistent(store)


def test_an_edited_message_replaces_its_text_in_the_index(store):
    edited = msg(ANNA, T0, "we ski in Chamonix")
    store.insert_messages([edited])
    store.insert_messages([{**edited, "text": "we hike in Zermatt", "edited": T0 + 60}], replace=True)
    assert index_texts(store, "chamonix") == [] and index_texts(store, "zermatt") == ["we hike in Zermatt"]
    store.insert_messages([{**edited, "text": "", "media_type": "photo"}], replace=True)  # text taken out
    assert index_texts(store, "zermatt") == [] and index_is_consistent(store)
    # An UPDATE in place (no REPLACE) is followed as well: new words in, a forward out.
    store.conn.execute("UPDATE messages SET text = 'back from Zermatt' WHERE id = ?", (edited["id"],))
    assert index_texts(store, "zermatt") == ["back from Zermatt"]
    store.conn.execute("UPDATE messages SET forwarded = 1 WHERE id = ?", (edited["id"],))
    assert index_texts(store, "zermatt") == [] and index_is_consistent(store)


def test_deleted_messages_leave_the_index(store):
    gone, kept = msg(ANNA, T0, "the pottery class moved"), msg(OWNER, T0 + 60, "pottery again?")
    store.insert_messages([gone, kept])
    assert store.delete_messages(ANNA, [gone["id"]]) == 1
    assert index_texts(store, "pottery") == ["pottery again?"] and index_is_consistent(store)


def test_forwarded_and_empty_messages_are_not_indexed(store):
    store.insert_messages(
        [
            msg(ANNA, T0, "volcano news from a channel", forwarded=1, forwarded_from="News"),
            msg(ANNA, T0 + 1, None, media_type="photo"),
            msg(ANNA, T0 + 2, "   "),
            msg(ANNA, T0 + 3, "my own volcano photos"),
        ]
    )
    assert index_texts(store, "volcano") == ["my own volcano photos"]
    assert len(indexed_rowids(store)) == 1


@pytest.mark.parametrize(
    ("said", "asked"),
    [
        ("Я учусь на физфаке в Новосибирске", "Как там Новосибирск?"),  # another case and ending
        ("我明天去北京大学图书馆", "北京大学在哪里"),  # no spaces: 3-character pieces
        ("Skiing in Chamonix was GREAT", "do you still ski?"),  # part of a word, any case
    ],
)
def test_words_are_found_in_any_script_and_as_parts_of_words(store, said, asked):
    store.insert_messages([msg(ANNA, T0, said), msg(OWNER, T0 + 60, "ok")])
    recalled = ask(store, [ChatTurn("anna", (asked,))])
    assert lines(recalled)[0] == f"anna: {said}"


def test_the_migration_drops_the_old_index_and_turning_memory_on_builds_it_once(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    as_of(monkeypatch, 6)
    old = Storage(path)
    assert old.schema_version == 6 and "memory_content" in old.db.table_names()  # v6: a copy of every text
    old.upsert_people([{"id": OWNER, "username": "olga"}, {"id": ANNA, "username": "anna"}])
    old.upsert_dialog({"id": ANNA, "type": "personal_chat", "name": "Anna", "person_id": ANNA})
    old.insert_messages(
        [
            msg(ANNA, T0, "the lighthouse keeper retired"),
            msg(ANNA, T0 + 1, "lighthouse tour, forwarded", forwarded=1),
            msg(7, T0 + 2, "lighthouse in another chat", dialog=7),
        ]
    )
    old.close()
    monkeypatch.undo()
    store = Storage(path)
    assert store.schema_version == dbmod.SCHEMA_VERSION and not store.memory_index_on()
    assert not [t for t in store.db.table_names() if t.startswith("memory") and t != "memory_dialogs"]
    assert store.turn_memory_index(True) and not store.turn_memory_index(True)  # built once
    assert index_texts(store, "lighthouse") == ["lighthouse in another chat", "the lighthouse keeper retired"]
    store.insert_messages([msg(ANNA, T0 + DAY, "a new lighthouse")])  # and the triggers keep it from now on
    assert len(index_texts(store, "lighthouse")) == 3 and index_is_consistent(store)
    assert lines(ask(store, [ChatTurn("olga", ("the keeper?",))])) == ["anna: the lighthouse keeper retired"]


def test_forgetting_a_person_takes_their_words_out_of_the_index(store):
    store.upsert_dialog({"id": -5, "type": "private_group", "name": "Family"})
    store.insert_messages(
        [
            msg(ANNA, T0, "my sister moved to Valparaiso"),
            msg(OWNER, T0 + 60, "Valparaiso is far"),
            msg(ANNA, T0 + 120, "Valparaiso cousin wedding", dialog=-5),  # theirs in a group too
            msg(OWNER, T0 + 180, "what about Valparaiso?", dialog=-5),
        ]
    )
    assert len(index_texts(store, "valparaiso")) == 4
    store.forget_person("anna", GAP)
    # Their dialog goes whole (the owner's words to them too); in the group only their own words.
    assert index_texts(store, "valparaiso") == ["what about Valparaiso?"] and index_is_consistent(store)
    assert ask(store, [ChatTurn("olga", ("Valparaiso?",))], scope="owner", partner_id=None) == [
        Recalled((ChatTurn("olga", ("what about Valparaiso?",)),), T0 + 180)
    ]


# -- recall ----------------------------------------------------------------------------------------------
def test_the_most_relevant_exchange_comes_first_whatever_its_age(store):
    store.insert_messages(
        [
            msg(ANNA, T0, "guitar concert tickets are sold out"),
            msg(OWNER, T0 + 60, "oh no"),
            msg(ANNA, T0 + 5 * DAY, "my guitar needs new strings"),
            msg(OWNER, T0 + 5 * DAY + 60, "buy them"),
        ]
    )
    recalled = ask(store)
    assert [r.date for r in recalled] == [T0, T0 + 5 * DAY]
    assert lines(recalled)[:2] == ["anna: guitar concert tickets are sold out", "olga: oh no"]
    assert [r.date for r in ask(store, k=1)] == [T0]


def test_the_most_recent_exchange_comes_first_when_scores_tie(store):
    days = (0, 5, 2)
    for d in days:
        store.insert_messages([msg(ANNA, T0 + d * DAY, "see you at the concert"), msg(OWNER, T0 + d * DAY + 60, "ok")])
    assert [r.date for r in ask(store)] == [T0 + 5 * DAY, T0 + 2 * DAY, T0]


def test_before_leaves_out_what_was_said_at_or_after_it(store):
    store.insert_messages(
        [
            msg(ANNA, T0, "concert at the harbour?"),
            msg(OWNER, T0 + 300, "yes, 8 pm"),
            msg(ANNA, T0 + 2 * DAY, "the concert was great"),
        ]
    )
    assert [r.date for r in ask(store, before=T0 + 2 * DAY)] == [T0]
    assert lines(ask(store, before=T0 + 200)) == ["anna: concert at the harbour?"]  # its reply came later
    assert ask(store, before=T0) == []
    assert [r.date for r in ask(store)] == [T0 + 2 * DAY, T0]


def test_the_context_around_a_hit_stays_within_its_session_and_a_few_messages(store):
    hit = T0 + DAY
    store.insert_messages(
        [
            msg(OWNER, hit - 2 * GAP, "yesterday's plan"),  # another session: not shown
            msg(ANNA, hit - 180, "one"),  # a third message before: beyond the messages shown around a hit
            msg(OWNER, hit - 120, "two"),
            msg(ANNA, hit - 60, "three"),
            msg(OWNER, hit, "the concert is at 8"),
            msg(ANNA, hit + 60, "great"),
            msg(OWNER, hit + 2 * GAP, "tomorrow's plan"),
        ]
    )
    assert lines(ask(store)) == ["olga: two", "anna: three", "olga: the concert is at 8", "anna: great"]


def test_query_terms_are_the_content_words_of_the_last_turns_newest_first():
    turns = [
        ChatTurn("anna", ("old topic: volcano",)),
        ChatTurn("olga", ("and what about you?",)),
        ChatTurn("anna", ("the guitar concert", "was it fun")),
    ]
    assert query_terms(turns) == ["fun", "guitar", "concert"]


# -- the memory block in the format ----------------------------------------------------------------------
def exchange(date: int, *said: tuple[str, str]) -> Recalled:
    return Recalled(tuple(ChatTurn(speaker, (text,)) for speaker, text in said), date)


SHORT = exchange(T0, ("anna", "guitar concert?"), ("olga", "sold out"))
LONG = exchange(T0 + 1, ("anna", "a long story about the guitar concert " * 8))
OTHER = exchange(T0 + 2, ("olga", "the harbour at 8"))


def test_the_token_budget_keeps_the_exchanges_that_fit_in_order_and_drops_the_rest(fmt):
    both = fmt.memory([SHORT, OTHER], 10_000)
    budget = len(both.ids)
    block = fmt.memory([SHORT, LONG, OTHER], budget)
    assert block.recalled == (SHORT, OTHER) and block.ids == both.ids  # the long one left out, the next tried
    assert fmt.memory([SHORT, LONG, OTHER], budget - 1).recalled == (SHORT,)
    assert fmt.memory([SHORT], 0).recalled == () and fmt.memory([SHORT], 0).ids == ()
    assert block.text == "anna: guitar concert?\nolga: sold out\n\nolga: the harbour at 8"


def test_the_memory_block_is_given_under_its_own_header_and_the_prompt_continues_after_it(fmt):
    turns = [ChatTurn("anna", ("hey how are you?",)), ChatTurn("olga", ("fine", "and you?"))]
    block = fmt.memory([SHORT, OTHER], 10_000)
    decoded = fmt.tokenizer.decode(list(block.ids))
    assert decoded == f"<|im_start|>{MEMORY_HEADER}\n{block.text}<|im_end|>"
    with_memory, without = fmt.render(turns, block), fmt.render(turns)
    assert with_memory.ids[: with_memory.prefix_len] == list(block.ids)  # this tokenizer adds no BOS
    assert with_memory.mask[: with_memory.prefix_len] == [0] * len(block.ids)  # never learned
    learned = [i for i, m in zip(with_memory.ids, with_memory.mask, strict=True) if m]
    assert learned == [i for i, m in zip(without.ids, without.mask, strict=True) if m]  # the turns learn the same
    assert fmt.prompt(turns, "olga", block) == with_memory.ids + fmt.header("olga", first=False)
    assert fmt.prompt([], "olga", block) == list(block.ids) + fmt.header("olga", first=False)
    assert fmt.tokenizer.decode(fmt.prompt(turns[:1], "olga", block)).endswith(
        "<|im_end|>\n<|im_start|>anna\nhey how are you?<|im_end|>\n<|im_start|>olga\n"
    )


def test_every_window_of_a_long_session_begins_with_the_memory_block(fmt):
    turns = [ChatTurn(("anna", "olga")[i % 2], (f"message {i} about the concert tonight",)) for i in range(24)]
    session = TrainingSession("7-1", ANNA, "train", "h", T0, turns, [ANNA, OWNER] * 12, recalled=(SHORT,))
    block = fmt.memory([SHORT], 10_000)
    examples = session_examples(fmt, session, max_len=200, context=0.25, memory_tokens=256)
    assert len(examples) > 2
    for ex in examples:
        assert ex.ids[: len(block.ids)] == list(block.ids) and len(ex) <= 200
        assert not any(ex.loss[: len(block.ids)])
    # Every token of the conversation is learned once, as without memory.
    assert sum(ex.n_loss for ex in examples) == sum(fmt.render(turns).mask)
    plain = session_examples(fmt, session, max_len=200, context=0.25, memory_tokens=0)
    assert all(ex.ids[: len(block.ids)] != list(block.ids) for ex in plain)
