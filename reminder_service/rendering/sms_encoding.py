"""SMS encoding: which alphabet a text needs and how many segments it costs.

An SMS is GSM-7 (160 septets in one segment, 153 per segment when split) unless any character is
outside the GSM 03.38 alphabet; then the whole message is UCS-2 (70 UTF-16 code units, 67 when
split). Characters in the extension table cost two septets (an escape plus the character).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# GSM 03.38 default alphabet (3GPP TS 23.038, 6.2.1), in code order. 0x1B is the escape to the
# extension table, not a character. 0x09 is capital C-cedilla.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
) - {"\x1b"}

# Extension table (6.2.1.1): each costs an escape septet plus itself. Form feed is in the table
# too; the rest of the table is reserved or national.
GSM7_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT, GSM7_MULTI_SEGMENT = 160, 153
UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT = 70, 67

# Typographic characters that would silently turn a message into UCS-2 (more than doubling its
# cost) and have a GSM-7 equivalent. Letters are deliberately absent: accents are the language's.
_REPLACEMENTS: dict[int, str] = str.maketrans(
    {
        "\u2018": "'",  # left single quote
        "\u2019": "'",  # right single quote / apostrophe
        "\u201a": "'",  # single low-9 quote
        "\u201b": "'",  # single high-reversed-9 quote
        "\u2032": "'",  # prime
        "\u201c": '"',  # left double quote
        "\u201d": '"',  # right double quote
        "\u201e": '"',  # double low-9 quote
        "\u201f": '"',  # double high-reversed-9 quote
        "\u2033": '"',  # double prime
        "\u00ab": '"',  # left guillemet (Spanish quotes)
        "\u00bb": '"',  # right guillemet
        "\u2039": "'",  # single left guillemet
        "\u203a": "'",  # single right guillemet
        "\u00b4": "'",  # acute accent used as an apostrophe
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2015": "-",  # horizontal bar
        "\u2212": "-",  # minus sign
        "\u2022": "-",  # bullet
        "\u2026": "...",  # ellipsis
        "\u00a0": " ",  # no-break space
        "\u202f": " ",  # narrow no-break space (Babel puts it before AM/PM)
        "\u2007": " ",  # figure space
        "\u2008": " ",  # punctuation space
        "\u2009": " ",  # thin space
        "\u200a": " ",  # hair space
        "\u200b": "",  # zero-width space
        "\u2060": "",  # word joiner
        "\u00ad": "",  # soft hyphen
        "\ufeff": "",  # byte-order mark / zero-width no-break space
    }
)
# "38°C" -> "38C"; a lone degree sign is left for analyse() to report, since dropping it could
# change the meaning ("turn 90°").
_DEGREES = re.compile(r"°\s?([CF])\b")


@dataclass(frozen=True, slots=True)
class SmsAnalysis:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    characters_outside_gsm: tuple[str, ...]  # distinct, in order of first appearance

    @property
    def is_gsm7(self) -> bool:
        return self.encoding == "GSM-7"


def normalise_for_sms(text: str) -> str:
    """Replace typography that forces UCS-2 with its GSM-7 equivalent."""
    return _DEGREES.sub(r"\1", text.translate(_REPLACEMENTS))


def analyse(text: str) -> SmsAnalysis:
    outside = tuple(
        dict.fromkeys(c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION)
    )
    if outside:
        units = len(text.encode("utf-16-le")) // 2
        segments = _segments(units, UCS2_SINGLE_SEGMENT, UCS2_MULTI_SEGMENT)
        return SmsAnalysis("UCS-2", units, segments, outside)
    units = len(text) + sum(1 for c in text if c in GSM7_EXTENSION)
    return SmsAnalysis(
        "GSM-7", units, _segments(units, GSM7_SINGLE_SEGMENT, GSM7_MULTI_SEGMENT), ()
    )


def _segments(units: int, single: int, multi: int) -> int:
    if units == 0:
        return 0
    return 1 if units <= single else math.ceil(units / multi)
