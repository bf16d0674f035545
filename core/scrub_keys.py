"""Keys and tokens by their known shapes: detect-secrets' (Yelp) plugins, a few prefixes they lack, and a long
hex or base64 value after a key-like name ("api_key=9f86d081…", "SECRET_KEY: 3f4a…", "sha256: …").

detect-secrets is called through its plugins' `analyze_string` only: `analyze_line` may verify a key against
its provider over the network, which must never happen to a chat. Its keyword and high-entropy plugins are
left out: they read source code (quoted strings after `password =`), and chat is not code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

SECRET = "<SECRET>"

# Prefixes detect-secrets has no plugin for (or reads too narrowly for a chat): scrubbed wherever they appear.
KNOWN_SECRET_RE = re.compile(
    r"\b\d{6,12}:[A-Za-z0-9_-]{30,}"  # Telegram bot token
    r"|\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic
    r"|\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe, test and publishable keys too
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bAIza[A-Za-z0-9_-]{35}"  # Google API key
    r"|\bya29\.[A-Za-z0-9_-]{20,}"  # Google OAuth access token
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|\bglpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|\by0_[A-Za-z0-9_-]{30,}"  # Yandex OAuth
    r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # JWT
)
PRIVATE_KEY_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)

# detect-secrets' plugins worth a chat line: each matches one provider's documented key format.
PLUGINS = (
    "aws.AWSKeyDetector",
    "azure_storage_key.AzureStorageKeyDetector",
    "discord.DiscordBotTokenDetector",
    "github_token.GitHubTokenDetector",
    "gitlab_token.GitLabTokenDetector",
    "jwt.JwtTokenDetector",
    "mailchimp.MailchimpDetector",
    "npm.NpmDetector",
    "openai.OpenAIDetector",
    "pypi_token.PypiTokenDetector",
    "sendgrid.SendGridDetector",
    "slack.SlackDetector",
    "square_oauth.SquareOAuthDetector",
    "stripe.StripeDetector",
    "telegram_token.TelegramBotTokenDetector",
    "twilio.TwilioKeyDetector",
)
# Every key those plugins know is one run of 20+ such characters: a message without one costs one search.
KEY_CANDIDATE_RE = re.compile(r"[A-Za-z0-9_\-.+/=]{20,}")

# A name that says "key" ("api_key", "SECRET_KEY", "client_secret", "x-auth-token", "sha256", "ключ") and a
# long hex or base64 value after it: a key, a salt, a hash of one.
KEY_NAME = (
    r"(?<![\w.-])[\w.-]*(?:key|token|secret|hash|salt|sig(?:nature)?|auth|nonce|digest|sha\d*|md5|checksum"
    r"|ключ|токен|хеш|хэш|секрет|密钥|秘钥)[\w.-]*"
)
KEYED_VALUE_RE = re.compile(
    rf"(?i)(?P<name>{KEY_NAME})(?P<sep>[ \t]*(?:[:=：]|->|=>|→)?[ \t]*[\"']?|[ \t]+(?:is|это)[ \t]+[\"']?)"
    r"(?P<value>[A-Za-z0-9+/_-]{16,}={0,2})(?![\w+/=-])"
)


@functools.cache
def _plugins() -> tuple:
    """The detect-secrets plugins, built once (importing detect-secrets costs ~0.1 s, paid at first use)."""
    import importlib

    found = []
    for path in PLUGINS:
        module, name = path.rsplit(".", 1)
        found.append(getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)())
    return tuple(found)


def find_plugin_keys(text: str) -> Iterator[tuple[int, int, str]]:
    """Keys that a detect-secrets plugin recognises, as (start, end, "<SECRET>"), each occurrence."""
    if not KEY_CANDIDATE_RE.search(text):
        return
    values = {value for plugin in _plugins() for value in plugin.analyze_string(text) if len(value) >= 8}
    for value in sorted(values, key=len, reverse=True):
        at = text.find(value)
        while at >= 0:
            yield at, at + len(value), SECRET
            at = text.find(value, at + len(value))


def find_keyed_values(text: str) -> Iterator[tuple[int, int, str]]:
    """A long hex/base64 value after a key-like name; the name stays ("api_key=<SECRET>")."""
    for m in KEYED_VALUE_RE.finditer(text):
        value = m.group("value")
        hexish = re.fullmatch(r"[0-9a-fA-F]+", value)
        mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
        if mixed and (hexish or len(value) >= 20) and len(set(value.lower())) >= 6:
            yield m.start("value"), m.end("value"), SECRET
