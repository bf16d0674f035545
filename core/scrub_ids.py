"""National ids written in their own format, found without a label when their checksum holds (`python-stdnum`).

A US SSN (123-45-6789 with the SSA's rules), a Russian СНИЛС (123-456-789 01, mod 101), a Brazilian CPF
(123.456.789-09), a Korean RRN (900101-1234567) and a Chinese resident id (18 characters) are each one format
that nothing else in a chat shares, and a checksum that a date or an order number rarely passes. Ids said
with a label ("passport 4510 123456", "СНИЛС 11223344595") are `core.scrub_labels`' job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from stdnum.br import cpf
from stdnum.cn import ric
from stdnum.kr import rrn
from stdnum.us import ssn

ID = "<ID>"


def snils_ok(number: str) -> bool:
    """СНИЛС: the digits weighted 9..1, the sum mod 101 (100 reads as 00) is the last two digits."""
    digits = re.sub(r"\D", "", number)
    if len(digits) != 11 or len(set(digits[:9])) == 1:
        return False
    total = sum(int(d) * (9 - i) for i, d in enumerate(digits[:9]))
    return total % 101 % 100 == int(digits[9:])


# Each format, and the check that tells an id from a number shaped like one.
FORMATS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (re.compile(r"(?<![\w.-])\d{3}-\d{2}-\d{4}(?![\w-])"), ssn.is_valid),
    (re.compile(r"(?<![\w.-])\d{3}-\d{3}-\d{3}[ -]\d{2}(?![\w-])"), snils_ok),
    (re.compile(r"(?<![\w.-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w-])"), cpf.is_valid),
    (re.compile(r"(?<![\w.-])\d{6}-[1-4]\d{6}(?![\w-])"), rrn.is_valid),
    (re.compile(r"(?<![\w.-])\d{17}[\dXx](?![\w-])"), ric.is_valid),
)


def find_ids(text: str) -> Iterator[tuple[int, int, str]]:
    """Checksum-valid national ids in their own formats, as (start, end, "<ID>")."""
    for pattern, valid in FORMATS:
        for m in pattern.finditer(text):
            if valid(m.group()):
                yield m.start(), m.end(), ID
