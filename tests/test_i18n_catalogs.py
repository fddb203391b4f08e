"""The translation catalogs: complete, compilable, and in step with the code and templates."""

from __future__ import annotations

import gettext
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from dropbox.config import LOCALES

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "dropbox" / "translations"
EXPECTED_LOCALES = ("en", "fa_AF", "ps", "ur", "fa", "ar")


def load(locale: str) -> Catalog:
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as fp:
        return read_po(fp, locale=locale)


def ids(catalog: Catalog) -> set[str]:
    return {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """What the code and templates ask for today, extracted afresh with babel.cfg."""
    out = tmp_path_factory.mktemp("extract") / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "-q", "extract", "-F", "babel.cfg",
         "-o", str(out), "."],
        cwd=ROOT, check=True, capture_output=True, timeout=120)
    with out.open("rb") as fp:
        return read_po(fp)


def test_the_six_locales_are_configured() -> None:
    assert tuple(LOCALES) == EXPECTED_LOCALES
    for locale in EXPECTED_LOCALES:
        assert (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").is_file(), locale


def test_extraction_finds_the_strings_of_every_kind_of_source(extracted: Catalog) -> None:
    found = ids(extracted)
    assert len(found) > 40
    # a template string, a Python N_() string, and one from the questionnaire partial
    assert "Give a testimony" in found
    assert "Please tick this box to go on." in found
    assert "Please check your answers" in found


@pytest.mark.parametrize("locale", EXPECTED_LOCALES)
def test_every_string_in_the_code_is_in_the_catalog(extracted: Catalog, locale: str) -> None:
    catalog = load(locale)
    missing = ids(extracted) - ids(catalog)
    assert not missing, f"{locale}: run pybabel update (docs/translations.md); missing {missing}"
    stale = ids(catalog) - ids(extracted)
    assert not stale, f"{locale}: entries no longer used anywhere: {stale}"


@pytest.mark.parametrize("locale", EXPECTED_LOCALES)
def test_the_catalog_is_fully_translated_and_not_fuzzy(locale: str) -> None:
    catalog = load(locale)
    assert not catalog.fuzzy, f"{locale}: the catalog header is marked fuzzy"
    untranslated, fuzzy = [], []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(s and s.strip() for s in strings):
            untranslated.append(message.id)
        if message.fuzzy:
            fuzzy.append(message.id)
    assert not untranslated, f"{locale}: untranslated {untranslated}"
    assert not fuzzy, f"{locale}: fuzzy {fuzzy}"


@pytest.mark.parametrize("locale", EXPECTED_LOCALES)
def test_placeholders_match_the_english(locale: str) -> None:
    problems = [(m.id, [str(e) for e in errors]) for m, errors in load(locale).check()]
    assert not problems, f"{locale}: {problems}"


@pytest.mark.parametrize("locale", EXPECTED_LOCALES)
def test_the_catalog_compiles_and_translates(locale: str) -> None:
    catalog = load(locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    translations = gettext.GNUTranslations(buffer)
    english = "Give a testimony"
    translated = translations.gettext(english)
    assert translated == catalog[english].string
    if locale != "en":
        assert translated != english


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext's msgfmt is not installed")
@pytest.mark.parametrize("locale", EXPECTED_LOCALES)
def test_gnu_msgfmt_accepts_the_catalog(locale: str, tmp_path: Path) -> None:
    po = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    subprocess.run(["msgfmt", "--check", "-o", str(tmp_path / "m.mo"), str(po)], check=True,
                   capture_output=True, timeout=60)


def test_pybabel_compile_succeeds_for_all_catalogs(tmp_path: Path) -> None:
    copy = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, copy, ignore=shutil.ignore_patterns("*.mo"))
    result = subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "compile", "--statistics",
         "-d", str(copy), "-D", "messages"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for locale in EXPECTED_LOCALES:
        assert (copy / locale / "LC_MESSAGES" / "messages.mo").stat().st_size > 1000
