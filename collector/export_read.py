"""Reading a Telegram Desktop export: find result.json, parse it (orjson), check the chats' headers and
whose account it is. Errors name the file, the chat and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.errors import UserError


class ExportError(UserError):
    """The file is not a Telegram Desktop JSON export; the message names the file, chat, message, field."""


@dataclass
class Chat:
    """One chat object of the export, its header checked."""

    name: str | None
    type: str | None
    id: int | None
    messages: list[Any]
    where: str  # how error messages name it: 'chat "Alice" (id 123)'


# -- read -----------------------------------------------------------------------------------------
def find_result_json(path: Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "result.json"
    if not path.is_file():
        raise ExportError(
            f"{path}: no such file: pass the result.json of a Telegram Desktop export (Settings → Advanced "
            "→ Export Telegram data, format JSON) or the folder holding it"
        )
    return path


def read_export(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExportError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{path}: {_json_problem(raw, exc)}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: not a Telegram Desktop export (the top level is not a JSON object)")
    return data


def _json_problem(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"is not UTF-8 text (byte {bad.start}): export it again from Telegram Desktop as JSON"
    if exc.msg.startswith("unexpected end of data"):
        return "ends in the middle of the JSON: the file is truncated, copy or export it again"
    return f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"


# -- the chats and the owner -----------------------------------------------------------------------
def resolve_owner(data: dict[str, Any], owner_id: int | None, path: Path) -> tuple[int, str]:
    """The owner's user id and where it came from. Only a full-account export names its owner."""
    info = data.get("personal_information")
    exported = info.get("user_id") if isinstance(info, dict) else None
    if exported is not None and type(exported) is not int:
        raise ExportError(f'{path}: "personal_information.user_id" is not an integer')
    if exported is None:
        if owner_id is None:
            raise UserError(
                f"{path} does not say whose account it is (a single-chat export never does): pass "
                "--owner-id YOUR_ID or set TWIN_OWNER_ID in .env (send any message to @userinfobot in "
                "Telegram to learn your id)"
            )
        return owner_id, "--owner-id / TWIN_OWNER_ID"
    if owner_id is not None and owner_id != exported:
        raise UserError(
            f"{path} is the export of user {exported} (personal_information.user_id), but the owner id "
            f"given by --owner-id or TWIN_OWNER_ID is {owner_id}: correct TWIN_OWNER_ID, or pass "
            f"--owner-id {exported}"
        )
    return exported, "personal_information"


def export_chats(data: dict[str, Any], path: Path) -> list[Chat]:
    """The chats of a full-account export (chats.list, left_chats.list), or the one of a chat export."""
    if "messages" in data:
        return [chat_of(data, 1, path)]
    if "chats" not in data:
        raise ExportError(
            f'{path}: has neither "messages" nor "chats": not a Telegram Desktop export '
            '(export as "Machine-readable JSON")'
        )
    found = []
    for key in ("chats", "left_chats"):
        section = data.get(key)
        if key == "left_chats" and section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get("list"), list):
            raise ExportError(f'{path}: "{key}.list" is missing or not a list')
        found += section["list"]
    return [chat_of(obj, n, path) for n, obj in enumerate(found, 1)]


def chat_of(obj: Any, position: int, path: Path) -> Chat:
    if not isinstance(obj, dict):
        raise ExportError(f"{path}: chat #{position} is not a JSON object")
    name, kind, chat_id = obj.get("name"), obj.get("type"), obj.get("id")
    where = f"{path}: chat #{position}" if name is None else f'{path}: chat "{name}"'
    where += f" (id {chat_id})" if chat_id is not None else ""
    for key, value, wanted in (("name", name, str), ("type", kind, str), ("id", chat_id, int)):
        if value is not None and type(value) is not wanted:
            raise ExportError(f'{where}: "{key}" is not {"a string" if wanted is str else "an integer"}')
    if "messages" not in obj:
        raise ExportError(f'{where}: "messages" is missing')
    if not isinstance(obj["messages"], list):
        raise ExportError(f'{where}: "messages" is not a list')
    return Chat(name, kind, chat_id, obj["messages"], where)
