"""Collector commands and login: `twin collect`, `twin exclude` / `twin include`, and the rule that an
unattended run never prompts and never shows a secret."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest
from telethon.crypto import AuthKey
from telethon.sessions import StringSession
from typer.testing import CliRunner

import collector.telethon_client as telethon_client
from collector.telethon_client import NotLoggedIn, build_client, ensure_authorized, login
from core.settings import Settings
from storage import Storage
from tests.fake_telegram import FakeAccount, FakeTelegramClient
from twin.cli import app

API_HASH = "0123456789abcdef0123456789abcdef"


def _session_string() -> str:
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(os.urandom(256))
    return session.save()


def _env(tmp_path, **extra) -> dict[str, str]:
    return {
        "TWIN_DATA_DIR": str(tmp_path / "data"),
        "TWIN_API_ID": "12345",
        "TWIN_API_HASH": API_HASH,
        "TWIN_SESSION": "",
        "TWIN_OWNER_ID": "",
        **extra,
    }


@pytest.fixture
def no_prompt(monkeypatch):
    """Any attempt to read a terminal fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("prompted for input")

    monkeypatch.setattr("builtins.input", refuse)
    monkeypatch.setattr("getpass.getpass", refuse)


@pytest.fixture
def fake_login(monkeypatch):
    """`twin collect` connects to a fake account instead of Telegram."""
    account = FakeAccount()
    account.add_user(101, "Alice", username="alice")
    account.add_user(102, "Bob")
    account.add_messages(101, 30)
    account.add_messages(102, 3)

    @contextlib.asynccontextmanager
    async def connected(settings):
        if settings.session is not None and settings.session.get_secret_value():
            build_client(settings)  # the real client, secrets and all: only the network is left out
        yield FakeTelegramClient(account)

    monkeypatch.setattr(telethon_client, "connected_client", connected)
    return account


def test_collect_without_a_session_says_run_twin_login_without_prompting(tmp_path, no_prompt):
    result = CliRunner().invoke(app, ["collect"], env=_env(tmp_path))
    assert result.exit_code == 1, result.output
    assert "run `twin login`" in result.output and "Traceback" not in result.output


def test_collect_without_api_id_says_where_to_get_it(tmp_path):
    result = CliRunner().invoke(app, ["collect"], env=_env(tmp_path, TWIN_API_ID=""))
    assert result.exit_code == 1 and "my.telegram.org" in result.output


def test_building_a_client_without_a_session_file_never_prompts(tmp_path, no_prompt):
    settings = Settings(_env_file=None, data_dir=tmp_path, api_id=1, api_hash=API_HASH)
    with pytest.raises(NotLoggedIn, match="run `twin login`"):
        build_client(settings)
    assert not (tmp_path / "owner.session").exists()


async def test_revoked_session_is_not_logged_in_rather_than_a_prompt(no_prompt):
    client = FakeTelegramClient(FakeAccount(), authorized=False)
    with pytest.raises(NotLoggedIn, match="run `twin login`"):
        await ensure_authorized(client)


def test_invalid_session_string_is_refused_without_echoing_it(tmp_path):
    bad = "1" + "x" * 40 + "secretpart"
    settings = Settings(_env_file=None, data_dir=tmp_path, api_id=1, api_hash=API_HASH, session=bad)
    with pytest.raises(NotLoggedIn) as err:
        build_client(settings)
    assert "secretpart" not in str(err.value) and "TWIN_SESSION" in str(err.value)


def test_session_string_and_file_sessions_build_a_counting_client(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, api_id=1, api_hash=API_HASH, session=_session_string())
    client = build_client(settings)
    assert isinstance(client.session, StringSession) and client.flood_sleep_threshold == 120
    (tmp_path / "owner.session").touch()
    client = build_client(Settings(_env_file=None, data_dir=tmp_path, api_id=1, api_hash=API_HASH))
    assert client.session.filename == str(tmp_path / "owner.session")


async def test_login_keeps_the_session_file_private(tmp_path, monkeypatch):
    started = {}

    class LoginClient(telethon_client.CountingTelegramClient):
        async def start(self, phone, code_callback, password):
            started.update(phone=phone(), code=code_callback(), password=password())

        async def get_me(self, input_peer=False):
            return FakeAccount().me

    monkeypatch.setattr(telethon_client, "CountingTelegramClient", LoginClient)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", api_id=1, api_hash=API_HASH)

    who, string = await login(settings, as_string=False, phone=lambda: "+1", code=lambda: "2", password=lambda: "3")

    assert who == "Olga (id 1000)" and string is None and started == {"phone": "+1", "code": "2", "password": "3"}
    assert (tmp_path / "data" / "owner.session").stat().st_mode & 0o777 == 0o600


def test_collect_prints_a_summary_and_never_a_secret(tmp_path, fake_login, caplog):
    session = _session_string()
    caplog.set_level(logging.DEBUG)
    env = _env(tmp_path, TWIN_SESSION=session)

    first = CliRunner().invoke(app, ["-v", "collect"], env=env)
    second = CliRunner().invoke(app, ["-v", "collect", "--dialog", "alice"], env=env)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "33 new" in first.output and "0 history" in second.output
    for text in (first.output, second.output, caplog.text):
        assert API_HASH not in text and session not in text and session[1:40] not in text


def test_exclude_and_include_by_persona_slug(tmp_path, fake_login):
    env = _env(tmp_path)
    assert CliRunner().invoke(app, ["collect"], env=env).exit_code == 0
    store = Storage(tmp_path / "data" / "twin.db")

    result = CliRunner().invoke(app, ["exclude", "alice"], env=env)
    assert result.exit_code == 0 and "excluded dialog 101" in result.output
    assert store.dialog(101)["excluded"] == 1
    fake_login.add_messages(101, 5)
    assert "1 excluded" in CliRunner().invoke(app, ["collect"], env=env).output
    assert len(store.messages(101)) == 30

    result = CliRunner().invoke(app, ["include", "101"], env=env)
    assert result.exit_code == 0 and store.dialog(101)["excluded"] == 0
    assert "5 new" in CliRunner().invoke(app, ["collect"], env=env).output


def test_exclude_a_dialog_before_it_was_ever_collected(tmp_path, fake_login):
    env = _env(tmp_path)
    assert CliRunner().invoke(app, ["exclude", "102"], env=env).exit_code == 0

    result = CliRunner().invoke(app, ["collect"], env=env)

    store = Storage(tmp_path / "data" / "twin.db")
    assert result.exit_code == 0 and store.messages(102) == [] and len(store.messages(101)) == 30


def test_include_of_an_unknown_persona_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["include", "ghost"], env=_env(tmp_path))
    assert result.exit_code == 1 and "twin personas" in result.output and "Traceback" not in result.output


async def test_real_client_counts_requests_by_type_through_takeout_too(tmp_path, monkeypatch):
    from telethon.tl import functions, types

    string = _session_string()
    client = build_client(Settings(_env_file=None, data_dir=tmp_path, api_id=1, api_hash=API_HASH, session=string))

    async def no_network(sender, request, ordered=False, flood_sleep_threshold=None):
        return None

    monkeypatch.setattr(client, "_call", no_network)
    history = functions.messages.GetHistoryRequest(
        peer=types.InputPeerEmpty(),
        offset_id=0,
        offset_date=None,
        add_offset=0,
        limit=100,
        max_id=0,
        min_id=0,
        hash=0,
    )
    await client(history)
    await client(functions.InvokeWithTakeoutRequest(takeout_id=1, query=history))
    await client(functions.updates.GetStateRequest())

    assert client.request_counts == {"GetHistoryRequest": 2, "GetStateRequest": 1}
