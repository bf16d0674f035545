"""After `twin forget`, no byte of the person is left under the data dir: the README's quick start (data dir
`data` relative to the working directory, `twin import`, an in-process `twin train` on the tiny model), then
every file (twin.db, its -wal and -shm, adapters, reports) is read whole and searched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import Settings
from storage import Storage
from trainer.rounds import RoundOptions, round_once
from twin.cli import app

pytestmark = pytest.mark.slow

OWNER, EVA, WEI, GROUP = 1000, 2001, 2002, 3001
EVA_NAME, SLUG = "Евлампия Квашнина", "evlampiya"
PLANTED = ("кракозябрища", "麒麟鳳凰羹", "zyxquorblet")  # hers alone, in Cyrillic, CJK and Latin
T0, DAY = 1_700_000_000, 86_400
TRAIN_KNOBS = "lora_r = 8\nlora_alpha = 16\nmax_steps = 2\npack_tokens = 256\n"


def _message(i: int, t: int, who: int, name: str, text: str) -> dict:
    return {
        "id": i,
        "type": "message",
        "date": "2023-11-14T22:13:20",
        "date_unixtime": str(t),
        "from": name,
        "from_id": f"user{who}",
        "text": text,
        "text_entities": [{"type": "plain", "text": text}],
    }


def _dialog(name: str, sessions: list[list[tuple[int, str]]]) -> list[dict]:
    """One session a day, a message a minute."""
    lines = [(s, k, who, text) for s, session in enumerate(sessions) for k, (who, text) in enumerate(session)]
    return [
        _message(i, T0 + s * DAY + 60 * k, who, "Owner Person" if who == OWNER else name, text)
        for i, (s, k, who, text) in enumerate(lines, 1)
    ]


def export() -> tuple[dict, list[str]]:
    """A full-account export: her chat full of planted words, Wei's chat, a group both write in; and every
    text that is not hers (what may stay)."""
    hers = [
        [
            (OWNER, "привет, как ты?"),
            (EVA, f"слушай, {PLANTED[s % 3]} снова тут"),
            (OWNER, "ого!"),
            (EVA, PLANTED[(s + 1) % 3]),
        ]
        for s in range(6)
    ]
    weis = [[(OWNER, "hey, how are you?"), (WEI, "fine thanks, 你好 明天见"), (OWNER, "see you at 7"), (WEI, "ok")]] * 6
    group = [(OWNER, "всем привет"), (EVA, f"у нас {PLANTED[2]} и {PLANTED[1]}"), (WEI, "哈哈 好的")]
    chats = [
        {"name": EVA_NAME, "type": "personal_chat", "id": EVA, "messages": _dialog(EVA_NAME, hers)},
        {"name": "王伟", "type": "personal_chat", "id": WEI, "messages": _dialog("王伟", weis)},
        {"name": "Семья", "type": "private_group", "id": GROUP, "messages": _dialog(EVA_NAME, [group])},
    ]
    chats[2]["messages"][2]["from"], chats[2]["messages"][2]["from_id"] = "王伟", f"user{WEI}"
    me = {"user_id": OWNER, "first_name": "Owner", "last_name": "Person", "username": "@owner_twin"}
    kept = [text for session in weis for _, text in session] + [group[0][1], group[2][1], "Семья", "王伟"]
    return {"personal_information": me, "chats": {"list": chats}}, kept


def rare_trigrams(words: tuple[str, ...], kept: list[str]) -> set[bytes]:
    """Her words' trigrams (as the memory index stores them: lower case, UTF-8) that no kept text has; only
    non-ASCII ones, whose 6-9 bytes never turn up by chance in a file of weights."""
    grams = {w.lower()[i : i + 3] for w in words for i in range(len(w) - 2)}
    return {g.encode() for g in grams if not g.isascii() and not any(g in k.lower() for k in kept)}


def files_holding(data: Path, needles: set[bytes]) -> list[tuple[str, bytes]]:
    return [
        (str(f.relative_to(data)), n.decode())
        for f in sorted(data.rglob("*"))
        if f.is_file()
        for n in needles
        if n in f.read_bytes()
    ]


def test_forget_leaves_no_byte_of_them_under_the_data_dir(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the quick start: TWIN_DATA_DIR=data, relative to where twin runs
    data, (content, kept) = Path("data"), export()
    (tmp_path / "result.json").write_text(json.dumps(content, ensure_ascii=False))
    (tmp_path / "train.toml").write_text(TRAIN_KNOBS)
    env = {"TWIN_DATA_DIR": "data", "TWIN_BASE_MODEL": str(tiny_model_dir), "TWIN_TRAIN_CONFIG": "train.toml"}
    cli = CliRunner()
    imported = cli.invoke(app, ["import", "result.json", "--include-groups"], env=env)
    assert imported.exit_code == 0, imported.output
    settings = Settings(_env_file=None, data_dir=data, base_model=str(tiny_model_dir), train_config=Path("train.toml"))
    assert round_once(settings, RoundOptions(), None, None)["version"] == 1
    # A long-running process (the bot) keeps its connection open: its WAL is never removed at exit.
    bot = Storage(settings.db_path)
    assert bot.person(SLUG) and bot.adapter(1)["status"] == "active"
    needles = {w.encode() for w in (*PLANTED, SLUG, EVA_NAME)} | rare_trigrams(PLANTED[:2], kept)
    assert len(needles) > 10 and files_holding(data, needles)  # the search finds her before

    forgot = cli.invoke(app, ["forget", SLUG, "--yes"], env=env)
    assert forgot.exit_code == 0, forgot.output
    assert "adapters 1 deleted" in forgot.output
    assert not (data / "adapters" / "0001").exists()
    assert files_holding(data, needles) == []
    assert bot.messages(WEI) and bot.messages(GROUP)  # the others stay
    bot.close()
