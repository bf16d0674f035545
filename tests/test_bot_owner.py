"""Owner commands, personas and the refusal of owner commands to everyone else (real Dispatcher)."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.filters import Command

from bot.handlers.forget import ForgetButton
from bot.handlers.guard import REFUSAL
from bot.menu import OWNER_COMMANDS, PUBLIC_COMMANDS, set_menu
from collector.telethon_client import NotLoggedIn
from tests.bot_fakes import OWNER, TwinUnderTest, fake_sync_client
from tests.fake_telegram import FakeAccount, FakeTelegramClient
from trainer.rounds import RoundOptions
from trainer.runner import TrainingOutcome

FRIEND, STRANGER, KIRA = 2000, 3000, 2001


def add_history(store, person_id: int, n: int = 6) -> None:
    store.upsert_dialog({"id": person_id, "type": "personal_chat", "name": f"p{person_id}", "person_id": person_id})
    store.insert_messages(
        [
            {
                "dialog_id": person_id,
                "id": i,
                "sender_id": (OWNER, person_id)[i % 2],
                "date": 1_000_000 + 60 * i,
                "text": f"m{i}",
            }
            for i in range(1, n + 1)
        ]
    )
    store.rebuild_sessions(person_id, 3600)


def add_adapter(store, version: int, status: str, eval_loss: float, sessions=()) -> None:
    store.add_adapter(
        {
            "version": version,
            "run_id": version,
            "base_model": "tiny",
            "path": f"adapters/{version:04d}",
            "status": status,
            "eval_loss": eval_loss,
            "n_sessions": len(sessions),
        },
        [(sid, "h") for sid in sessions],
    )


class FakeTraining:
    """The trainer's subprocess round as the bot sees it (trainer.runner's interface): progress events,
    then an outcome. It writes an adapter row as the real round would."""

    def __init__(self, store):
        self.store, self.calls, self.error = store, [], None
        self.hold: asyncio.Event | None = None  # the next round waits for it (a round that is running)
        self.warnings: list[str] = []  # what the round noticed, as the trainer reports it

    async def __call__(self, settings, opts, on_progress):
        self.calls.append(opts)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            await hold.wait()
        await on_progress({"event": "step", "step": 1, "of": 2, "loss": 2.5})
        if self.error:
            return TrainingOutcome("error", 2, error=self.error)
        version = self.store.next_adapter_version()
        add_adapter(self.store, version, "candidate", 1.5)
        self.store.activate_adapter(version)
        final = {
            "event": "done",
            "version": version,
            "promoted": True,
            "eval_loss": 1.5,
            "reason": "first adapter",
            "warnings": self.warnings,
        }
        return TrainingOutcome("done", 0, version=version, promoted=True, eval_loss=1.5, final=final)


@pytest.fixture
def account():
    acc = FakeAccount(me_id=OWNER, first_name="Olga", username="olga")
    acc.add_user(FRIEND, "Sasha")
    acc.add_messages(FRIEND, 4)
    return acc


@pytest.fixture
def twin(tmp_path, account):
    holder = {}
    t = TwinUnderTest(
        tmp_path / "data",
        train=lambda *a, **k: holder["train"](*a, **k),
        sync_client=fake_sync_client(FakeTelegramClient(account)),
    )
    holder["train"] = t.training = FakeTraining(t.store)
    t.store.upsert_people(
        [
            {"id": OWNER, "first_name": "Olga", "username": "olga"},
            {"id": FRIEND, "first_name": "Sasha"},
            {"id": KIRA, "first_name": "Кира"},
        ]
    )
    add_history(t.store, FRIEND)
    add_history(t.store, KIRA)
    t.store.allow(user_id=FRIEND)
    yield t
    t.close()


def dispatcher_commands(dp) -> set[str]:
    """Every command any handler of the dispatcher's router tree reacts to."""
    found, routers = set(), [dp]
    while routers:
        router = routers.pop()
        routers += router.sub_routers
        for handler in router.message.handlers:
            for f in handler.filters or []:
                if isinstance(f.callback, Command):
                    found |= {c for c in f.callback.commands if isinstance(c, str)}
    return found


def snapshot(store) -> list[str]:
    return list(store.conn.iterdump())


ARGS = {"allow": "5555", "deny": str(FRIEND), "rollback": "1", "publish": "kira", "forget": "sasha"}


def test_every_command_is_public_or_listed_as_the_owners(twin):
    commands = dispatcher_commands(twin.dp)
    assert commands - set(PUBLIC_COMMANDS) == set(OWNER_COMMANDS)


@pytest.mark.parametrize("command", sorted(OWNER_COMMANDS))
@pytest.mark.parametrize("who", ["allowed friend", "stranger", "owner in a group"])
async def test_owner_commands_are_refused_to_everyone_else_with_no_side_effect(twin, command, who):
    add_adapter(twin.store, 1, "retired", 2.0)
    add_adapter(twin.store, 2, "active", 1.8)
    twin.store.set_published("sasha", True)
    twin.store.allow(user_id=-700)
    before = snapshot(twin.store)
    user, chat = {
        "allowed friend": (FRIEND, FRIEND),
        "stranger": (STRANGER, STRANGER),
        "owner in a group": (OWNER, -700),
    }[who]
    text = f"/{command} {ARGS.get(command, 'sasha')}"
    await twin.say(user, text, chat_id=chat, chat_type="private" if chat > 0 else "group")
    await asyncio.sleep(0.05)
    assert snapshot(twin.store) == before
    assert twin.training.calls == [] and twin.engine.calls == [] and twin.jobs.running() == []
    sent = [s for s in twin.session.sent if s.method != "sendChatAction"]
    expected = [] if who == "stranger" else [REFUSAL]
    assert [s.data.get("text") for s in sent] == expected


async def test_a_forged_forget_button_from_someone_else_does_nothing(twin):
    before = snapshot(twin.store)
    data = ForgetButton(person_id=FRIEND, confirm=True).pack()
    await twin.feed(twin.button(FRIEND, data))
    await twin.feed(twin.button(OWNER, data, chat_id=FRIEND))  # the owner's id, but not in the owner's chat
    await twin.settle()
    assert snapshot(twin.store) == before and twin.training.calls == []


async def test_menu_shows_owner_commands_only_in_the_owners_chat(twin):
    await set_menu(twin.bot, OWNER)
    default, owner = twin.session.calls("setMyCommands")
    assert default.data["scope"]["type"] == "default"
    assert {c["command"] for c in default.data["commands"]} == set(PUBLIC_COMMANDS)
    assert owner.data["scope"] == {"type": "chat", "chat_id": OWNER}
    assert {c["command"] for c in owner.data["commands"]} == set(PUBLIC_COMMANDS) | set(OWNER_COMMANDS)


async def test_persona_switch_is_stored_and_used_for_replies(twin):
    await twin.say(OWNER, "/persona")
    assert "Here I'm olga" in twin.session.texts(OWNER)[-1] and "kira" in twin.session.texts(OWNER)[-1]
    await twin.say(OWNER, "/persona sasha")
    await twin.say(OWNER, "hey")
    assert twin.store.chat_persona(OWNER) == "sasha"
    assert twin.engine.calls[-1]["persona"] == "sasha" and twin.engine.calls[-1]["partner"] == "olga"


async def test_others_may_pick_only_published_personas(twin):
    await twin.say(FRIEND, "/persona kira")
    assert "no persona 'kira'" in twin.session.texts(FRIEND)[-1]
    await twin.say(OWNER, "/publish kira")
    await twin.say(FRIEND, "/persona kira")
    await twin.say(FRIEND, "hi")
    assert twin.engine.calls[-1]["persona"] == "kira"
    await twin.say(OWNER, "/unpublish kira")
    await twin.say(FRIEND, "hi again")
    assert twin.engine.calls[-1]["persona"] == "olga"  # back to the default once unpublished


async def test_personas_lists_message_counts(twin):
    await twin.say(OWNER, "/personas")
    listing = twin.session.texts(OWNER)[-1]
    assert "olga — 6 messages (here now, default)" in listing and "kira — 3 messages" in listing


async def test_allow_deny_allowed(twin):
    await twin.say(OWNER, "/allow @mira")
    await twin.say(OWNER, "/allow kira")
    await twin.say(OWNER, "/allowed")
    assert twin.session.texts(OWNER)[-1] == f"Allowed: {FRIEND}, @mira, {KIRA}"
    await twin.say(OWNER, "/deny @mira")
    assert twin.store.is_allowed(9999, "mira") is False
    await twin.say(OWNER, "/allow what is this")
    assert "give a Telegram user id" in twin.session.texts(OWNER)[-1]


async def test_exclude_and_include_a_dialog(twin):
    await twin.say(OWNER, "/exclude kira")
    assert twin.store.dialog(KIRA)["excluded"] == 1
    await twin.say(OWNER, "/include kira")
    assert twin.store.dialog(KIRA)["excluded"] == 0
    await twin.say(OWNER, "/exclude nobody")
    assert "no person 'nobody'" in twin.session.texts(OWNER)[-1]


async def test_sync_runs_the_collector_and_reports_the_summary(twin):
    await twin.say(OWNER, "/sync")
    texts = twin.session.texts(OWNER)
    assert texts[0].startswith("Syncing") and texts[-1].startswith("Sync done.") and "4 new" in texts[-1]


async def test_the_bots_syncs_re_read_the_last_days_when_set(tmp_path):
    import datetime as dt

    account = FakeAccount(me_id=OWNER)
    account.add_user(FRIEND, "Sasha")
    account.clock = dt.datetime.now(dt.UTC) - dt.timedelta(hours=6)
    ids = account.add_messages(FRIEND, 4)
    twin = TwinUnderTest(
        tmp_path / "data", sync_client=fake_sync_client(FakeTelegramClient(account)), sync_refresh_days=1
    )
    try:
        await twin.say(OWNER, "/sync")
        account.delete(FRIEND, ids[1])
        await twin.say(OWNER, "/sync")
        assert "1 deleted on Telegram" in twin.session.texts(OWNER)[-1]
        assert [m["id"] for m in twin.store.messages(FRIEND)] == [ids[0], *ids[2:]]
    finally:
        twin.close()


async def test_a_failed_sync_is_reported_and_the_bot_goes_on(twin):
    def broken(settings):
        raise NotLoggedIn("the Telegram session is not logged in: run `twin login`")

    twin.jobs._sync_client = broken
    await twin.say(OWNER, "/sync")
    assert twin.session.texts(OWNER)[-1] == "Sync failed: the Telegram session is not logged in: run `twin login`"
    await twin.say(OWNER, "hey")
    assert twin.session.texts(OWNER)[-1] == "olga re: hey"


async def test_retrain_reports_progress_and_the_new_version_and_the_next_reply_uses_it(twin):
    await twin.say(OWNER, "/retrain")
    texts = twin.session.texts(OWNER)
    assert texts[0].startswith("Training a new adapter") and "Training: step 1/2, loss 2.5000" in texts
    assert texts[-1] == "Adapter 0001: eval loss 1.5000, promoted: I answer with it from now on (first adapter)."
    assert twin.training.calls == [RoundOptions()]
    await twin.say(OWNER, "hey")
    assert twin.engine.calls[-1]["adapter"].version == 1


async def test_the_rounds_warnings_reach_the_owner(twin):
    twin.training.warnings = ["evaluation report FAILED: 2 eval sessions are in the adapter's training data"]
    await twin.say(OWNER, "/retrain")
    assert twin.session.texts(OWNER)[-1].splitlines() == [
        "Adapter 0001: eval loss 1.5000, promoted: I answer with it from now on (first adapter).",
        "Warning: evaluation report FAILED: 2 eval sessions are in the adapter's training data",
    ]


async def test_a_failed_training_is_reported(twin):
    twin.training.error = "the trainer killed (out of memory?) without a result"
    await twin.say(OWNER, "/retrain")
    assert twin.session.texts(OWNER)[-1] == "Training failed: the trainer killed (out of memory?) without a result"
    await twin.say(OWNER, "hey")
    assert twin.session.texts(OWNER)[-1] == "olga re: hey"


async def test_an_adapter_of_another_base_model_is_not_served_and_status_says_why(tmp_path):
    twin = TwinUnderTest(tmp_path / "data", base_model="Qwen/Qwen2.5-7B-Instruct")
    try:
        add_adapter(twin.store, 1, "active", 2.0)  # trained on "tiny"
        await twin.say(OWNER, "hey")
        assert twin.engine.calls[-1]["adapter"] is None
        await twin.say(OWNER, "/status")
        assert "Active adapter: 0001, trained on tiny, not on TWIN_BASE_MODEL" in twin.session.texts(OWNER)[-1]
    finally:
        twin.close()


async def test_status_adapters_and_rollback(twin, tmp_path):
    add_adapter(twin.store, 1, "retired", 2.0)
    add_adapter(twin.store, 2, "active", 1.8)
    folder = twin.settings.data_dir / "adapters" / "0002"
    folder.mkdir(parents=True)
    (folder / "loss.png").write_bytes(b"\x89PNG\r\n")
    await twin.say(OWNER, "/status")
    assert "Active adapter: 0002 (eval loss 1.8000" in twin.session.texts(OWNER)[-1]
    assert twin.session.calls("sendPhoto", OWNER)
    await twin.say(OWNER, "/adapters")
    assert twin.session.texts(OWNER)[-1].splitlines()[1].startswith("0002 active: eval loss 1.8000")
    await twin.say(OWNER, "/rollback")
    assert twin.session.texts(OWNER)[-1] == "Adapter 0001 is active now (was 0002); the next reply uses it."
    assert twin.store.active_adapter()["version"] == 1


async def test_rollback_waits_for_a_round_running_in_another_process(twin):
    from trainer.registry import LOCK

    add_adapter(twin.store, 1, "retired", 2.0)
    add_adapter(twin.store, 2, "active", 1.8)
    twin.store.acquire_lock(LOCK, pid=1)  # a round of `twin train` (cron): init stands for a live process
    await twin.say(OWNER, "/rollback")
    assert twin.session.texts(OWNER)[-1].startswith("A training round is running")
    assert twin.store.active_adapter()["version"] == 2  # its promotion at the end cannot undo a rollback
    twin.store.release_lock(LOCK, pid=1)
    await twin.say(OWNER, "/rollback")
    assert twin.store.active_adapter()["version"] == 1


async def test_forget_asks_then_deletes_and_retrains_in_full(twin):
    add_adapter(twin.store, 1, "active", 2.0, sessions=[s["id"] for s in twin.store.sessions()])
    await twin.say(OWNER, "/forget sasha")
    ask = twin.session.calls("sendMessage", OWNER)[-1].data
    assert ask["text"].startswith("Forget sasha? This deletes 6 messages in 1 sessions")
    assert "adapters trained on them: 0001" in ask["text"]
    yes = ask["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await twin.feed(twin.button(OWNER, yes))
    await twin.settle()
    assert twin.store.person(FRIEND) is None and twin.store.dialog(FRIEND) is None
    assert not twin.store.messages(FRIEND) and not twin.store.is_allowed(FRIEND)
    assert twin.store.adapter(1)["status"] == "deleted" and twin.engine.rejected == {1: "deleted"}
    assert twin.training.calls == [RoundOptions(full=True)]
    edited = twin.session.calls("editMessageText", OWNER)[0].data["text"]
    assert edited.startswith("Forgot sasha: 6 messages and 1 sessions deleted")
    assert "The active adapter 0001 was one of them: I answer with the base model now." in edited


async def test_forget_stops_a_running_round_first_then_retrains_in_full(twin):
    twin.training.hold = asyncio.Event()  # never set: the round runs until it is cancelled
    await twin.feed(twin.update(OWNER, "/retrain"))
    await asyncio.sleep(0.05)
    assert "training" in twin.jobs.running()
    await twin.feed(twin.update(OWNER, "/forget sasha"))
    await asyncio.sleep(0.05)
    yes = twin.session.calls("sendMessage", OWNER)[-1].data["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await twin.feed(twin.button(OWNER, yes))
    await twin.settle()
    assert twin.training.calls == [RoundOptions(), RoundOptions(full=True)]
    edited = twin.session.calls("editMessageText", OWNER)[0].data["text"]
    assert "The training round that was running had read their data: it was stopped." in edited
    assert twin.store.person(FRIEND) is None


async def test_help_shows_owner_commands_only_to_the_owner(twin):
    await twin.say(FRIEND, "/help")
    await twin.say(OWNER, "/help")
    assert "/retrain" not in twin.session.texts(FRIEND)[-1] and "/retrain" in twin.session.texts(OWNER)[-1]


async def test_a_double_tapped_forget_button_keeps_the_retrain_the_first_tap_started(twin):
    twin.training.hold = asyncio.Event()  # never set: the retrain runs until something cancels it
    await twin.say(OWNER, "/forget sasha")
    yes = twin.session.calls("sendMessage", OWNER)[-1].data["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await twin.feed(twin.button(OWNER, yes))
    await asyncio.sleep(0.05)
    assert "training" in twin.jobs.running() and twin.training.calls == [RoundOptions(full=True)]
    await twin.feed(twin.button(OWNER, yes))
    await asyncio.sleep(0.2)
    assert "training" in twin.jobs.running() and twin.training.calls == [RoundOptions(full=True)]
    assert twin.session.calls("editMessageText", OWNER)[-1].data["text"].startswith("Already forgotten")


async def test_after_forget_why_and_the_queued_messages_hold_nothing_of_them(twin):
    from core.format import ChatTurn, MemoryBlock, Recalled

    said = ChatTurn("sasha", ("мой пароль от 秘密 сейфа",))
    twin.conversations.last_memory[FRIEND] = MemoryBlock((Recalled((said,), 1),))
    twin.conversations.last_memory[OWNER] = MemoryBlock((Recalled((said,), 1),))
    await twin.say(OWNER, f"/why {FRIEND}")
    assert "сейфа" in twin.session.texts(OWNER)[-1]  # /why shows it before
    await twin.say(OWNER, "/forget sasha")
    yes = twin.session.calls("sendMessage", OWNER)[-1].data["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await twin.feed(twin.button(OWNER, yes))
    await twin.settle()
    assert twin.conversations.last_memory == {}
    for who in (str(FRIEND), ""):
        await twin.say(OWNER, f"/why {who}".strip())
        assert twin.session.texts(OWNER)[-1].startswith("No memory was used")


async def test_drafts_command_chooses_whose_chats_get_drafts_and_status_shows_the_verdicts(twin):
    from collector.drafts import may_draft

    kira, friend = twin.store.person(KIRA), twin.store.person(FRIEND)
    await twin.say(OWNER, "/drafts only kira")
    assert twin.session.texts(OWNER)[-1] == "Drafts only in the chats with kira."
    assert may_draft(twin.store, twin.settings, kira) and not may_draft(twin.store, twin.settings, friend)
    await twin.say(OWNER, "/drafts off")
    assert not may_draft(twin.store, twin.settings, kira)
    await twin.say(OWNER, "/drafts on")
    assert may_draft(twin.store, twin.settings, friend)
    twin.store.close_draft(twin.store.open_draft(KIRA, "olga", None, "hi"), "accepted", "hi", 0)
    await twin.say(OWNER, "/status")
    assert (
        "drafts as olga with adapter none (base model): 1 written, 1 accepted unchanged"
        in twin.session.texts(OWNER)[-1]
    )
