"""Languages: which locale a request gets, its translations, and one Jinja2 environment per locale.

A source picks a language with a `?l=` link present on every page; the choice is remembered in a
cookie of its own (no server-side state for it). Without one, the browser's Accept-Language
decides, then the configured default. Catalogs live in
dropbox/translations/<locale>/LC_MESSAGES/messages.mo (compiled by `pybabel compile`, see
babel.cfg); a locale without a compiled catalog shows the English source strings. Python code
marks strings with `N_()` (module level, translated when shown) or calls the per-request
`gettext` that `translator(locale)` returns.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
from babel import Locale
from babel.support import Translations

from dropbox.config import LOCALES
from dropbox.localnum import format_day, format_number
from keys.codename import to_locale_digits

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
TEMPLATES_DIR = Path(__file__).parent / "templates"
RTL_LOCALES = frozenset({"fa_AF", "ps", "ur", "fa", "ar"})
DOMAIN = "messages"


def N_(message: str) -> str:
    """Mark a string for extraction without translating it now (it is translated when shown)."""
    return message


@dataclass(frozen=True)
class LocaleInfo:
    """What a page needs to know about its locale."""

    code: str  # as in our catalog folders: "fa_AF"
    lang: str  # BCP 47 for <html lang>: "fa-AF"
    direction: str  # "rtl" or "ltr"
    native_name: str  # how the language calls itself, for the language links


@cache
def locale_info(code: str) -> LocaleInfo:
    babel_locale = Locale.parse(code)
    name = babel_locale.get_display_name(babel_locale) or code
    # Babel calls fa_AF "دری (افغانستان)" in some versions; sources know it as Dari.
    if code == "fa_AF":
        name = "دری"
    return LocaleInfo(
        code=code,
        lang=code.replace("_", "-"),
        direction="rtl" if code in RTL_LOCALES else "ltr",
        native_name=name,
    )


def all_locales() -> list[LocaleInfo]:
    return [locale_info(code) for code in LOCALES]


def match_locale(requested: str | None) -> str | None:
    """The supported locale for a tag such as "fa-AF", "fa_af", "ps"; None if unsupported."""
    if not requested:
        return None
    wanted = requested.strip().replace("-", "_").lower()
    for code in LOCALES:
        if code.lower() == wanted:
            return code
    language = wanted.split("_", 1)[0]
    # "prs" is the ISO 639-3 code for Dari; some systems send it.
    if language == "prs":
        return "fa_AF"
    return language if language in LOCALES else None


def from_accept_language(header: str | None) -> str | None:
    """The best supported locale in an Accept-Language header, by quality then order."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        code = match_locale(tag)
        if code is not None and quality > 0:
            ranked.append((-quality, index, code))
    return min(ranked)[2] if ranked else None


def choose_locale(
    query: str | None, remembered: str | None, accept_language: str | None, default: str
) -> str:
    """The ?l= link first, then the remembered choice (cookie), then the browser, then default."""
    return (
        match_locale(query)
        or match_locale(remembered)
        or from_accept_language(accept_language)
        or default
    )


@cache
def translations(code: str) -> gettext.NullTranslations:
    """The compiled catalog for `code`, or NullTranslations (English source strings)."""
    mo = TRANSLATIONS_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not mo.is_file():
        return gettext.NullTranslations()
    with mo.open("rb") as fp:
        return Translations(fp, domain=DOMAIN)


def translator(code: str) -> Callable[[str], str]:
    """`gettext` for one locale, for Python code that builds user-facing text."""
    return translations(code).gettext


@cache
def environment(code: str) -> jinja2.Environment:
    """The Jinja2 environment of one locale, with its translations installed (newstyle gettext,
    so `_()` in templates escapes and formats safely) and its filters `number`, `digits` and `day`
    (dropbox/localnum.py: the locale's numerals and calendar)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(code), newstyle=True)  # type: ignore[attr-defined]
    env.filters["number"] = lambda value: format_number(value, code)
    env.filters["day"] = lambda value: format_day(value, code)
    env.filters["digits"] = lambda value: to_locale_digits(value, code)
    return env


def format_bytes(size: int, code: str) -> str:
    """A size for people: "2 GiB", "500 MiB", "1.5 KiB", with translated unit names, in the
    locale's numerals ("۲ GiB" in Dari)."""
    _ = translator(code)
    units = [(1024**3, _("%(n)s GiB")), (1024**2, _("%(n)s MiB")), (1024, _("%(n)s KiB"))]
    for factor, template in units:
        if size >= factor:
            value = size / factor
            decimals = 0 if value >= 10 or value == int(value) else 1
            return template % {"n": format_number(value, code, decimals)}
    return _("%(n)s bytes") % {"n": format_number(size, code)}
