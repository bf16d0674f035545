"""Labelled secrets: a word of the lexicon, whatever joins it to its value, and a value judged by its shape.

"password: hunter2", "пароль qwerty123", "my pw is hunter2", "Passwort -> Sommer2024", "비밀번호는 1234",
"sms code 4821", "код домофона 1234", "CVV 123", "passport no. 4510 123456", "wifi: HomeNet / qwerty123".
The label stays, the value becomes a placeholder. A label found is only a candidate: the value after it must
fit its kind (`core.scrub_lexicon`), which is what keeps "I forgot my password again", "the code review is
tomorrow" and "пароль от вайфая спроси у мамы" as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from core import scrub_lexicon as lex

SECRET, ID = "<SECRET>", "<ID>"
Span = tuple[int, int, str]  # start, end, what replaces text[start:end]


def _phrase_pattern(phrase: str) -> str:
    """A phrase as a regex: any spaces or dashes between its words, word boundaries where the script has them."""
    parts = phrase.replace("-", " ").split()
    body = r"[\s-]*".join(map(re.escape, parts))
    spaced = r"[^\W\d_]"  # a letter; CJK, kana and hangul ones have no spaces around them to test
    narrow = r"[^\W\u2e80-\uffef]"  # a word character of a script with spaces ("passwort是" ends the label)
    head = rf"(?<!{narrow})" if re.match(spaced, parts[0]) and parts[0][0] < "\u2e80" else ""
    tail = rf"(?!{narrow})" if parts[-1][-1] < "\u2e80" else ""
    return head + body + tail


_KIND = lex.kind_of()
_ALL = sorted({p for by_kind in lex.LEXICON.values() for ps in by_kind.values() for p in lex.words(ps)}, key=len)
# Longest first: at one position "pin code" wins over "pin", "code de la porte" over "code".
LABEL_RE = re.compile("|".join(_phrase_pattern(p) for p in reversed(_ALL)), re.I)
# The cheap test before LABEL_RE, which is slow (hundreds of phrases): a message holds a phrase's first word
# (a chat in Latin or Cyrillic letters), or a CJK, kana or hangul character (the lexicon's other phrases).
_FIRST_WORDS = frozenset(re.findall(r"\w+", p.lower())[0] for p in _ALL if p[0] < "\u2e80")
WORD_RE = re.compile(r"\w+")
WIDE_RE = re.compile(r"[\u2e80-\uffef]")
LOGIN_BEFORE_RE = re.compile(rf"(?:{'|'.join(_phrase_pattern(w) for w in lex.LOGIN_WORDS)})[ \t]*/[ \t]*$", re.I)
WHOSE_RE = re.compile(
    rf"[ \t]+(?:{'|'.join(map(re.escape, lex.WHOSE_WORDS))})(?=[ \t])(?:[ \t]+[^\s:=：]+)", re.I
)  # the preposition and its first word; up to two more words are tried one by one
NEXT_WORD_RE = re.compile(r"[ \t]+[^\s:=：]+")
NUMBER_WORD_RE = re.compile(
    rf"[ \t]*(?:{'|'.join(re.escape(w) for w in sorted(lex.NUMBER_WORDS, key=len, reverse=True))})(?!\w)", re.I
)


def _words(ws: tuple[str, ...]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"[ \t]+") for w in sorted(ws, key=len, reverse=True))


# How people join a label to its value, by how much it says "what follows is the value".
CONNECTORS: dict[str, re.Pattern[str]] = {
    "strong": re.compile(r"[ \t]*(?::=|[:=：]|->|=>|→|⇒)[ \t]*(?:(?:is|это)[ \t]+)?(?:\r?\n[ \t]*)?"),
    "dash": re.compile(r"[ \t]+-[ \t]+|[ \t]*[—–][ \t]*(?:(?:это|is)[ \t]+)?"),
    "said": re.compile(rf"[ \t]+(?:{_words(lex.SAID_ENGLISH)})(?:[ \t]*[:：—–-])?[ \t]+", re.I),
    "said_other": re.compile(rf"[ \t]+(?:{_words(lex.SAID_OTHER)})(?:[ \t]*[:：—–-])?[ \t]+", re.I),
    "attached": re.compile(rf"[ \t]*(?:{_words(lex.SAID_ATTACHED)})[ \t]*[:：]?[ \t]*"),
    "newline": re.compile(r"[ \t]*\r?\n\s*"),
    "bare": re.compile(r"[ \t]+|(?<=[\u2e80-\uffef])(?=[!-~])"),  # after a CJK label no space is needed
}
ALLOWED = {
    lex.PASSWORD: ("strong", "dash", "said", "said_other", "attached", "newline", "bare"),
    lex.WEAK: ("strong", "said", "said_other", "attached", "bare"),
    lex.CODE: ("strong", "dash", "said", "said_other", "attached", "newline", "bare"),
    lex.BARE_CODE: ("strong", "dash", "said", "said_other", "attached"),
    lex.ID: ("strong", "dash", "said", "said_other", "attached", "newline", "bare"),
    lex.WIFI: ("strong", "dash", "said", "said_other", "attached", "bare"),
}

QUOTED_RE = re.compile(r"\"[^\"\n]+\"|'[^'\n]+'|«[^»\n]+»|“[^”\n]+”|„[^“”\n]+[“”]|「[^」\n]+」")
TOKEN_RE = re.compile(r"[^\s，。；！？、）」』]+")
PAIR_RE = re.compile(r"[^\s/]+[ \t]*/[ \t]*[^\s，。；！？、）」』]+")
CODE_RE = re.compile(r"\d{3,8}(?![\w.,:/-]?\d)|\d{2,4}(?:[ -]\d{2,4}){1,2}(?![\w.,:/-]?\d)")
ID_RE = re.compile(r"(?:[A-Z]{1,3}[ -]?)?\d+(?:[ .-]\d+){0,3}(?:[ -]?[A-Z])?(?!\w)|[A-Z0-9]{6,12}(?!\w)", re.I)
PLACEHOLDER_RE = re.compile(r"<[A-Z]+>")
NARROW_WORD_RE = re.compile(r"[^\W\u2e80-\uffef]")  # "是" before a code is a connector, a letter is not
PLAIN_WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
NUMBER_WITH_SEPARATORS_RE = re.compile(r"\d+(?:[.,:/-]\d+)+")  # 10-15, 19:30, 1.5: a range, a time, a sum
SYMBOLS = frozenset("!@#$%^&*_+=~")
TRAILING = ".,;:?"
CLOSERS = {")": "(", "]": "[", "}": "{", "»": "«", '"': '"', "'": "'"}


def find_labelled(text: str) -> Iterator[Span]:
    """Every value that follows a label of the lexicon and fits its kind, left to right, never overlapping."""
    if _FIRST_WORDS.isdisjoint(WORD_RE.findall(text.lower())) and not WIDE_RE.search(text):
        return
    at = 0
    for m in LABEL_RE.finditer(text):
        if m.start() < at:
            continue
        span = _value_after(text, m)
        if span is not None:
            at = span[1]
            yield span


def _value_after(text: str, m: re.Match[str]) -> Span | None:
    kind = _KIND.get(lex.key(m.group()), lex.PASSWORD)
    if kind == lex.BARE_CODE and _previous_word(text, m.start()) in lex.NOT_A_SECRET_CODE:
        return None
    pair = kind == lex.WIFI or bool(LOGIN_BEFORE_RE.search(text, max(0, m.start() - 30), m.start()))
    start = m.end()
    if kind == lex.ID and (n := NUMBER_WORD_RE.match(text, start)):
        start = n.end()
    for at in _whose_ends(text, start, kind):
        for name in ALLOWED[kind]:
            c = CONNECTORS[name].match(text, at)
            if c is None:
                continue
            span = _value(text, c.end(), kind, name, pair)
            if span is not None:
                return span
    return None


def _whose_ends(text: str, at: int, kind: str) -> Iterator[int]:
    """Where the value may start: right after the label, or after "for the router" / "от вайфая" (1-3 words)."""
    yield at
    if kind in (lex.ID, lex.WIFI) or (w := WHOSE_RE.match(text, at)) is None:
        return
    yield w.end()
    for _ in range(2):
        if (w := NEXT_WORD_RE.match(text, w.end())) is None:
            return
        yield w.end()


def _value(text: str, at: int, kind: str, connector: str, pair: bool) -> Span | None:
    if kind in (lex.CODE, lex.BARE_CODE):
        m = CODE_RE.match(text, at)
        return (at, m.end(), SECRET) if m and _isolated(text, at) else None
    if kind == lex.ID:
        m = ID_RE.match(text, at)
        digits = sum(c.isdigit() for c in m.group()) if m else 0
        return (at, m.end(), ID) if m and 6 <= digits <= 18 and _isolated(text, at) else None
    if pair:
        m = PAIR_RE.match(text, at)
        if m:
            end = at + len(_trim(m.group()))
            second = text[at:end].split("/", 1)[1].strip()
            if connector == "strong" or secret_shaped(second):
                return at, end, SECRET
        if kind == lex.WIFI:
            return None
    quoted = QUOTED_RE.match(text, at)
    if quoted and connector in ("strong", "dash", "said", "said_other", "attached"):
        return at, quoted.end(), SECRET
    token = TOKEN_RE.match(text, at)
    if token is None:
        return None
    value = _trim(_cut_at_cjk(token.group()))
    if not value or PLACEHOLDER_RE.match(value) or not _value_fits(value, kind, connector, text, at):
        return None
    return at, at + len(value), SECRET


def _value_fits(value: str, kind: str, connector: str, text: str, at: int) -> bool:
    if kind == lex.WEAK:
        if connector == "strong":
            return len(value) >= 4 and not PLAIN_WORD_RE.fullmatch(value) and not _number_like(value)
        if connector == "bare":  # "pw Tr0ub4dor", "pass 12345678"; not "pass 10am", "key 2024"
            mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
            return len(value) >= 6 and (mixed or value.isdigit()) and secret_shaped(value)
        return secret_shaped(value)
    if connector in ("strong", "dash"):
        return True  # "password: x" is as plain as it gets
    if connector == "said":
        return secret_shaped(value) or (value.isascii() and value.lower() not in lex.NOT_A_PASSWORD)
    if connector == "attached":
        return value.isascii() and value.lower() not in lex.NOT_A_PASSWORD
    if connector == "newline":  # the value alone on the line after its label ("wifi password\nhunter22")
        line_end = text.find("\n", at)
        alone = text[at : len(text) if line_end < 0 else line_end].strip() == value
        return secret_shaped(value) or (alone and value.isascii() and value.lower() not in lex.NOT_A_PASSWORD)
    return secret_shaped(value)


def secret_shaped(value: str) -> bool:
    """Does a word read as a secret, not as a word: letters with digits, symbols or inner capitals, or 4+ digits?"""
    if not 4 <= len(value) <= 64 or _number_like(value):
        return False
    if value.isdigit():
        return True
    letters = any(c.isalpha() for c in value)
    if letters and (any(c.isdigit() for c in value) or any(c in SYMBOLS for c in value[:-1])):
        return True
    return any(c.isupper() for c in value[1:]) and any(c.islower() for c in value)


def _number_like(value: str) -> bool:
    return bool(NUMBER_WITH_SEPARATORS_RE.fullmatch(value))


def _trim(value: str) -> str:
    """Sentence punctuation after a value is the sentence's; so is a closing bracket or quote it never opened."""
    while value:
        last = value[-1]
        opener = CLOSERS.get(last)
        unopened = opener is not None and (
            value.count(last) % 2 == 1 if opener == last else value.count(opener) < value.count(last)
        )
        if last not in TRAILING and not unopened:
            return value
        value = value[:-1]
    return value


def _cut_at_cjk(value: str) -> str:
    """ "Tiger_2024你好" → "Tiger_2024": an ASCII password ends where Chinese or Japanese text resumes."""
    if value[:1].isascii():
        for i, c in enumerate(value):
            if c >= "\u2e80":
                return value[:i]
    return value


def _isolated(text: str, at: int) -> bool:
    """A code or an id starts a word: "pin 1234", not "pin 1234" glued to a word before it."""
    return at == 0 or not NARROW_WORD_RE.match(text, at - 1)


def _previous_word(text: str, at: int) -> str:
    words = text[max(0, at - 30) : at].split()
    return words[-1].lower() if words else ""
