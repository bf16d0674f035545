"""The memory's rules asked in one place (core.memory) by every part: a group session recalls nothing in the
report and in training, as in the bot; excluding a person excludes the dialog memory searches; a dialog
search never returns another dialog's message; a memory block never takes more than a quarter of the
served context window. Real SQLite, a real tokenizer (tests/tiny.py)."""

from __future__ import annotations

import dataclasses

import pytest

from core.format import ChatFormat, ChatTurn, Recalled, memory_text
from core.memory import memory_budget
from core.recall import MemoryRequest, recall
from core.settings import Settings
from evaluation.generate import probes_for, with_probe_memory
from storage import Storage
from tests.test_memory_privacy import ANNA, BORIS, DAY, FAMILY, GAP, OWNER, QUESTION, T0, tell_secrets
from trainer.dataset import iter_sessions
from trainer.memory import adapter_session_memory, with_memory

MEMORY_META = {"memory": {"memory_scope": "owner", "memory_excerpts": 5, "memory_tokens": 256}}


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(tmp_path / "twin.db")
    s.turn_memory_index(True)  # as open_storage does with memory on
    tell_secrets(s)
    # A later family talk where Anna answers the owner: a spot where the report plays Anna in the group.
    s.insert_messages(
        {"dialog_id": FAMILY, "id": 50 + i, "sender_id": who, "date": T0 + 6 * DAY + 60 * i, "text": text}
        for i, (who, text) in enumerate(
            [(OWNER, "how is your sister in Valparaiso? Zeppelin Labs?"), (ANNA, "still at sea, brr")]
        )
    )
    for dialog in (ANNA, BORIS, FAMILY):
        s.rebuild_sessions(dialog, GAP)
    yield s
    s.close()


def settings_for(tmp_path, scope: str) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, owner_id=OWNER, memory_scope=scope, memory_excerpts=5)


def test_the_report_playing_a_friend_in_a_group_session_shows_no_private_memory(store, tmp_path):
    settings = settings_for(tmp_path, "pair")
    memory = adapter_session_memory(store, settings, MEMORY_META)
    sessions = list(iter_sessions(store, settings, "all"))
    family = [s for s in sessions if s.dialog_id == FAMILY and s.start == T0 + 6 * DAY]
    probes = probes_for(family, "anna", 5, 20)
    assert probes  # Anna answers the owner in the group
    assert all(p.recalled == () for p in with_probe_memory(probes, family, memory.recall_as))
    # The control: in her own chat with the owner, the report's Anna is shown what the two of them said.
    later = dataclasses.replace(next(s for s in sessions if s.dialog_id == ANNA), start=T0 + 10 * DAY)
    recalled = memory.recall_as(later, [ChatTurn("olga", (QUESTION,))], "anna")
    assert "Valparaiso" in memory_text(recalled)


def test_training_recalls_nothing_for_a_group_session(store, tmp_path):
    settings = settings_for(tmp_path, "owner")
    sessions = with_memory(store, settings, OWNER, list(iter_sessions(store, settings, "all")))
    late_family = next(s for s in sessions if s.dialog_id == FAMILY and s.start == T0 + 6 * DAY)
    assert late_family.recalled == ()
    # The control: a one-to-one session with Boris, later than Anna's, is shown the owner's own words.
    store.insert_messages(
        {"dialog_id": BORIS, "id": 70 + i, "sender_id": who, "date": T0 + 7 * DAY + 60 * i, "text": text}
        for i, (who, text) in enumerate([(BORIS, "how is Valparaiso? Zeppelin?"), (OWNER, "no idea")])
    )
    store.rebuild_sessions(BORIS, GAP)
    sessions = with_memory(store, settings, OWNER, list(iter_sessions(store, settings, "all")))
    boris_late = next(s for s in sessions if s.dialog_id == BORIS and s.start == T0 + 7 * DAY)
    assert boris_late.recalled and "Zeppelin" in memory_text(boris_late.recalled)


def ask(store: Storage, persona: int, partner: int, question: str = QUESTION) -> str:
    request = MemoryRequest(OWNER, persona, partner, "pair", k=5, gap_seconds=GAP)
    return memory_text(recall(store, request, [ChatTurn("someone", (question,))]))


def test_excluding_a_person_excludes_the_very_dialog_memory_searches(store):
    """An anonymised export: Boris's chat carries the id that is Anna's user id, and Anna's own chat is
    dialog 5000. `twin exclude anna` and the memory must find the same dialog of hers."""
    store.upsert_dialog({"id": 5000, "type": "personal_chat", "name": "Anna", "person_id": ANNA})
    store.conn.execute("UPDATE dialogs SET person_id = ? WHERE id = ?", (BORIS, ANNA))
    store.insert_messages(
        [{"dialog_id": 5000, "id": 1, "sender_id": ANNA, "date": T0 + 9 * DAY, "text": "Valparaiso harbour tour"}]
    )
    assert "harbour" in ask(store, OWNER, ANNA)  # the control: Anna's own chat is what memory searches
    store.set_excluded(store.dialog_of("anna")["id"], True)  # what `twin exclude anna` and /exclude do
    text = ask(store, OWNER, ANNA)
    assert "harbour" not in text and "sister" not in text and "boris" not in text, text


def test_a_dialog_search_never_returns_a_message_of_another_dialog(store):
    """An index row in Boris's part of the index pointing at a message of Anna's (a stale or damaged row):
    the search of Boris's dialog must not show it."""
    annas = store.query("SELECT rowid FROM messages WHERE dialog_id = ? AND text LIKE '%sister%'", (ANNA,))[0][0]
    slot = store.query("SELECT slot FROM memory_dialogs WHERE dialog_id = ?", (BORIS,))[0][0]
    store.conn.execute("INSERT INTO memory (rowid, text) VALUES (?, 'sister')", ((slot << 36) | annas,))
    assert "sister" not in ask(store, OWNER, BORIS, "my sister?")
    assert "sister" in ask(store, OWNER, ANNA, "my sister?")  # the control


@pytest.fixture(scope="module")
def fmt(tmp_path_factory) -> ChatFormat:
    from tests.tiny import build_tokenizer

    return ChatFormat(build_tokenizer(tmp_path_factory.mktemp("rules-tokenizer")))


async def test_a_served_memory_block_takes_a_quarter_of_the_context_window_at_most(fmt):
    from tests.test_engine import ScriptedEngine

    engine = ScriptedEngine(fmt, {})
    engine.max_context = 256
    said = [Recalled((ChatTurn("anna", (f"Новосибирск 北京 {i}",)),), T0 + i) for i in range(40)]
    block = engine.memory_block(said, 100_000)  # TWIN_MEMORY_TOKENS far beyond the window
    assert 0 < len(block.ids) <= 256 // 4 == memory_budget(100_000, 256)
    assert len(engine.memory_block(said, 40).ids) <= 40  # a smaller TWIN_MEMORY_TOKENS still rules
