"""BIP-39 seed phrases: twelve or more words in a row from one language's wordlist (shipped in `mnemonic`).

A seed phrase is the whole wallet, so its checksum is not asked for: a phrase copied with a typo in its last
word opens the wallet all the same after a retry. What keeps sentences safe is the run: the wordlists hold
no "the", "is", "and", "I" or "my", so twelve list words in a row do not happen in talk (none in the 258k
messages of chitchat-dataset). Words may be separated by spaces, commas, line breaks or numbering
("1. abandon 2. ability …"), the way wallets show them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

SEED = "<SEED>"
MIN_WORDS = 12  # the shortest phrase wallets issue; 15, 18, 21 and 24 are runs of the same kind
# The wordlists of languages written with spaces between words (Chinese phrases are written without).
LANGUAGES = ("english", "spanish", "french", "italian", "portuguese", "czech", "turkish", "korean", "japanese")
WORD_RE = re.compile(r"[^\W\d_]+")
# What may stand between two words: spaces, commas, line breaks, numbering ("1. ", "(2)"), not a full stop.
GAP_RE = re.compile(r"(?:[\s,;\u3000-]|\(?\d+[.):]?)+")
MIN_DISTINCT = 9  # "cat cat cat …" is no seed; a valid checksum vouches for a repetitive one (abandon × 11)


@functools.cache
def wordlists() -> dict[str, int]:
    """Each word of every wordlist → a bit per language holding it (NFC, lower case)."""
    from mnemonic import Mnemonic

    bits: dict[str, int] = {}
    for i, language in enumerate(LANGUAGES):
        for word in Mnemonic(language).wordlist:
            key = unicodedata.normalize("NFC", word).lower()
            bits[key] = bits.get(key, 0) | 1 << i
    return bits


def find_seed_phrases(text: str) -> Iterator[tuple[int, int, str]]:
    """Runs of MIN_WORDS+ wordlist words of one language, as (start, end, "<SEED>")."""
    if len(text) < MIN_WORDS * 4 or sum(map(text.count, " ,\n\u3000")) < MIN_WORDS - 1:
        return  # too short or too few separators for twelve words: most messages stop here
    lists = wordlists()
    run: list[re.Match[str]] = []
    langs = 0
    for m in WORD_RE.finditer(text):
        word_langs = lists.get(unicodedata.normalize("NFC", m.group()).lower(), 0)
        joined = bool(run) and GAP_RE.fullmatch(text, run[-1].end(), m.start()) is not None
        if word_langs & langs and joined:
            run.append(m)
            langs &= word_langs
            continue
        if seed := _seed_in(run):
            yield seed
        run, langs = ([m], word_langs) if word_langs else ([], 0)
    if seed := _seed_in(run):
        yield seed


@functools.cache
def _english():  # the checksum is the same for every language; English phrases are the ones that repeat words
    from mnemonic import Mnemonic

    return Mnemonic("english")


def _seed_in(run: list[re.Match[str]]) -> tuple[int, int, str] | None:
    """The phrase in a run of list words: a checksum-valid stretch of a wallet's length if one is there (so a
    list word after the phrase stays), else the whole run when it is varied enough to be no sentence."""
    if len(run) < MIN_WORDS:
        return None
    words = [m.group().lower() for m in run]
    english = _english()
    for size in (24, 21, 18, 15, 12):
        for i in range(len(words) - size + 1):
            if english.check(" ".join(words[i : i + size])):
                return run[i].start(), run[i + size - 1].end(), SEED
    return (run[0].start(), run[-1].end(), SEED) if len(set(words)) >= MIN_DISTINCT else None
