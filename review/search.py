"""Case-insensitive, script-aware substring search over messages and form answers.

Dari, Pashto and Urdu text arrives typed on Arabic, Persian and Pashto keyboards, so the same word
can come with Arabic yeh (ي) or Persian yeh (ی), Arabic kaf (ك) or keheh (ک), with or without
diacritics, tatweel or zero-width non-joiners, in Latin, Persian or Arabic-Indic digits.
`normalize` folds those variants so a search finds the word however it was typed.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

_FOLD: dict[str, str] = (
    {
        "\u064a": "\u06cc",  # ARABIC YEH -> FARSI YEH
        "\u0649": "\u06cc",  # ALEF MAKSURA -> FARSI YEH
        "\u0643": "\u06a9",  # ARABIC KAF -> KEHEH
        "\u0629": "\u0647",  # TEH MARBUTA -> HEH
        "\u06c0": "\u0647",  # HEH WITH YEH ABOVE -> HEH
        "\u06c1": "\u0647",  # HEH GOAL -> HEH
        "\u06d5": "\u0647",  # AE -> HEH
        "\u0623": "\u0627",  # ALEF WITH HAMZA ABOVE -> ALEF
        "\u0625": "\u0627",  # ALEF WITH HAMZA BELOW -> ALEF
        "\u0622": "\u0627",  # ALEF WITH MADDA -> ALEF
        "\u0671": "\u0627",  # ALEF WASLA -> ALEF
        "\u0624": "\u0648",  # WAW WITH HAMZA -> WAW
        "\u0626": "\u06cc",  # YEH WITH HAMZA -> FARSI YEH
        "\u200c": "",  # ZERO WIDTH NON-JOINER
        "\u200d": "",  # ZERO WIDTH JOINER
        "\u0640": "",  # TATWEEL
        "\u200e": "",  # LRM
        "\u200f": "",  # RLM
        "\u061c": "",  # ARABIC LETTER MARK
    }
    | {chr(0x06F0 + d): str(d) for d in range(10)}  # Persian digits
    | {chr(0x0660 + d): str(d) for d in range(10)}  # Arabic-Indic digits
)
# Regexes rather than str.translate: the variants are rare in real text, and re's charset scan
# is several times faster than translate() on non-ASCII strings.
_FOLD_RE = re.compile("[" + "".join(_FOLD) + "]")


def _mark_ranges() -> str:
    """A character class of every combining mark in the BMP (harakat, hamza above, accents)."""
    marks = [cp for cp in range(0x300, 0x10000) if unicodedata.combining(chr(cp))]
    ranges: list[list[int]] = []
    for cp in marks:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_MARKS_RE = re.compile(f"[{_mark_ranges()}]+")


def normalize(text: str) -> str:
    """Fold case, compatibility forms, Arabic-script letter variants, diacritics and digits."""
    text = _MARKS_RE.sub("", unicodedata.normalize("NFKD", text))
    text = _FOLD_RE.sub(lambda m: _FOLD[m.group()], text)
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


class Hit(NamedTuple):  # a tuple: cheap to make thousands of for a common word
    id: str
    snippet: str


class SearchIndex:
    """All normalized documents in one string; a query is a C-speed `str.find` over it.

    Documents are separated by NUL, which `normalize` never leaves in a query, so a match
    cannot span two submissions.
    """

    def __init__(self, documents: Iterable[tuple[str, str]]) -> None:
        parts: list[str] = []
        self._ids: list[str] = []
        self._starts: list[int] = []
        pos = 0
        for doc_id, text in documents:
            norm = normalize(text).replace("\0", " ")
            self._ids.append(doc_id)
            self._starts.append(pos)
            parts.append(norm)
            pos += len(norm) + 1
        self._text = "\0".join(parts)

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: str, limit: int | None = None) -> list[Hit]:
        """Documents containing the normalized query, in index order, with a short snippet."""
        needle = normalize(query).replace("\0", " ")
        if not needle:
            return []
        hits: list[Hit] = []
        at = self._text.find(needle)
        while at >= 0 and (limit is None or len(hits) < limit):
            n = bisect.bisect_right(self._starts, at) - 1
            start = self._starts[n]
            end = self._text.find("\0", start)
            end = len(self._text) if end < 0 else end
            snippet = self._text[max(start, at - 30) : min(end, at + len(needle) + 30)]
            hits.append(Hit(self._ids[n], snippet))
            at = self._text.find(needle, end)
        return hits
