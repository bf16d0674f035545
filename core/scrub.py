"""Privacy scrub: secrets and personal data in training text become typed placeholders.

Applied wherever training text is produced (dataset export, training), so an adapter never learns a card
number, a password or a token from the owner's chats. The rules lean towards scrubbing: a number wrongly
taken for a phone costs one placeholder, a leaked phone cannot be taken back. Numbers that read as years,
times, dates or prices are left alone, and cards and IBANs are checksum-verified so an order number stays
readable. Its parts: `core.scrub_labels` (a label lexicon in 14 languages, `core.scrub_lexicon`),
`core.scrub_keys` (detect-secrets' plugins, key prefixes, hex after a key name), `core.scrub_ids` (national ids
by checksum) and `core.scrub_seed` (BIP-39 seed phrases).

    >>> Scrubber(["Baker Street"]).scrub("mail me at bob@example.com, I live on baker street")
    'mail me at <EMAIL>, I live on <REDACTED>'
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import phonenumbers

from core.scrub_ids import find_ids
from core.scrub_keys import KNOWN_SECRET_RE, PRIVATE_KEY_RE, find_keyed_values, find_plugin_keys
from core.scrub_labels import find_labelled
from core.scrub_seed import find_seed_phrases

EMAIL, PHONE, CARD, IBAN, URL, SECRET, ID, SEED, REDACTED = (
    "<EMAIL>",
    "<PHONE>",
    "<CARD>",
    "<IBAN>",
    "<URL>",
    "<SECRET>",
    "<ID>",
    "<SEED>",
    "<REDACTED>",
)
PLACEHOLDER_RE = re.compile(r"(<(?:EMAIL|PHONE|CARD|IBAN|URL|SECRET|ID|SEED|REDACTED)>)")

# A URL runs to the next space or quote; trailing punctuation belongs to the sentence. A host label starts
# with a letter or digit: a long run of dashes must not be tried as a host from every position.
URL_RE = re.compile(
    r"(?i)\b(?:https?://|www\.|t\.me/)[^\s<>\"'«»]+"
    r"|(?<![@\w.-])(?:[a-z0-9][a-z0-9-]*\.)+[a-z]{2,}/[^\s<>\"'«»]*"
)
URL_TRAILING = ".,;:!?'\")]}»"
# Query keys that carry credentials: ?token=, &sig=, &access_token=, &X-Amz-Signature= ...
SECRET_PARAM_RE = re.compile(
    r"(?i)(?:^|[_.-])(?:token|key|apikey|sig|signature|secret|password|passwd|pass|pwd|auth|authorization"
    r"|credentials?|session|sessionid|sid|code|otp|hash|ticket)$|token|secret|passw"
)
UUID_RE = re.compile(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
ALNUM_RUN_RE = re.compile(r"[A-Za-z0-9]{16,}")
TG_INVITE_RE = re.compile(r"(?i)\bt(?:elegram)?\.me/(?:\+|joinchat/)")  # an invite link is a key to a chat

EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}\b")
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# A run of digit groups; the card itself is a Luhn-valid stretch of 13-19 of its digits.
DIGIT_RUN_RE = re.compile(r"(?<![\w+.,-])\d+(?:[ -]\d+)*(?![\w])")
# Phones are libphonenumber's call (the `phonenumbers` port): a number written with +CC is checked against
# its country's plan, for every country; one written without it is read as a number of these countries, the
# ones of the owner's languages (Russian, English, Chinese). A region more finds more local formats and costs
# a little time per digit run.
PHONE_REGIONS = ("RU", "US", "GB", "CN")
# Digit runs that may hold a phone (5-17 digits, + and brackets and single separators between): only these
# are handed to libphonenumber, so a wall of digits costs one cheap regex pass, not a parse per position.
PHONE_CANDIDATE_RE = re.compile(r"(?<![A-Za-z0-9_+])\+?\(?\d(?:[ .\-()\u2010-\u2015]{1,3}\d|\d){4,16}(?!\d)")
# A city number without its area code (123-45-67) has no country to be checked against: its shape decides.
LOCAL_PHONE_RE = re.compile(r"(?<![\w+-])\d{3}-\d{2}-\d{2}(?![\w-])")
# Long random strings with upper, lower and digits (base64/base62), or long hex.
HIGH_ENTROPY_RE = re.compile(r"(?<![\w+/=-])(?:[A-Za-z0-9+/_-]{24,}={0,2}|[0-9a-fA-F]{32,})(?![\w+/=-])")


@dataclass(frozen=True)
class Finding:
    kind: str  # the placeholder, e.g. "<EMAIL>"
    text: str  # what it replaced


Span = tuple[int, int, str]  # start, end, what replaces text[start:end]
Finder = Callable[[str], Iterable[Span]]


def _regex(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str | None]) -> Finder:
    """A rule from a regex: each match becomes what `replace` returns for it (None leaves it as written)."""

    def find(text: str) -> Iterator[Span]:
        for m in pattern.finditer(text):
            new = replace(m)
            if new is not None:
                yield m.start(), m.end(), new

    return find


def _splice(text: str, spans: Iterable[Span], found: list[Finding] | None) -> str:
    """`text` with each span replaced, left to right; a span overlapping one taken before it is dropped."""
    out: list[str] = []
    at = 0
    for start, end, new in sorted(spans):
        if start < at or PLACEHOLDER_RE.fullmatch(text[start:end]):
            continue
        if found is not None:
            found.extend(Finding(kind, text[start:end]) for kind in PLACEHOLDER_RE.findall(new))
        out += [text[at:start], new]
        at = end
    return "".join(out) + text[at:] if out else text


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters → 10..35, the number mod 97 is 1."""
    s = candidate.replace(" ", "").upper()
    if not (15 <= len(s) <= 34 and s[:2].isalpha() and s[2:4].isdigit()):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _entropy(s: str) -> float:
    return -sum(n / len(s) * math.log2(n / len(s)) for n in Counter(s).values())


def looks_random(s: str) -> bool:
    """A long token that no human would type: mixed case and digits with high entropy, or long hex."""
    if re.fullmatch(r"[0-9a-fA-F]{32,}", s):
        return not s.isdigit() and len(set(s.lower())) >= 6  # "dddd…", "AAAA…" are keyboard, not hex
    core = s.rstrip("=")
    return (
        len(core) >= 24
        and sum(c.isupper() for c in core) >= 2
        and sum(c.islower() for c in core) >= 2
        and sum(c.isdigit() for c in core) >= 2
        and _entropy(core) >= 3.8
    )


def _random_segment(s: str) -> bool:
    """A path or query run that reads as an id or a capability: letters mixed with digits, 16+ long."""
    for run in ALNUM_RUN_RE.findall(s):
        if sum(c.isdigit() for c in run) >= 2 and sum(c.isalpha() for c in run) >= 2:
            return True
    return bool(UUID_RE.search(s))


def url_is_secret(url: str) -> bool:
    """Does this URL carry a credential: a password, a token-like query key, a random path segment?"""
    if KNOWN_SECRET_RE.search(url) or TG_INVITE_RE.search(url):
        return True
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.password:
        return True
    # OAuth implicit flows put the token into the fragment: read it like a query.
    params = parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(parts.fragment, keep_blank_values=True)
    if any(SECRET_PARAM_RE.search(key) for key, _ in params):
        return True
    return _random_segment(parts.path) or _random_segment(parts.query) or _random_segment(parts.fragment)


class Scrubber:
    """Replaces secrets and personal data with typed placeholders. Build once, call `scrub` per message.

    `extra_words` (a surname, a street, a company) are scrubbed case-insensitively as whole words.
    """

    def __init__(self, extra_words: Iterable[str] = ()):
        words = sorted({w.strip() for w in extra_words if w and w.strip()}, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
        self._extra = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I) if words else None
        # Order matters: a URL or a key is taken whole before its digits could look like a phone, a labelled
        # password before its digits could look like a card, an id before it could look like a phone.
        self._rules: list[Finder] = [
            _regex(PRIVATE_KEY_RE, lambda m: SECRET),
            _regex(URL_RE, self._url),
            _regex(KNOWN_SECRET_RE, lambda m: SECRET),
            find_plugin_keys,
            find_seed_phrases,
            find_ids,
            find_keyed_values,
            find_labelled,
            _regex(EMAIL_RE, lambda m: EMAIL),
            _regex(IBAN_RE, self._iban),
            _regex(DIGIT_RUN_RE, self._card),
            _regex(PHONE_CANDIDATE_RE, self._phone),
            _regex(LOCAL_PHONE_RE, lambda m: PHONE),
            _regex(HIGH_ENTROPY_RE, lambda m: SECRET if looks_random(m.group()) else None),
        ]

    def scrub(self, text: str) -> str:
        return self._apply(text, None)

    def __call__(self, text: str) -> str:
        return self._apply(text, None)

    def findings(self, text: str) -> list[Finding]:
        """What `scrub` would replace, in the order the rules found it (for tests and `--dry-run`)."""
        found: list[Finding] = []
        self._apply(text, found)
        return found

    def _apply(self, text: str, found: list[Finding] | None) -> str:
        for rule in self._rules:
            text = _splice(text, rule(text), found)
        if self._extra is not None:
            # Never inside a placeholder: an extra word "secret" must not turn <SECRET> into <<REDACTED>>.
            pieces = PLACEHOLDER_RE.split(text)
            text = "".join(
                p if i % 2 else _splice(p, _regex(self._extra, lambda m: REDACTED)(p), found)
                for i, p in enumerate(pieces)
            )
        return text

    @staticmethod
    def _url(m: re.Match[str]) -> str | None:
        url = m.group()
        tail = ""
        while url and url[-1] in URL_TRAILING and not (url[-1] == ")" and url.count("(") >= url.count(")")):
            url, tail = url[:-1], url[-1] + tail
        return URL + tail if url_is_secret(url) else None

    @staticmethod
    def _iban(m: re.Match[str]) -> str | None:
        # The match may run on into a following capitalised word: shorten it to a group boundary that checks.
        text = m.group()
        for end in range(len(text), 14, -1):
            if (end == len(text) or text[end] == " ") and iban_ok(text[:end]):
                return IBAN + text[end:]
        return None

    @staticmethod
    def _card(m: re.Match[str]) -> str | None:
        groups = re.split(r"([ -])", m.group())  # digits, sep, digits, sep, ...
        numbers = groups[::2]
        # The longest (then leftmost) stretch of whole groups that is a Luhn-valid 13-19 digit number.
        # Cards are printed in groups of 3+ digits (4-4-4-4, 4-6-5): shorter groups end a stretch, which
        # also keeps a long list of small numbers from costing a Luhn check per position.
        best: tuple[int, int, int] | None = None
        for i in range(len(numbers)):
            digits = ""
            for j in range(i + 1, len(numbers) + 1):
                digits += numbers[j - 1]
                if len(digits) > 19 or len(numbers[j - 1]) < 3:
                    break
                if len(digits) >= 13 and (best is None or len(digits) > best[0]):
                    if luhn_ok(digits) and len(set(digits)) > 1:
                        best = (len(digits), i, j)
        if best is None:
            return None
        _, i, j = best
        return "".join(groups[: 2 * i]) + CARD + "".join(groups[2 * j - 1 :])

    @staticmethod
    def _phone(m: re.Match[str]) -> str | None:
        spans = phone_spans(m.group())
        if not spans:
            return None
        text, out, at = m.group(), [], 0
        for start, end in spans:
            out += [text[at:start], PHONE]
            at = end
        return "".join(out) + text[at:]


@functools.lru_cache(maxsize=4096)  # a message that repeats one number (or a wall of "1 1 1") parses it once
def phone_spans(candidate: str) -> tuple[tuple[int, int], ...]:
    """Where libphonenumber finds valid phone numbers in a digit run, in any of PHONE_REGIONS' readings."""
    spans: set[tuple[int, int]] = set()
    for region in PHONE_REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(candidate, region, leniency=phonenumbers.Leniency.VALID):
            spans.add((match.start, match.end))
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):  # the longest reading where two overlap
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return tuple(kept)
