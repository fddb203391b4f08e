"""Numbers and days as a source reads them: each locale's numerals and calendar.

| locale         | numerals                 | calendar, months                                  |
|----------------|--------------------------|---------------------------------------------------|
| en             | 0-9                      | ISO days as before ("2026-11-29")                 |
| fa_AF, ps      | ۰-۹ (U+06F0..U+06F9)     | Solar Hijri, Afghan months (حمل، ثور، جوزا …)     |
| fa             | ۰-۹                      | Solar Hijri, Iranian months (فروردین، اردیبهشت …) |
| ur             | ۰-۹ (Urdu shares them)   | Gregorian, Urdu months from CLDR (جنوری …)        |
| ar             | ٠-٩ (U+0660..U+0669)     | Gregorian, Arabic months from CLDR (يناير …)      |

Urdu: CLDR's default numbering for `ur` is Latin, with these digits as the native system. We use
the native digits because the sources reading Urdu here are Afghans, who read exactly these code
points in Dari and Pashto, and Urdu print uses them too (docs/translations.md).

The Solar Hijri conversion is the arithmetic of K. M. Borkowski (1996), "The Persian calendar for
3000 years", Earth, Moon and Planets 74: 33-year cycles between break years, valid for the years
1-3177 of the Solar Hijri era; it agrees with the calendar as published in Iran and Afghanistan.
Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from babel import Locale

from keys.codename import to_locale_digits as digits

DECIMAL_SEPARATOR = "٫"  # U+066B, CLDR's decimal separator for all the non-Latin locales here

AFGHAN_MONTHS = ("حمل", "ثور", "جوزا", "سرطان", "اسد", "سنبله",
                 "میزان", "عقرب", "قوس", "جدی", "دلو", "حوت")
# Pashto writes the same Arabic zodiac names, with Pashto's final ي in «جدي».
PASHTO_MONTHS = (*AFGHAN_MONTHS[:9], "جدي", *AFGHAN_MONTHS[10:])
PERSIAN_MONTHS = ("فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور",
                  "مهر", "آبان", "آذر", "دی", "بهمن", "اسفند")
_SOLAR_MONTHS = {"fa_AF": AFGHAN_MONTHS, "ps": PASHTO_MONTHS, "fa": PERSIAN_MONTHS}

# Borkowski's break years: the 33-year cycle restarts at each (Solar Hijri years).
_BREAKS = (-61, 9, 38, 199, 426, 686, 756, 818, 1111, 1181, 1210, 1635, 2060, 2097, 2192,
           2262, 2324, 2394, 2456, 3178)
FIRST_YEAR, LAST_YEAR = 1, _BREAKS[-1] - 1


def has_own_numerals(locale: str) -> bool:
    """Whether `locale` writes numbers in digits other than 0-9 (keys.codename has the table)."""
    return digits("0", locale) != "0"


def format_number(number: float, locale: str, decimals: int = 0) -> str:
    """A number as written in `locale`, with `decimals` digits after the point: "50", "1.5";
    "۵۰", "۱٫۵"; "٥٠", "١٫٥". No thousands separator, as on the English pages."""
    text = f"{number:.{decimals}f}"
    if has_own_numerals(locale):
        text = text.replace(".", DECIMAL_SEPARATOR)
    return digits(text, locale)


def nowruz(year: int) -> dt.date:
    """The Gregorian day on which Solar Hijri `year` begins (1 Hamal / 1 Farvardin)."""
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"Solar Hijri year {year} is outside {FIRST_YEAR}-{LAST_YEAR}")
    # Leap years of the Solar Hijri calendar up to `year`, counted cycle by cycle ...
    leaps, start, span = -14, _BREAKS[0], 0
    for end in _BREAKS[1:]:
        span = end - start
        if year < end:
            break
        leaps += span // 33 * 8 + span % 33 // 4
        start = end
    into = year - start
    leaps += into // 33 * 8 + (into % 33 + 3) // 4
    if span % 33 == 4 and span - into == 4:
        leaps += 1
    # ... against the Gregorian leap days up to the same spring: the difference moves March 20.
    gregorian_year = year + 621
    gregorian_leaps = gregorian_year // 4 - (gregorian_year // 100 + 1) * 3 // 4 - 150
    return dt.date(gregorian_year, 3, 20) + dt.timedelta(days=leaps - gregorian_leaps)


def solar_hijri(day: dt.date) -> tuple[int, int, int]:
    """(year, month 1-12, day) of a Gregorian day in the Solar Hijri calendar: months 1-6 have
    31 days, 7-11 have 30, the twelfth 29 or 30 (up to the next Nowruz)."""
    year = day.year - 621
    start = nowruz(year)
    if day < start:
        year -= 1
        start = nowruz(year)
    index = (day - start).days
    if index < 186:
        return year, index // 31 + 1, index % 31 + 1
    return year, (index - 186) // 30 + 7, (index - 186) % 30 + 1


def from_solar_hijri(year: int, month: int, day: int) -> dt.date:
    """The Gregorian day of a Solar Hijri date; ValueError if that day does not exist."""
    start = nowruz(year)
    last = 31 if month <= 6 else 30
    if month == 12:
        last = (nowruz(year + 1) - start).days - 336  # 29, or 30 in a leap year
    if not 1 <= month <= 12 or not 1 <= day <= last:
        raise ValueError(f"{year}/{month}/{day} is not a Solar Hijri date")
    before = (month - 1) * 31 if month <= 7 else 186 + (month - 7) * 30
    return start + dt.timedelta(days=before + day - 1)


@cache
def _gregorian_months(locale: str) -> tuple[str, ...]:
    wide = Locale.parse(locale).months["format"]["wide"]
    return tuple(wide[month] for month in range(1, 13))


def format_day(value: dt.date | str, locale: str) -> str:
    """A day for a source: "2026-11-29" (en, as before), "۸ قوس ۱۴۰۵" (fa_AF), "۸ آذر ۱۴۰۵"
    (fa), "۲۹ نومبر ۲۰۲۶" (ur), "٢٩ نوفمبر ٢٠٢٦" (ar). An ISO string is accepted; anything
    that is not a day is returned unchanged (a page never fails on a stored value)."""
    try:
        day = dt.date.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return str(value)
    if locale in _SOLAR_MONTHS:
        try:
            year, month, date = solar_hijri(day)
        except ValueError:
            return day.isoformat()
        name = _SOLAR_MONTHS[locale][month - 1]
    elif has_own_numerals(locale):
        year, month, date = day.year, day.month, day.day
        name = _gregorian_months(locale)[month - 1]
    else:
        return day.isoformat()
    return f"{digits(str(date), locale)} {name} {digits(str(year), locale)}"
