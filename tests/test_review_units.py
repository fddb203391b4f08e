"""Pure parts of the review tool: sanitizing, search normalization, the custody chain."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.sanitize import (
    RLI,
    clean,
    display_lines,
    is_rtl,
    json_dumps,
    safe_filename,
    unique_name,
)
from review.search import SearchIndex, normalize
from review.vault import GENESIS, VaultIntegrityError, canonical, entry_hash, verify_chain


@pytest.mark.parametrize(
    "payload",
    [
        "\x1b[2J\x1b[H",  # clear screen, cursor home
        "\x1b]0;title\x07",  # OSC window title, BEL-terminated
        "\x1b]52;c;ZWNobyBwd25lZA==\x1b\\",  # OSC 52 clipboard write, ST-terminated
        "\x1bP+q544e\x1b\\",  # DCS
        "\x9b31m",  # 8-bit CSI
        "\x9d0;t\x9c",  # 8-bit OSC
        "\x1b7\x1b8\x1bc",  # save/restore cursor, full reset
        "\x00\x08\x7f\x85",
        "\u202eexe.txt\u202c\u2066x\u2069",
    ],
)
def test_clean_removes_every_control(payload: str) -> None:
    out = clean(f"before {payload} after")
    assert out.startswith("before ")
    assert out.endswith(" after")
    for ch in out:
        assert ch in "\n\t" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F), repr(out)
        assert ch not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert "title" not in out  # whole sequences go, not just the ESC byte
    assert "ZWNo" not in out


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x206F), max_size=60), st.booleans())
def test_clean_never_leaves_a_control_and_is_stable(text: str, single_line: bool) -> None:
    out = clean(text, single_line=single_line)
    for ch in out:
        assert ch in "\n\t" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F), repr(out)
        assert ch not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028"
    assert clean(out, single_line=single_line) == out


def test_file_names_are_safe_on_every_system() -> None:
    assert safe_filename("CONIN$") == "_CONIN$"
    assert safe_filename("COM¹.txt") == "_COM¹.txt"
    assert safe_filename("nul .txt") == "_nul.txt"
    assert safe_filename("-rf") == "_-rf"
    assert safe_filename("report.pdf" + " " * 60 + ".desktop") == "report.pdf.desktop"
    assert safe_filename("a \u3000 b.txt") == "a b.txt"
    assert safe_filename("x" * 300 + ".desktop").endswith(".desktop")


def test_clean_keeps_text_and_newlines() -> None:
    text = "سلام\nhello\tworld ۱۲۳"
    assert clean(text) == text
    assert clean("a\r\nb\rc") == "a\nb\nc"
    assert clean("a\nb", single_line=True) == "a b"


def test_rtl_lines_get_isolates_and_wrap() -> None:
    text = "This is English.\n" + "این یک متن فارسی بسیار طولانی است " * 5
    lines = display_lines(text, width=40)
    assert lines[0] == "This is English."
    assert len(lines) > 3
    for line in lines[1:]:
        assert line.startswith(RLI)
        assert line.endswith("\u2069")
        assert len(line) <= 42
    assert is_rtl("  123 سلام abc")
    assert not is_rtl("abc سلام")


def test_json_keeps_data_but_escapes_dangerous_characters() -> None:
    value = {"m": "\x1b[31m\u202eX\x9b ok سلام"}
    text = json_dumps(value)
    assert json.loads(text) == value
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\x9b" not in text
    assert "سلام" in text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.bat", "evil.bat"),
        ("..", "attachment"),
        (".bashrc", "bashrc"),
        ("\u202eevil\u202c.exe", "evil.exe"),
        ("a\x1b[31mb.txt", "ab.txt"),
        ('x<y>:"z|?*.txt', "x_y___z___.txt"),
        ("CON.txt", "_CON.txt"),
        ("عکس خانه.jpg", "عکس خانه.jpg"),
        ("trailing. . ", "trailing"),
    ],
)
def test_safe_filename(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


def test_safe_filename_caps_length_keeping_extension() -> None:
    name = safe_filename("ب" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 200


def test_unique_name() -> None:
    assert unique_name("a.txt", set()) == "a.txt"
    assert unique_name("a.txt", {"A.TXT"}) == "a (2).txt"
    assert unique_name("a.txt", {"a.txt", "a (2).txt"}) == "a (3).txt"
    assert unique_name("README", {"README"}) == "README (2)"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("کابل", "كابل"),  # keheh vs Arabic kaf
        ("ایران", "ايران"),  # Farsi yeh vs Arabic yeh
        ("علی", "على"),  # Farsi yeh vs alef maksura
        ("میخواهم", "می‌خواهم"),  # with and without ZWNJ
        ("مدرسه", "مدرسة"),  # heh vs teh marbuta
        ("اسلام", "إسلام"),  # alef with hamza below
        ("محمد", "مُحَمَّد"),  # diacritics
        ("1404", "۱۴۰۴"),  # Persian digits
        ("1404", "١٤٠٤"),  # Arabic-Indic digits
        ("kabul", "KABUL"),
        ("cafe", "café"),
        ("پښتو", "پښـــتو"),  # tatweel
    ],
)
def test_normalize_folds_variants(typed: str, stored: str) -> None:
    assert normalize(typed) == normalize(stored)


def test_normalize_keeps_distinct_pashto_letters() -> None:
    assert normalize("ې") != normalize("ی")
    assert normalize("ښ") != normalize("ش")


def test_search_index() -> None:
    index = SearchIndex(
        [("a", "ما را از خانه بيرون كردند"), ("b", "Threats in Peshawar"), ("c", "peshawar again")]
    )
    assert [h.id for h in index.search("بیرون کردند")] == ["a"]
    assert [h.id for h in index.search("PESHAWAR")] == ["b", "c"]
    assert [h.id for h in index.search("PESHAWAR", limit=1)] == ["b"]
    assert index.search("   ") == []
    assert index.search("kردند") == []
    # A match never spans two documents.
    assert index.search("کردند threats") == []
    assert "peshawar" in index.search("peshawar")[0].snippet


def _chain(n: int) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    prev = GENESIS
    for i in range(n):
        body = {"seq": i, "at": "2026-11-26T00:00:00Z", "by": "A", "action": "x", "subjects": []}
        entry = dict(
            body, prev=prev, hash=entry_hash(prev, hashlib.sha256(canonical(body)).hexdigest())
        )
        entries.append(entry)
        prev = str(entry["hash"])
    return entries


def test_custody_chain_detects_edits_deletions_and_reordering() -> None:
    verify_chain(_chain(4))
    edited = _chain(4)
    edited[2]["action"] = "nothing to see"
    deleted = _chain(4)
    del deleted[1]
    swapped = _chain(4)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    for bad in (edited, deleted, swapped):
        with pytest.raises(VaultIntegrityError):
            verify_chain(bad)


def test_redacted_entries_still_chain() -> None:
    entries = _chain(3)
    body = {k: v for k, v in entries[1].items() if k not in ("prev", "hash")}
    entries[1] = {
        "seq": 1,
        "redacted": True,
        "body_sha256": hashlib.sha256(canonical(body)).hexdigest(),
        "prev": entries[1]["prev"],
        "hash": entries[1]["hash"],
    }
    verify_chain(entries)
    entries[1]["body_sha256"] = "0" * 64
    with pytest.raises(VaultIntegrityError):
        verify_chain(entries)
