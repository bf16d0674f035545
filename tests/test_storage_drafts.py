import sqlite3

import pytest

from storage import Storage


def test_drafts_record_decisions_and_count_them_per_persona_and_adapter(tmp_path):
    store = Storage(tmp_path / "t.db")
    a = store.open_draft(5, "olga", 1, "hi there")
    b = store.open_draft(6, "olga", 1, "see you")
    c = store.open_draft(7, "olga", 2, "ok")
    store.open_draft(8, "olga", 2, "left open")
    store.close_draft(a, "accepted", "hi there", 0)
    store.close_draft(b, "edited", "see you soon", 5)
    store.close_draft(c, "ignored")
    store.close_draft(a, "ignored")  # decided once: a later close changes nothing
    assert store.draft(a)["verdict"] == "accepted" and store.draft(b)["owner_text"] == "see you soon"
    assert [d["dialog_id"] for d in store.open_drafts()] == [8]
    store.close()
    stats = Storage(tmp_path / "t.db").draft_stats()
    assert [(s["adapter_version"], s["written"], s["accepted"], s["edited"], s["ignored"]) for s in stats] == [
        (1, 2, 1, 1, 0),
        (2, 2, 0, 0, 1),
    ]
    assert stats[0]["mean_distance"] == 5


def test_a_draft_verdict_must_be_one_of_three(tmp_path):
    store = Storage(tmp_path / "t.db")
    with pytest.raises(ValueError):
        store.close_draft(store.open_draft(5, "olga", None, "x"), "maybe")
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("UPDATE drafts SET verdict = 'maybe'")


def test_preference_pairs_are_edited_drafts_outside_held_out_sessions(tmp_path):
    """Each pair names the training session holding the owner's reply; a reply in a held-out session, or a
    draft closed without a reply's id (an older row), gives none."""
    store = Storage(tmp_path / "t.db")
    held_out, trained, accepted, unknown = (store.open_draft(d, "olga", 1, "ok\nи ты?") for d in (5, 6, 7, 8))
    for draft_id in (held_out, trained):
        store.close_draft(draft_id, "edited", "okay! 好的", 3, reply_message_id=2)
    store.close_draft(accepted, "accepted", "ok", 0, reply_message_id=2)
    store.close_draft(unknown, "edited", "okay!", 3)
    for dialog_id, split in ((5, "eval"), (6, "train"), (7, "train"), (8, "train")):
        session = {"id": f"{dialog_id}-1", "dialog_id": dialog_id, "first_message_id": 1, "last_message_id": 2}
        session |= {"start": 0, "end": 60, "n_messages": 2, "n_turns": 2, "closed": 1}
        store.replace_sessions(dialog_id, [session | {"split": split, "content_hash": "x"}])
    pairs = store.draft_preference_pairs()
    assert [(p["dialog_id"], p["session_id"], p["text"], p["owner_text"], p["reply_message_id"]) for p in pairs] == [
        (6, "6-1", "ok\nи ты?", "okay! 好的", 2)
    ]


def test_forget_deletes_the_drafts_of_their_chat(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.upsert_people([{"id": 5, "first_name": "Anna"}, {"id": 6, "first_name": "Bob"}])
    for person in (5, 6):
        store.upsert_dialog({"id": person, "type": "personal_chat", "person_id": person})
        store.open_draft(person, "olga", None, f"see you {person}")
    store.forget_person(5, 3600)
    assert [d["dialog_id"] for d in store.open_drafts()] == [6]
