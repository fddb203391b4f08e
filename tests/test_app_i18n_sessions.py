"""Locale choice and page direction; sessions, CSRF tokens and rate limits as pure units."""

from __future__ import annotations

import re

import pytest
from conftest import SourceClient

from dropbox import i18n
from dropbox.config import LOCALES
from dropbox.sessions import SessionStore, TokenBucket
from keys.age import X25519Identity
from keys.codename import SourceKeys

# --- locale choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "remembered", "header", "expected"), [
    ("ps", "fa", "ar", "ps"),                    # the link wins
    (None, "fa", "ar", "fa"),                    # then the session
    (None, None, "de-DE, fa-AF;q=0.9, ar;q=0.8", "fa_AF"),
    (None, None, "ur;q=0.2, ps;q=0.7", "ps"),    # by quality, not order
    (None, None, "prs", "fa_AF"),                # Dari's ISO 639-3 code
    (None, None, "de, fr", "en"),                # then the default
    ("xx", None, None, "en"),                    # an unknown link is ignored
    ("FA-af", None, None, "fa_AF"),
    (None, None, "ar;q=0", "en"),
])
def test_choose_locale(query, remembered, header, expected):
    assert i18n.choose_locale(query, remembered, header, "en") == expected


def test_directions_and_tags():
    for code in LOCALES:
        info = i18n.locale_info(code)
        assert info.direction == ("ltr" if code == "en" else "rtl")
        assert "_" not in info.lang
    assert i18n.locale_info("fa_AF").lang == "fa-AF"


def test_format_bytes():
    assert i18n.format_bytes(2 * 1024**3, "en") == "2 GiB"
    assert i18n.format_bytes(1536 * 1024, "en") == "1.5 MiB"
    assert i18n.format_bytes(500, "en") == "500 bytes"


def test_missing_catalog_falls_back_to_source_strings(tmp_path, monkeypatch):
    i18n.translations.cache_clear()
    monkeypatch.setattr(i18n, "TRANSLATIONS_DIR", tmp_path)
    try:
        assert i18n.translator("ps")("Log out") == "Log out"
    finally:
        i18n.translations.cache_clear()


async def test_every_page_has_lang_dir_and_language_links(running_server):
    async with running_server() as server:
        for code in LOCALES:
            info = i18n.locale_info(code)
            async with SourceClient(server.url) as source:
                for path in ("/", "/start", "/login", "/no-such-page"):
                    _, html = await source.get(f"{path}?l={code}")
                    assert f'<html lang="{info.lang}" dir="{info.direction}">' in html
                    links = re.findall(r'href="[^"]*\?l=([A-Za-z_]+)"', html)
                    assert sorted(links) == sorted(LOCALES)


async def test_language_choice_is_remembered_in_the_session(running_server):
    async with running_server() as server, SourceClient(server.url,
                                                        accept_language="ar") as source:
        _, html = await source.get("/")
        assert '<html lang="ar" dir="rtl">' in html  # Accept-Language without a choice
        await source.get("/?l=ps")
        _, html = await source.get("/login")
        assert '<html lang="ps" dir="rtl">' in html
        _, html = await source.get("/login?l=en")
        assert '<html lang="en" dir="ltr">' in html


async def test_codename_is_isolated_ltr_with_local_digits(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        _, html = await source.get("/start?l=fa_AF")
    assert re.search(r'<bdi dir="ltr" id="codename">\d{4}( \d{4}){4}</bdi>', html)
    assert re.search(r'<bdi dir="ltr">[۰-۹]{4}( [۰-۹]{4}){4}</bdi>', html)


async def test_landing_page_is_light(running_server):
    async with running_server() as server, SourceClient(server.url) as source:
        _, html = await source.get("/")
        _, css = await source.get("/static/style.css")
    assert len(html.encode()) + len(css.encode()) < 30 * 1024
    assert "<script" not in html
    assert "@font-face" not in css
    assert not re.search(r"(margin|padding)-(left|right)|text-align:\s*(left|right)", css)


# --- sessions ----------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_forget_the_identity():
    store = SessionStore(idle_timeout=60, max_sessions=10)
    session = store.create(now=0)
    session.log_in("source", SourceKeys("0" * 64, X25519Identity.generate(), bytes(32)))
    assert store.get(session.key, now=59) is session  # touching refreshes
    assert store.get(session.key, now=118) is session
    assert store.get(session.key, now=179) is None
    assert session.reply_identity is None
    assert session.source_id is None
    assert len(store) == 0


def test_expire_sweeps_idle_sessions_only():
    store = SessionStore(idle_timeout=60, max_sessions=10)
    old, fresh = store.create(now=0), store.create(now=50)
    assert store.expire(now=100) == 1
    assert store.get(old.key, now=100) is None
    assert store.get(fresh.key, now=100) is fresh


def test_session_count_is_bounded():
    store = SessionStore(idle_timeout=600, max_sessions=3)
    first = store.create(now=0)
    for t in range(1, 4):
        store.create(now=t)
    assert len(store) == 3
    assert store.get(first.key, now=5) is None


def test_csrf_token_changes_at_login_and_compares_exactly():
    store = SessionStore(idle_timeout=60, max_sessions=10)
    session = store.create(now=0)
    token = session.csrf_token
    assert session.check_csrf(token)
    assert not session.check_csrf(token[:-1])
    assert not session.check_csrf("")
    assert not session.check_csrf(None)
    assert not session.check_csrf("ü" * 10)
    session.log_in("source", SourceKeys("0" * 64, X25519Identity.generate(), bytes(32)))
    assert not session.check_csrf(token)


def test_token_bucket_refills_over_time():
    bucket = TokenBucket(capacity=3, period=60.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(10.0)
    assert bucket.take(20.0)  # one token per 20 s
    assert not bucket.take(20.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]
