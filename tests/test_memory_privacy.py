"""Who may be recalled to whom: a fact said only to Anna (by her, or by the owner to her) never reaches a memory
block built for Boris, under every setting that forbids it. Checked where memory is built (core.recall.recall),
through the real bot (aiogram Dispatcher, real SQLite; only the Bot API and the engine are doubles that record
what they were given), and in training (trainer.memory). Each check has a positive control: the same fact IS
recalled where it may be, so a memory that recalls nothing at all cannot pass.
"""

from __future__ import annotations

import pytest

from bot.handlers.guard import REFUSAL
from core.format import ChatTurn, Recalled, memory_text
from core.recall import MEMORY_SCOPES, MemoryRequest, recall
from core.settings import Settings
from storage import Storage
from tests.bot_fakes import BOT_USERNAME, OWNER, TwinUnderTest
from trainer.dataset import iter_sessions
from trainer.memory import with_memory

ANNA, BORIS, CARL, DINA, FAMILY = 2001, 2002, 2003, 2004, -3001
GAP, DAY, T0 = 3600, 86400, 1_600_000_000
QUESTION = "how is your sister in Valparaiso? still at Zeppelin Labs?"
# Every word only Anna said (to the owner, or in the family group): none may reach anyone but her.
ANNAS_WORDS = ("sister", "valparaiso", "congrats", "cousin", "wedding")


def tell_secrets(store: Storage) -> None:
    """The owner olga's history: a secret with Anna, small talk with Boris, a family group, an excluded
    dialog with Carl and one with Dina (forgotten by some tests)."""
    store.upsert_people(
        [{"id": OWNER, "username": "olga"}]
        + [{"id": pid, "username": name} for pid, name in ((ANNA, "anna"), (BORIS, "boris"), (CARL, "carl"))]
        + [{"id": DINA, "username": "dina"}]
    )
    store.set_meta("owner_id", OWNER)
    for pid in (ANNA, BORIS, CARL, DINA):
        store.upsert_dialog({"id": pid, "type": "personal_chat", "name": str(pid), "person_id": pid})
    store.upsert_dialog({"id": FAMILY, "type": "private_group", "name": "Family"})
    said = [
        (ANNA, ANNA, 0, "my sister moved to Valparaiso"),
        (ANNA, OWNER, 60, "I start at Zeppelin Labs in March"),  # the owner's words, to Anna only
        (ANNA, ANNA, 120, "congrats on Zeppelin Labs!"),
        (BORIS, BORIS, DAY, "hiking on Sunday?"),
        (BORIS, OWNER, DAY + 60, "yes, hiking at 9"),
        (FAMILY, ANNA, 2 * DAY, "Valparaiso cousin wedding in June"),
        (FAMILY, OWNER, 2 * DAY + 60, "I'll bring my Zeppelin Labs badge"),
        (CARL, CARL, 3 * DAY, "Valparaiso salary rumours"),
        (CARL, OWNER, 3 * DAY + 60, "Zeppelin Labs salary is secret"),
        (DINA, DINA, 4 * DAY, "Valparaiso bonus trip?"),
        (DINA, OWNER, 4 * DAY + 60, "Zeppelin Labs bonus is huge"),
    ]
    store.insert_messages(
        {"dialog_id": d, "id": i, "sender_id": s, "date": T0 + t, "text": text, "source": "test"}
        for i, (d, s, t, text) in enumerate(said, 1)
    )
    store.set_excluded(CARL, True)


@pytest.fixture
def store(tmp_path) -> Storage:
    s = Storage(tmp_path / "twin.db")
    s.turn_memory_index(True)  # as open_storage does with memory on
    tell_secrets(s)
    yield s
    s.close()


def recalled_text(store: Storage, persona: int, partner: int, scope: str, question: str = QUESTION) -> str:
    request = MemoryRequest(OWNER, persona, partner, scope, k=5, gap_seconds=GAP)  # type: ignore[arg-type]
    return memory_text(recall(store, request, [ChatTurn("someone", (question,))]))


def speakers(text: str) -> set[str]:
    return {line.split(":")[0] for line in text.splitlines() if line}


def assert_none_of_annas_words(text: str) -> None:
    assert not any(word in text.lower() for word in ANNAS_WORDS), text
    assert "anna" not in speakers(text), text


# -- where memory is built -------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", MEMORY_SCOPES)
def test_what_was_said_only_to_anna_never_reaches_boris(store, scope):
    for_boris = recalled_text(store, OWNER, BORIS, scope)
    assert_none_of_annas_words(for_boris)
    for_anna = recalled_text(store, OWNER, ANNA, scope)
    if scope == "off":
        assert for_boris == for_anna == ""
        return
    assert "anna: my sister moved to Valparaiso" in for_anna  # the control: Anna's own chat recalls it
    assert "olga: I start at Zeppelin Labs in March" in for_anna
    if scope == "pair":  # nothing Boris and the owner did not say to each other
        assert speakers(for_boris) <= {"olga", "boris"} and "zeppelin" not in for_boris.lower()
    else:  # the opt-in: the owner's own words from every chat, and only the owner's
        assert speakers(for_boris) == {"olga"}
        assert "olga: I start at Zeppelin Labs in March" in for_boris
        assert "olga: I'll bring my Zeppelin Labs badge" in for_boris


@pytest.mark.parametrize("scope", MEMORY_SCOPES)
def test_the_twin_playing_anna_for_boris_recalls_nothing(store, scope):
    assert recalled_text(store, ANNA, BORIS, scope) == ""
    assert recalled_text(store, BORIS, ANNA, scope) == ""
    # The control: Anna's persona talking to the owner remembers what the two of them said.
    assert ("Valparaiso" in recalled_text(store, ANNA, OWNER, scope)) == (scope != "off")


@pytest.mark.parametrize("scope", MEMORY_SCOPES)
def test_an_excluded_dialog_is_never_recalled(store, scope):
    for persona, partner in ((OWNER, CARL), (OWNER, BORIS), (CARL, OWNER), (OWNER, OWNER)):
        assert "salary" not in recalled_text(store, persona, partner, scope)
    store.set_excluded(CARL, False)  # the control: included again, it is recalled
    assert ("salary" in recalled_text(store, OWNER, CARL, scope)) == (scope != "off")


@pytest.mark.parametrize("scope", MEMORY_SCOPES)
def test_a_forgotten_person_is_never_recalled(store, scope):
    assert ("bonus" in recalled_text(store, OWNER, DINA, scope)) == (scope != "off")  # the control
    assert ("bonus" in recalled_text(store, OWNER, BORIS, scope)) == (scope == "owner")
    store.forget_person("dina", GAP)
    for persona, partner in ((OWNER, DINA), (OWNER, BORIS), (DINA, OWNER), (OWNER, OWNER)):
        assert "bonus" not in recalled_text(store, persona, partner, scope)


# -- through the bot -------------------------------------------------------------------------------------
@pytest.fixture
def twin_for(tmp_path):
    made = []

    def make(scope: str) -> TwinUnderTest:
        twin = TwinUnderTest(tmp_path / f"data-{len(made)}", memory_scope=scope, memory_excerpts=5)
        tell_secrets(twin.store)
        for user in (ANNA, BORIS, FAMILY):
            twin.store.allow(user_id=user)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        twin.close()


def memory_of_last_reply(twin: TwinUnderTest) -> str:
    return twin.engine.calls[-1]["memory"].text


@pytest.mark.parametrize("scope", MEMORY_SCOPES)
async def test_the_bot_never_tells_boris_what_was_said_only_to_anna(twin_for, scope):
    twin = twin_for(scope)
    await twin.say(BORIS, QUESTION)
    for_boris = memory_of_last_reply(twin)
    assert_none_of_annas_words(for_boris)
    assert twin.engine.calls[-1]["persona"] == "olga"
    await twin.say(OWNER, "/why boris")
    assert_none_of_annas_words(twin.session.texts(OWNER)[-1])
    await twin.say(ANNA, QUESTION)
    for_anna = memory_of_last_reply(twin)
    if scope == "off":
        assert for_boris == for_anna == ""
        return
    assert "anna: my sister moved to Valparaiso" in for_anna  # the control
    assert ("Zeppelin" in for_boris) == (scope == "owner") and speakers(for_boris) <= {"olga", "boris"}


async def test_memory_is_off_until_the_owner_turns_it_on(tmp_path):
    twin = TwinUnderTest(tmp_path / "data")  # the settings' defaults
    try:
        tell_secrets(twin.store)
        twin.store.allow(user_id=ANNA)
        await twin.say(ANNA, QUESTION)
        assert twin.settings.memory_scope == "off" and memory_of_last_reply(twin) == ""
    finally:
        twin.close()


@pytest.mark.parametrize("scope", ["pair", "owner"])
async def test_the_bot_playing_anna_for_boris_recalls_nothing(twin_for, scope):
    twin = twin_for(scope)
    twin.store.set_published("anna", True)
    await twin.say(BORIS, "/persona anna")
    await twin.say(BORIS, QUESTION)
    assert twin.engine.calls[-1]["persona"] == "anna" and memory_of_last_reply(twin) == ""
    # The control: the owner talking to Anna's persona is shown what the two of them said.
    await twin.say(OWNER, "/persona anna")
    await twin.say(OWNER, QUESTION)
    assert twin.engine.calls[-1]["persona"] == "anna"
    assert "anna: my sister moved to Valparaiso" in memory_of_last_reply(twin)


@pytest.mark.parametrize("scope", ["pair", "owner"])
async def test_the_bot_recalls_nothing_in_a_group(twin_for, scope):
    twin = twin_for(scope)
    await twin.say(ANNA, f"@{BOT_USERNAME} {QUESTION}", chat_id=FAMILY, chat_type="group")
    assert len(twin.engine.calls) == 1 and memory_of_last_reply(twin) == ""
    await twin.say(ANNA, QUESTION)  # the control: in her own chat with the bot she is reminded
    assert "Valparaiso" in memory_of_last_reply(twin)


async def test_the_bot_never_recalls_excluded_or_forgotten_dialogs(twin_for):
    twin = twin_for("owner")
    await twin.say(BORIS, "any news about the Zeppelin Labs salary and the bonus?")
    assert "bonus" in memory_of_last_reply(twin) and "salary" not in memory_of_last_reply(twin)
    twin.store.forget_person("dina", GAP)
    await twin.say(BORIS, "any news about the Zeppelin Labs salary and the bonus?")
    assert "Zeppelin" in memory_of_last_reply(twin)  # still the owner's words elsewhere
    assert "bonus" not in memory_of_last_reply(twin) and "salary" not in memory_of_last_reply(twin)


# -- /why ------------------------------------------------------------------------------------------------
async def test_why_shows_the_owner_the_memory_the_last_reply_in_a_chat_used(twin_for):
    twin = twin_for("pair")
    await twin.say(OWNER, "/why")
    assert twin.session.texts(OWNER)[-1] == "No memory was used for the last reply in this chat."
    await twin.say(ANNA, QUESTION)
    block = twin.engine.calls[-1]["memory"]
    await twin.say(OWNER, "/why anna")
    assert twin.session.texts(OWNER)[-1] == (
        f"The last reply to anna recalled {len(block.recalled)} earlier exchange(s):\n\n{block.text}"
    )
    assert "anna: my sister moved to Valparaiso" in block.text
    await twin.say(OWNER, f"/why {ANNA}")  # by user id too
    assert twin.session.texts(OWNER)[-1].startswith("The last reply to anna recalled")
    await twin.say(BORIS, QUESTION)
    await twin.say(OWNER, "/why boris")
    assert twin.session.texts(OWNER)[-1] == "No memory was used for the last reply to boris."
    await twin.say(OWNER, "/persona anna")
    await twin.say(OWNER, QUESTION)
    await twin.say(OWNER, "/why")
    assert "anna: my sister moved to Valparaiso" in twin.session.texts(OWNER)[-1]
    await twin.say(OWNER, "/why ghost")
    assert "no person 'ghost'" in twin.session.texts(OWNER)[-1]


async def test_why_is_refused_to_everyone_but_the_owner(twin_for):
    twin = twin_for("pair")
    await twin.say(ANNA, QUESTION)
    calls = len(twin.engine.calls)
    await twin.say(ANNA, "/why")
    await twin.say(BORIS, "/why anna")
    assert twin.session.texts(ANNA)[-1] == REFUSAL and twin.session.texts(BORIS) == [REFUSAL]
    assert len(twin.engine.calls) == calls


# -- in training -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["pair", "owner"])
def test_training_memory_comes_only_from_earlier_sessions_that_are_not_held_out(tmp_path, scope):
    store = Storage(tmp_path / "twin.db")
    store.turn_memory_index(True)
    tell_secrets(store)
    days = range(5, 10)
    store.insert_messages(
        {"dialog_id": ANNA, "id": 100 + 2 * d + i, "sender_id": sender, "date": T0 + d * DAY + 60 * i, "text": text}
        for d in days
        for i, (sender, text) in enumerate(
            [(ANNA, f"any news about the telescope day{d}?"), (OWNER, f"the telescope day{d} is fine")]
        )
    )
    store.rebuild_sessions(ANNA, GAP)
    held_out = next(s for s in store.sessions() if s["start"] == T0 + 7 * DAY)
    store.conn.execute("UPDATE sessions SET split = CASE id WHEN ? THEN 'eval' ELSE 'train' END", (held_out["id"],))
    settings = Settings(_env_file=None, data_dir=tmp_path, owner_id=OWNER, memory_scope=scope, memory_excerpts=5)
    sessions = {s.start: s for s in with_memory(store, settings, OWNER, list(iter_sessions(store, settings, "all")))}

    def days_recalled(day: int) -> set[int]:
        recalled: tuple[Recalled, ...] = sessions[T0 + day * DAY].recalled
        text = memory_text(recalled)
        assert all(r.date < T0 + day * DAY for r in recalled)
        return {d for d in days if f"day{d}" in text}

    assert days_recalled(5) == set()
    assert days_recalled(6) == {5}
    assert days_recalled(8) == {5, 6}  # not day 7: held out
    assert days_recalled(9) == {5, 6, 8}  # the control: every earlier training session
    assert days_recalled(7) == {5, 6}  # a held-out session is shown memory the same way
    assert all("day7" not in memory_text(s.recalled) for s in sessions.values())


# -- twin chat -------------------------------------------------------------------------------------------
async def test_twin_chat_recalls_by_the_same_rules_and_shows_what_each_reply_was_shown(tmp_path, monkeypatch):
    from engine.chat import ChatRoles, chat, memory_lines
    from engine.commands import chat_recall
    from tests.bot_fakes import EngineDouble

    store = Storage(tmp_path / "twin.db")
    store.turn_memory_index(True)  # `twin chat` opens it with open_storage: memory on builds the index
    tell_secrets(store)
    settings = Settings(_env_file=None, data_dir=tmp_path, owner_id=OWNER, memory_scope="pair")

    async def talk(persona: str, partner: str) -> list[str]:
        engine, shown = EngineDouble(), []
        lines = iter([QUESTION + "\n", "hiking on Sunday?\n", ""])
        recall_ = chat_recall(store, settings, ChatRoles(persona, partner, None))
        await chat(
            engine, ChatRoles(persona, partner, None), lambda: next(lines), lambda _: None, recall_, 256, shown.append
        )
        assert [call["memory"] for call in engine.calls] == shown  # what is shown is what each reply got
        return ["\n".join(memory_lines(block)) for block in shown]

    for_boris = await talk("olga", "boris")
    assert_none_of_annas_words(for_boris[0])
    assert for_boris[0] == "[memory] none" and "[memory] boris: hiking on Sunday?" in for_boris[1].splitlines()
    assert "[memory] anna: my sister moved to Valparaiso" in (await talk("olga", "anna"))[0].splitlines()
    assert await talk("anna", "boris") == ["[memory] none"] * 2
    monkeypatch.setattr(settings, "memory_scope", "off")
    assert chat_recall(store, settings, ChatRoles("olga", "anna", None)) is None
