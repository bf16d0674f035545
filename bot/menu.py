"""The bot's commands: who may use each, and the menu Telegram shows (setMyCommands).

Public commands appear in every chat; the owner's only in the owner's own chat (BotCommandScopeChat).
OWNER_COMMANDS is also the list the refusal router guards: a command missing here is not refused.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault

PUBLIC_COMMANDS: dict[str, str] = {
    "start": "say hello",
    "persona": "who I play in this chat; /persona NAME switches",
    "personas": "the personas you may pick",
    "help": "what I can do",
}

OWNER_COMMANDS: dict[str, str] = {
    "status": "data, last sync, active adapter, running jobs",
    "sync": "fetch new messages from Telegram now",
    "retrain": "train a new adapter now",
    "adapters": "list trained adapters",
    "rollback": "serve an earlier adapter: /rollback [VERSION]",
    "publish": "let others pick a persona: /publish NAME",
    "unpublish": "stop offering a persona: /unpublish NAME",
    "allow": "let someone talk to me: /allow ID or @username",
    "deny": "stop someone: /deny ID or @username",
    "allowed": "who may talk to me",
    "exclude": "skip a dialog when syncing and training: /exclude NAME",
    "include": "sync and train on a dialog again: /include NAME",
    "drafts": "drafts in your own chats: /drafts on, off or only NAME…",
    "forget": "delete a person's messages and retrain: /forget NAME",
    "why": "what the last reply here recalled; /why NAME for their chat",
}


def help_text(is_owner: bool) -> str:
    lines = [f"/{name} — {what}" for name, what in PUBLIC_COMMANDS.items()]
    if is_owner:
        lines += ["", "Yours only:"] + [f"/{name} — {what}" for name, what in OWNER_COMMANDS.items()]
    return "Write to me and I answer as the persona of this chat.\n\n" + "\n".join(lines)


async def set_menu(bot: Bot, owner_id: int) -> None:
    """Register the command menu: public commands for everyone, all of them in the owner's chat."""
    public = [BotCommand(command=c, description=d) for c, d in PUBLIC_COMMANDS.items()]
    owner = [BotCommand(command=c, description=d) for c, d in OWNER_COMMANDS.items()]
    await bot.set_my_commands(public, scope=BotCommandScopeDefault())
    await bot.set_my_commands(public + owner, scope=BotCommandScopeChat(chat_id=owner_id))
