from storage import Storage


def test_allow_by_username_learns_the_id_on_first_message(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.allow(username="@Alice")
    assert not store.is_allowed(5, None)
    assert store.is_allowed(5, "alice")
    assert store.is_allowed(5, None)
    assert not store.is_allowed(6, "alice")
    assert store.deny(username="alice") == 1
    assert not store.is_allowed(5, None)


def test_chat_persona_is_remembered_per_chat(tmp_path):
    store = Storage(tmp_path / "t.db")
    store.set_chat_persona(1, "friend2")
    store.set_chat_persona(2, "owner")
    store.set_chat_persona(1, "bob")
    store.close()
    store = Storage(tmp_path / "t.db")
    assert (store.chat_persona(1), store.chat_persona(2), store.chat_persona(3)) == ("bob", "owner", None)


def test_recent_bot_messages_are_the_newest_in_order(tmp_path):
    store = Storage(tmp_path / "t.db")
    for i in range(10):
        store.add_bot_message(1, 7, "bob", f"m{i}", from_twin=False, date=100 + i)
    store.add_bot_message(2, 8, "eve", "other chat", from_twin=False, date=105)
    assert [m["text"] for m in store.recent_bot_messages(1, since=103, limit=3)] == ["m7", "m8", "m9"]
    assert store.counts()["messages"] == 0  # the bot's conversations are never training data
