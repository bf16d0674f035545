"""Persona slugs: every person in the data gets a stable ASCII name (`alice`, `sasha`, `sasha2`).

A slug comes from the username, else the transliterated first name, else the id. Uniqueness (`sasha2`)
is settled by storage, which knows the slugs already taken.
"""

from __future__ import annotations

import re
import unicodedata

from core.errors import UserError

# Cyrillic → Latin (a simple, readable scheme: "Саша" → "sasha", "Юля" → "yulya").
_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяіїєґ",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "e",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "kh",
            "ts",
            "ch",
            "sh",
            "shch",
            "",
            "y",
            "",
            "e",
            "yu",
            "ya",
            "i",
            "yi",
            "ye",
            "g",
        ],
        strict=True,
    )
)
MAX_SLUG_LEN = 32
SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def transliterate(text: str) -> str:
    out = []
    for ch in text.lower():
        if ch in _CYRILLIC:
            out.append(_CYRILLIC[ch])
            continue
        # Latin letters with accents → their base letter; everything else non-ASCII is dropped.
        decomposed = unicodedata.normalize("NFKD", ch)
        out.append("".join(c for c in decomposed if c.isascii()))
    return "".join(out)


def slug_base(username: str | None, first_name: str | None, person_id: int | None = None) -> str:
    """The slug a person would get if it were free: from username, else first name, else the id."""
    for source in (username, first_name):
        if source:
            slug = re.sub(r"[^a-z0-9_]+", "", transliterate(source).replace(" ", "_")).strip("_")
            slug = slug[:MAX_SLUG_LEN].rstrip("_")
            if slug and slug[0].isdigit():
                slug = f"u{slug}"[:MAX_SLUG_LEN]
            if slug:
                return slug
    return f"user{abs(person_id)}" if person_id is not None else "user"


def unique_slug(base: str, taken: set[str]) -> str:
    """`base`, or `base2`, `base3`, ... whichever is not taken yet."""
    if base not in taken:
        return base
    n = 2
    while f"{base[: MAX_SLUG_LEN - len(str(n))]}{n}" in taken:
        n += 1
    return f"{base[: MAX_SLUG_LEN - len(str(n))]}{n}"


def validate_slug(slug: str) -> str:
    if not SLUG_RE.match(slug):
        raise UserError(
            f"{slug!r} is not a valid persona name: use 1-32 lowercase ASCII letters, digits or _, "
            "starting with a letter (e.g. friend2)"
        )
    return slug
