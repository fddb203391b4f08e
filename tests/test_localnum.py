"""Numerals and calendars of the source pages (dropbox/localnum.py).

Reference days, each checked independently of this code:
- 2024-03-20 = 1 Hamal/Farvardin 1403: the March equinox fell at 03:06 UTC (06:36 in Tehran and
  Kabul's calendar meridian), before noon, so Nowruz was that day.
- 2025-03-21 = 1 Hamal 1404: equinox 09:01 UTC, after noon at 52.5° E, so Nowruz was the next day
  and 2025-03-20 was 30 Hut 1403 (1403 was a leap year).
- 2021-03-20 = 30 Esfand 1399; 2023-03-21 = 1 Farvardin 1402 (equinox 21:24 UTC on 20 March).
- 2021-08-15 = 24 Asad 1400: the fall of Kabul, dated «۲۴ اسد ۱۴۰۰» in Afghan sources.
- 2026-11-29 = 8 Qaws/Azar 1405 (1405 began on 2026-03-21; equinox 14:46 UTC on 20 March).
While writing the module, every day from 1800 to 2256 was also compared with jdatetime 6.1.1
and days around Nowruz 1990-2060 with convertdate 2.5.1; neither is a dependency.
"""

from __future__ import annotations

import datetime as dt

import pytest

from dropbox import i18n
from dropbox.localnum import (
    format_day,
    format_number,
    from_solar_hijri,
    has_own_numerals,
    nowruz,
    solar_hijri,
)
from dropbox.tolerant_date import ImpossibleDateError, solar_hijri_to_gregorian

KNOWN = [
    (dt.date(2024, 3, 20), (1403, 1, 1)),
    (dt.date(2024, 3, 19), (1402, 12, 29)),
    (dt.date(2025, 3, 20), (1403, 12, 30)),
    (dt.date(2025, 3, 21), (1404, 1, 1)),
    (dt.date(2021, 3, 20), (1399, 12, 30)),
    (dt.date(2023, 3, 21), (1402, 1, 1)),
    (dt.date(2021, 8, 15), (1400, 5, 24)),
    (dt.date(2026, 11, 29), (1405, 9, 8)),
]


@pytest.mark.parametrize(("day", "expected"), KNOWN)
def test_known_days_convert_both_ways(day: dt.date, expected: tuple[int, int, int]) -> None:
    assert solar_hijri(day) == expected
    assert from_solar_hijri(*expected) == day


def test_every_day_of_two_centuries_follows_the_calendar_rules() -> None:
    day, previous = dt.date(1921, 3, 21), (1299, 12, 30)
    lengths: dict[tuple[int, int], int] = {}
    while day < dt.date(2121, 3, 21):
        year, month, date = solar_hijri(day)
        lengths[year, month] = date
        if (year, month) == previous[:2]:
            assert date == previous[2] + 1, day
        else:
            assert date == 1, day
            assert month == previous[1] % 12 + 1, day
        assert from_solar_hijri(year, month, date) == day
        previous, day = (year, month, date), day + dt.timedelta(days=1)
    for (year, month), length in lengths.items():
        if year in range(1300, 1499):
            assert length == (31 if month <= 6 else 30) or (month == 12 and length == 29)
    leap = [y for y in range(1390, 1420) if lengths[y, 12] == 30]
    assert leap == [1391, 1395, 1399, 1403, 1408, 1412, 1416]


def test_impossible_and_out_of_range_dates_are_refused() -> None:
    for year, month, day in [(1404, 12, 30), (1403, 7, 31), (1403, 13, 1), (1403, 1, 0)]:
        with pytest.raises(ValueError):
            from_solar_hijri(year, month, day)
        with pytest.raises(ImpossibleDateError):
            solar_hijri_to_gregorian(year, month, day)
    with pytest.raises(ValueError):
        nowruz(3178)
    assert format_day(dt.date(1, 1, 1), "fa_AF") == "0001-01-01"  # before the era: ISO stays


def test_numbers_in_each_locales_numerals() -> None:
    assert [format_number(50, c) for c in ("en", "fa_AF", "ps", "fa", "ur", "ar")] == [
        "50", "۵۰", "۵۰", "۵۰", "۵۰", "٥٠"]
    assert format_number(1.5, "en", 1) == "1.5"
    assert format_number(1.5, "fa", 1) == "۱٫۵"
    assert format_number(1.5, "ar", 1) == "١٫٥"
    assert format_number(1234567890, "ps") == "۱۲۳۴۵۶۷۸۹۰"
    assert not has_own_numerals("en")
    assert has_own_numerals("ur")


@pytest.mark.parametrize(("code", "expected"), [
    ("en", "2026-11-29"), ("fa_AF", "۸ قوس ۱۴۰۵"), ("ps", "۸ قوس ۱۴۰۵"),
    ("fa", "۸ آذر ۱۴۰۵"), ("ur", "۲۹ نومبر ۲۰۲۶"), ("ar", "٢٩ نوفمبر ٢٠٢٦")])
def test_a_day_in_each_locales_calendar(code: str, expected: str) -> None:
    assert format_day("2026-11-29", code) == expected
    assert format_day(dt.date(2026, 11, 29), code) == expected


def test_afghan_and_iranian_month_names() -> None:
    first_days = [from_solar_hijri(1403, month, 1) for month in range(1, 13)]
    assert [format_day(d, "fa_AF").split()[1] for d in first_days] == [
        "حمل", "ثور", "جوزا", "سرطان", "اسد", "سنبله", "میزان", "عقرب", "قوس", "جدی", "دلو", "حوت"]
    assert [format_day(d, "fa").split()[1] for d in first_days] == [
        "فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور", "مهر", "آبان", "آذر", "دی",
        "بهمن", "اسفند"]
    assert format_day("2021-08-15", "fa_AF") == "۲۴ اسد ۱۴۰۰"


def test_a_stored_value_that_is_not_a_day_is_shown_unchanged() -> None:
    assert format_day("yesterday", "fa") == "yesterday"
    assert format_day("", "ar") == ""


def test_sizes_and_template_filters_use_the_numerals() -> None:
    assert i18n.format_bytes(2 * 1024**3, "en") == "2 GiB"
    assert i18n.format_bytes(1536, "en") == "1.5 KiB"
    assert i18n.format_bytes(1536, "fa_AF").startswith("۱٫۵ ")
    assert i18n.format_bytes(500, "ar").startswith("٥٠٠ ")
    template = "{{ 7|number }} {{ '2024-03-20'|day }} {{ '12 34'|digits }}"
    rendered = {code: i18n.environment(code).from_string(template).render() for code in
                ("en", "ps", "ar")}
    assert rendered == {"en": "7 2024-03-20 12 34", "ps": "۷ ۱ حمل ۱۴۰۳ ۱۲ ۳۴",
                        "ar": "٧ ٢٠ مارس ٢٠٢٤ ١٢ ٣٤"}
