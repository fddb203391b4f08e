"""Pages in six languages on a real server: lang/dir, language links, codenames, page weight,
and questionnaire answers that survive a round trip (a validation error, the encrypted manifest).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import RunningServer, SourceClient, add_reply

from dropbox import i18n
from keys.codename import to_locale_digits
from keys.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LOCALES = {"en": ("en", "ltr"), "fa_AF": ("fa-AF", "rtl"), "ps": ("ps", "rtl"),
           "ur": ("ur", "rtl"), "fa": ("fa", "rtl"), "ar": ("ar", "rtl")}
LANDING_BUDGET = 30 * 1024


def _compile_catalogs_if_stale() -> None:
    """What `./dev test` does before pytest, for a bare `pytest` run: the server loads .mo files
    once per process, so they must exist before any test starts a server."""
    translations = ROOT / "dropbox" / "translations"
    for po in translations.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            subprocess.run([sys.executable, "-m", "babel.messages.frontend", "-q", "compile",
                            "-d", str(translations), "-D", "messages"], check=True, timeout=120)
            return


_compile_catalogs_if_stale()


def html_tag(page: str) -> str:
    match = re.search(r"<html[^>]*>", page)
    assert match, page[:200]
    return match.group(0)


def ps(message: str) -> str:
    return i18n.translator("ps")(message)


# --- language, direction, links ------------------------------------------------------------------


@pytest.mark.parametrize("code", LOCALES)
async def test_lang_and_dir_are_right_and_remembered(running_server: Any, code: str) -> None:
    lang, direction = LOCALES[code]
    async with running_server() as server, SourceClient(server.url) as source:
        _, landing = await source.get(f"/?l={code}")
        assert html_tag(landing) == f'<html lang="{lang}" dir="{direction}">'
        _, login = await source.get("/login")  # no ?l= any more: the session remembers
        assert html_tag(login) == f'<html lang="{lang}" dir="{direction}">'
        if code != "en":
            assert i18n.translator(code)("I have a codename") in landing
            assert i18n.translator(code)("I have a codename") != "I have a codename"


@pytest.mark.parametrize(("header", "expected"), [
    ("ps-AF,ps;q=0.9,en;q=0.5", 'lang="ps"'), ("prs", 'lang="fa-AF"'),
    ("fa-AF", 'lang="fa-AF"'), ("de-DE,ur;q=0.8", 'lang="ur"'), ("de", 'lang="en"')])
async def test_the_browser_language_is_used_without_a_choice(running_server: Any, header: str,
                                                             expected: str) -> None:
    async with running_server() as server, SourceClient(server.url, header) as source:
        _, landing = await source.get("/")
    assert expected in html_tag(landing)


async def test_every_page_links_to_every_language(running_server: Any) -> None:
    async with running_server() as server, SourceClient(server.url) as source:
        pages = {"landing": (await source.get("/?l=ps"))[1], "error": (await source.get("/x"))[1],
                 "login": (await source.get("/login"))[1]}
        await source.start()
        pages["submit"] = (await source.get("/submit"))[1]
        pages["start"] = (await source.get("/start"))[1]
    for name, page in pages.items():
        nav = re.search(r'<nav aria-label="[^"]+">(.*?)</nav>', page, re.S)
        assert nav, name
        for code, (lang, direction) in LOCALES.items():
            assert f'?l={code}" lang="{lang}" dir="{direction}"' in nav.group(1), (name, code)
        assert 'aria-current="true">پښتو<' in nav.group(1), name


@pytest.mark.parametrize("code", ["ps", "fa_AF", "ur", "ar", "en"])
async def test_the_codename_is_ltr_isolated_with_local_digits_beside(running_server: Any,
                                                                     code: str) -> None:
    async with running_server() as server, SourceClient(server.url) as source:
        await source.get(f"/?l={code}")
        _, page = await source.get("/start")
    latin = re.search(r'<bdi dir="ltr" id="codename">([0-9 ]{24})</bdi>', page)
    assert latin, page
    local = to_locale_digits(latin.group(1), code)
    if code == "en":
        assert page.count("<bdi") == 1
    else:
        assert local != latin.group(1)
        assert f'<bdi dir="ltr">{local}</bdi>' in page


# --- weight --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", LOCALES)
async def test_the_landing_page_is_light_with_no_scripts_or_fonts(running_server: Any,
                                                                  code: str) -> None:
    async with running_server() as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/?l={code}") as response:
            page = await response.read()
        linked = re.findall(rb'<link[^>]+href="([^"]+)"', page)
        assert linked == [b"/static/style.css"]
        total = len(page)
        async with http.get(server.url + "/static/style.css") as response:
            css = await response.read()
        total += len(css)
    assert total < LANDING_BUDGET, f"{code}: {total} bytes"
    assert b"<script" not in page.lower()
    assert b"@font-face" not in css
    assert b"url(" not in css
    assert not re.search(rb'(src|href)="(https?:)?//', page), "no third-party resources"


# --- the questionnaire round trip ----------------------------------------------------------------


async def post_submission(source: SourceClient, fields: list[tuple[str, str]],
                          files: list[tuple[str, str, bytes, str]]) -> tuple[int, str]:
    """The submit form as a browser sends it: CSRF first, then the fields in page order."""
    if not source.csrf:
        await source.get("/submit")
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("csrf_token", source.csrf)
    for name, value in fields:
        form.add_field(name, value)
    for name, filename, content, content_type in files:
        form.add_field(name, content, filename=filename, content_type=content_type)
    async with source.http.post(source.url + "/submit", data=form) as response:
        return response.status, source._remember(await response.text())


def manifest_of(server: RunningServer) -> dict[str, Any]:
    (submission, _), = server.submissions()
    names = server.ciphertexts(submission)
    manifest: dict[str, Any] = json.loads(server.decrypt(names["manifest"][0]))
    manifest["_message"] = server.decrypt(names["message"][0]).decode() if "message" in names \
        else None
    return manifest


async def test_a_validation_error_keeps_the_answers_and_nothing_else(running_server: Any) -> None:
    story = "دوی د شپې راغلل او زما ورور یې بوت."
    fields = [("message", story), ("q_when", "31/2/2024"), ("q_city", "پېښور"),
              ("q_documents", "none"), ("q_documents", "acc"), ("q_urgency", "days")]
    audio = [("q_what_happened_audio", "voice.ogg", b"OggS" + b"\x00" * 5000, "audio/ogg")]
    async with running_server() as server, SourceClient(server.url) as source:
        await source.get("/?l=ps")
        await source.start()
        status, page = await post_submission(source, fields, audio)
        assert status == 400
        assert server.submissions() == []
        assert server.stored_files() == [], "the streamed recording's ciphertext was deleted"

        # Each error sits next to its field, in Pashto, tied to it for screen readers.
        date_error = ps("This date does not exist. Check the day and the month, "
                        "or write the date in words.")
        assert date_error != "This date does not exist. Check the day and the month, " \
                             "or write the date in words."
        assert f'<p class="field-error" id="q_when-error">{date_error}</p>' in unescape(page)
        assert re.search(r'<input type="text" id="q_when" name="q_when" '
                         r'aria-describedby="q_when-help q_when-error" aria-invalid="true" '
                         r'value="31/2/2024"', page)
        assert 'id="q_documents" aria-describedby="q_documents-help q_documents-error"' in page
        assert "هېڅ یو" in unescape(page)  # the option named in the error, in Pashto
        assert ps("Please check your answers") in unescape(page)
        # What was typed is still there; the files must be chosen again, and the page says so.
        assert f">{story}</textarea>" in unescape(page)
        assert 'value="پېښور"' in unescape(page)
        assert re.search(r'value="acc" checked', page)
        assert re.search(r'value="none" checked', page)
        assert re.search(r'value="days" checked', page)
        assert ps("Please choose the recording again.") in unescape(page)

        fixed = [f for f in fields if f[1] not in ("31/2/2024", "none")] + [("q_when", "2/3/2024")]
        status, page = await post_submission(source, fixed, audio)
        assert status == 200, page
        assert 'id="submitted"' in page
    manifest = manifest_of(server)
    answers = {a["key"]: a["value"] for a in manifest["questionnaire"]["answers"]}
    assert answers["documents"] == ["acc"]
    assert answers["when"]["iso"] == "2024-03-02"
    assert answers["what_happened_audio"] == ["voice.ogg"]
    assert manifest["_message"] == story


DARI = {
    "message": "طالبان به خانه ما آمدند.\nپدرم را بردند و ما پنهان شدیم.",
    "q_when": "۱۵ حمل ۱۴۰۳", "q_province": "balochistan", "q_city": "کویته، منطقه هزاره‌ټاون",
    "q_at_risk": ["self", "children"], "q_groups": ["woman", "former_security"],
    "q_documents": ["por_card"], "q_urgency": "weeks", "q_consent_uses": ["advocacy", "legal"],
    "q_contact": "سیگنال: ‎+92 300 0000000",
}
PASHTO = {
    "message": "پولیسو زموږ کور ته راغلل.\nویې ویل چې باید په دوو اونیو کې ووځو.",
    "q_when": "د ۱۴۰۳ کال وری", "q_province": "khyber_pakhtunkhwa", "q_city": "پېښور، بورډ",
    "q_at_risk": ["family"], "q_groups": ["journalist"], "q_documents": ["acc", "unhcr"],
    "q_urgency": "days", "q_consent_uses": ["referral"], "q_contact": "",
}


@pytest.mark.parametrize(("code", "typed"), [("fa_AF", DARI), ("ps", PASHTO)])
async def test_answers_in_dari_and_pashto_come_back_intact(running_server: Any, code: str,
                                                           typed: dict[str, Any]) -> None:
    fields = [(name, v) for name, value in typed.items()
              for v in (value if isinstance(value, list) else [value])]
    async with running_server() as server, SourceClient(server.url) as source:
        await source.get(f"/?l={code}")
        await source.start()
        status, page = await post_submission(source, fields, [])
        assert status == 200, page
        database = server.database_path.read_bytes()
    manifest = manifest_of(server)
    record = manifest["questionnaire"]
    assert (record["questionnaire"], record["locale"], manifest["locale"]) == (
        "amanat-pk-default", code, code)
    answers = {a["key"]: a["value"] for a in record["answers"]}
    assert manifest["_message"] == typed["message"]
    assert answers["what_happened"] == {"stored_as": "message"}
    assert answers["city"] == typed["q_city"]
    assert answers["when"]["raw"] == typed["q_when"]
    assert answers["province"] == typed["q_province"]
    assert answers["at_risk"] == typed["q_at_risk"]
    assert answers["documents"] == typed["q_documents"]
    assert answers["urgency"] == typed["q_urgency"]
    assert answers["consent_uses"] == {u: u in typed["q_consent_uses"]
                                       for u in ("advocacy", "referral", "legal")}
    assert answers.get("contact") == (typed["q_contact"] or None)
    expected = {"fa_AF": ("2024-04-03", "day"), "ps": ("2024-03-20", "month")}[code]
    assert (answers["when"]["iso"], answers["when"]["precision"]) == expected
    for secret in (typed["q_city"], typed["message"].split("\n")[0]):
        assert secret.encode() not in database


ORG_QUESTIONNAIRE = """
[questionnaire]
id = "org-edited"
version = 3
languages = ["en", "ps"]

[[field]]
key = "story"
type = "textarea"
name = "message"
required = true
satisfied_by = ["files"]
label = { en = "Your story", ps = "ستاسو کیسه" }

[[field]]
key = "agree"
type = "consent"
label = { en = "Before you send", ps = "د لېږلو مخکې" }
[[field.option]]
value = "read"
required = true
label = { en = "I understand who will read this", ps = "پوهېږم چې دا به څوک ولولي" }
"""


async def test_an_organization_s_own_questionnaire_is_served_and_enforced(
        running_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "ours.toml"
    path.write_text(ORG_QUESTIONNAIRE, "utf-8")
    async with running_server(i18n={"questionnaire": str(path)}) as server, \
            SourceClient(server.url) as source:
        await source.get("/?l=ps")
        await source.start()
        _, page = await source.get("/submit")
        assert ">ستاسو کیسه <span" in page
        assert 'id="q_agree-read" value="read" aria-required="true"' in page
        assert "q_city" not in page  # the default questionnaire is not used
        status, page = await post_submission(source, [("message", "کیسه")], [])
        assert status == 400
        assert f'id="q_agree-error">{ps("Please tick this box to go on.")}<' in unescape(page)
        status, page = await post_submission(source, [("message", "کیسه"), ("q_agree", "read")],
                                              [])
        assert status == 200, page
    record = manifest_of(server)["questionnaire"]
    assert (record["questionnaire"], record["version"]) == ("org-edited", 3)
    assert record["answers"][1] == {"key": "agree", "type": "consent",
                                    "question": "Before you send", "value": {"read": True}}


async def test_a_broken_questionnaire_stops_the_server_before_it_listens(
        running_server: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(ORG_QUESTIONNAIRE.replace('ps = "ستاسو کیسه"', 'ur = "x"'), "utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml.*no text for ps"):
        async with running_server(i18n={"questionnaire": str(path)}):
            pass


# --- numbers and days in each locale's numerals and calendar -------------------------------------

# One known day and one number per locale: 2026-11-29 is 8 Qaws (Dari, Pashto) / 8 Azar (Persian)
# 1405 in the Solar Hijri calendar (tests/test_localnum.py says how that was checked).
KNOWN_DAY = "2026-11-29"
SHOWN = {"en": ("2026-11-29", "50", "3"), "fa_AF": ("۸ قوس ۱۴۰۵", "۵۰", "۳"),
         "ps": ("۸ قوس ۱۴۰۵", "۵۰", "۳"), "fa": ("۸ آذر ۱۴۰۵", "۵۰", "۳"),
         "ur": ("۲۹ نومبر ۲۰۲۶", "۵۰", "۳"), "ar": ("٢٩ نوفمبر ٢٠٢٦", "٥٠", "٣")}
NAMES = {"en": "Amanat test drop", "fa_AF": "صندوق امانت", "ps": "د امانت صندوق"}


@pytest.mark.parametrize("code", LOCALES)
async def test_numbers_and_days_in_the_locales_numerals_and_calendar(running_server: Any,
                                                                     code: str) -> None:
    day, files, count = SHOWN[code]
    async with running_server(server={"instance_name": NAMES},
                              limits={"max_files": 50}) as server, \
            SourceClient(server.url) as source:
        _, landing = await source.get(f"/?l={code}")
        codename = await source.start()
        await add_reply(server, codename, b"We read it.", day=KNOWN_DAY)
        _, submit = await source.get("/submit")
        status, received = await source.submit("hello", [(f"{n}.txt", b"x", "text/plain")
                                                         for n in range(3)])
        fingerprint = server.state.keyring.fingerprint()
    assert status == 200, received
    name = NAMES.get(code, NAMES["en"])  # fa and ur have none here: English
    assert f"<h1>{name}</h1>" in landing
    assert f'<bdi dir="ltr">{to_locale_digits(fingerprint, code)}</bdi>' in landing
    assert f'<time datetime="{KNOWN_DAY}">{day}</time>' in submit
    limits = re.search(r'<div id="limits" class="limits">\s*<p>([^<]+)</p>', submit)
    assert limits, submit
    assert files in unescape(limits.group(1)).split()
    assert not re.search(r"[0-9]", limits.group(1)) or code == "en"
    counted = re.search(r"<p>([^<]*)</p>", received.split('id="submitted"')[1].split("</p>", 1)[1])
    assert counted, received
    assert re.findall(r"\d+", counted.group(1)) == [count], counted.group(1)
