"""Reading a date the way a person writes it, and never losing what they wrote.

A source may write "2024-03-05", "5/3/2024", "۵/۳/۲۰۲۴", "March 2024", "حمل ۱۴۰۲" or "last winter".
`read_date` turns what it can into a Gregorian ISO date with a precision (day, month or year) and
always keeps the raw text: the raw text is the testimony, the ISO date only helps sorting.
Text that is clearly a date but cannot exist (a 13th month, 30 February) is reported so the source
can correct it; text that is not a date at all ("two weeks before Eid") is kept as it is.

Conventions: numeric dates are read day first (as in Pakistan and Afghanistan) unless the day
first reading is impossible; four-digit years from 1300 to 1420 are Solar Hijri (the calendar of
Afghanistan and Iran; 1403 began on 2024-03-20). Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Literal

from dropbox.localnum import from_solar_hijri
from keys.errors import InputError

Precision = Literal["day", "month", "year"]
Calendar = Literal["gregorian", "solar_hijri"]

_TO_LATIN = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "0123456789" * 2)
# Letters that Arabic, Persian and Urdu keyboards type differently for the same word.
_LETTER_FOLD = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ۀ": "ه", "ة": "ه", "أ": "ا", "إ": "ا",
                              "آ": "ا", "ئ": "ی", "ے": "ی", "ۍ": "ی", "ې": "ی", "ھ": "ه"})

SOLAR_HIJRI_YEARS = range(1300, 1421)
GREGORIAN_YEARS = range(1900, 2101)

# Month names, already folded with _fold. Index 0 is month 1.
_GREGORIAN_MONTHS: tuple[tuple[str, ...], ...] = (
    ("january", "jan", "جنوری", "ژانویه", "يناير", "ینایر", "جنوري"),
    ("february", "feb", "فبروری", "فروری", "فوریه", "فبرایر", "فبروري"),
    ("march", "mar", "مارچ", "مارس"),
    ("april", "apr", "اپریل", "اپرېل", "اوریل", "ابریل", "اپریل"),
    ("may", "می", "مئی", "مه", "مایو", "مي"),
    ("june", "jun", "جون", "ژوئن", "یونیو", "جون"),
    ("july", "jul", "جولای", "جولائی", "ژوئیه", "یولیو", "جولاي"),
    ("august", "aug", "اگست", "اګست", "اوت", "اغسطس", "آگوست"),
    ("september", "sep", "sept", "سپتمبر", "ستمبر", "سپتامبر", "سبتمبر"),
    ("october", "oct", "اکتوبر", "اکتبر", "اکتوبر"),
    ("november", "nov", "نومبر", "نوامبر", "نوفمبر"),
    ("december", "dec", "دسمبر", "دسامبر", "دیسمبر"),
)
# Solar Hijri months: Iranian names, Afghan (Dari) zodiac names, Pashto names.
_SOLAR_MONTHS: tuple[tuple[str, ...], ...] = (
    ("فروردین", "حمل", "وری", "hamal", "farvardin"),
    ("اردیبهشت", "ثور", "غویی", "saur", "sawr", "ordibehesht"),
    ("خرداد", "جوزا", "غبرګولی", "غبرگولی", "jawza", "jauza", "khordad"),
    ("تیر", "سرطان", "چنګاښ", "چنگاښ", "saratan", "tir"),
    ("مرداد", "اسد", "زمری", "asad", "mordad"),
    ("شهریور", "سنبله", "وږی", "sunbula", "sonbola", "shahrivar"),
    ("مهر", "میزان", "تله", "mizan", "mehr"),
    ("ابان", "عقرب", "لړم", "aqrab", "aban"),
    ("اذر", "قوس", "لیندی", "qaws", "qaus", "azar"),
    ("دی", "جدی", "مرغومی", "jadi", "dey"),
    ("بهمن", "دلو", "سلواغه", "dalw", "dalv", "bahman"),
    ("اسفند", "حوت", "کب", "hut", "hoot", "esfand"),
)

# Words that may stand beside a month name without making the text more than a date.
_CONNECTORS = frozenset({"of", "the", "سال", "کال", "sal", "in", "در", "په", "د", "میں", "في"})


@dataclass(frozen=True)
class DateAnswer:
    """What a source wrote, and the Gregorian date it means when that could be worked out."""

    raw: str
    iso: str | None = None  # YYYY-MM-DD; for month or year precision, the first day
    precision: Precision | None = None
    calendar: Calendar | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"raw": self.raw, "iso": self.iso, "precision": self.precision,
                "calendar": self.calendar}


class ImpossibleDateError(InputError):
    """The text reads as a date that cannot exist (month 13, 30 February, 32 Hamal)."""


def read_date(raw: str) -> DateAnswer:
    """Read `raw` tolerantly. Raises ImpossibleDateError only for dates that cannot exist."""
    text = _fold(raw)
    tokens = re.findall(r"\d+|[^\W\d_]+", text)
    numbers = [t for t in tokens if t.isdigit()]
    words = [t for t in tokens if not t.isdigit()]
    month_words = [found for w in words if (found := _month_of(w)) is not None]
    other_words = [w for w in words if _month_of(w) is None and w not in _CONNECTORS]
    if len(month_words) == 1 and len(numbers) <= 2 and not other_words:
        month, calendar = month_words[0]
        return _from_named_month(raw, month, calendar, numbers)
    if not words and 1 <= len(numbers) <= 3 and re.fullmatch(r"[\d\s/.\-,]+", text.strip()):
        return _from_numbers(raw, [int(n) for n in numbers], numbers)
    return DateAnswer(raw)


def solar_hijri_to_gregorian(year: int, month: int, day: int) -> date:
    """Convert a Solar Hijri date (dropbox.localnum has the calendar).
    Raises ImpossibleDateError when the day does not exist in that month."""
    try:
        return from_solar_hijri(year, month, day)
    except ValueError as exc:
        raise ImpossibleDateError(str(exc)) from None


def _fold(text: str) -> str:
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.translate(_TO_LATIN).translate(_LETTER_FOLD).casefold()


def _month_of(word: str) -> tuple[int, Calendar] | None:
    for index, names in enumerate(_GREGORIAN_MONTHS):
        if word in names:
            return index + 1, "gregorian"
    for index, names in enumerate(_SOLAR_MONTHS):
        if word in names:
            return index + 1, "solar_hijri"
    return None


def _from_named_month(raw: str, month: int, calendar: Calendar, numbers: list[str]) -> DateAnswer:
    years = [int(n) for n in numbers if len(n) == 4]
    days = [int(n) for n in numbers if len(n) <= 2]
    if len(years) != 1 or len(days) + len(years) != len(numbers):
        return DateAnswer(raw)
    year = years[0]
    if (year in SOLAR_HIJRI_YEARS) != (calendar == "solar_hijri"):
        return DateAnswer(raw)  # "March 1402" or "Hamal 2024": mixed calendars, keep the words
    day = days[0] if days else None
    return _build(raw, calendar, year, month, day)


def _from_numbers(raw: str, values: list[int], digits: list[str]) -> DateAnswer:
    if len(values) == 1:
        if len(digits[0]) != 4:
            return DateAnswer(raw)
        return _build(raw, _calendar_of(values[0]), values[0], None, None)
    year_first = len(digits[0]) == 4
    year = values[0] if year_first else values[-1]
    if not year_first and len(digits[-1]) == 2:
        year += 2000  # "5/3/24": two-digit years are this century
    elif not year_first and len(digits[-1]) != 4:
        return DateAnswer(raw)
    calendar = _calendar_of(year)
    rest = values[1:] if year_first else values[:-1]
    if len(rest) == 1:
        return _build(raw, calendar, year, rest[0], None)
    day, month = (rest[1], rest[0]) if year_first else (rest[0], rest[1])
    if month > 12 >= day and not year_first:
        day, month = month, day  # "3/25/2024": the day-first reading cannot be meant
    return _build(raw, calendar, year, month, day)


def _calendar_of(year: int) -> Calendar:
    return "solar_hijri" if year in SOLAR_HIJRI_YEARS else "gregorian"


def _build(raw: str, calendar: Calendar, year: int, month: int | None, day: int | None,
           ) -> DateAnswer:
    if calendar == "gregorian" and year not in GREGORIAN_YEARS:
        return DateAnswer(raw)  # a year no testimony can be about: keep the words as written
    if month is not None and not 1 <= month <= 12:
        raise ImpossibleDateError(f"month {month} does not exist")
    precision: Precision = "day" if day is not None else "month" if month is not None else "year"
    if calendar == "solar_hijri":
        start = solar_hijri_to_gregorian(year, month or 1, day or 1)
    else:
        try:
            start = date(year, month or 1, day or 1)
        except ValueError as exc:
            raise ImpossibleDateError(str(exc)) from exc
    return DateAnswer(raw, start.isoformat(), precision, calendar)
