"""The attachment sandbox, metadata findings, duplicates and consent, piece by piece (issue 13).

The sandbox runs real parsers (exiftool, mat2, Pillow) under real bubblewrap where it works here,
and under rlimits alone otherwise; hostile files come through real signed bundles and the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from evidence_files import AUTHOR, GPS, authored_docx, authored_pdf, gps_photo, png_bomb
from test_review_hostile import UNSAFE, Tool
from test_review_kit import Org, Submission, make_org

from keys.manifest import IntakeLimits
from review import sandbox as sandbox_module
from review.consent import ConsentError, check_export, consents
from review.duplicates import SIMILAR_BITS, find_matches
from review.metadata import clean_copy, findings, read_attachment
from review.sandbox import Limits, Sandbox, SandboxError, detect

HAVE_TOOLS = bool(shutil.which("exiftool") and shutil.which("mat2"))
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="needs exiftool and mat2 (Debian)")
BWRAP = detect()
MODES = [Sandbox("rlimits")] + ([BWRAP] if BWRAP.mode == "bubblewrap" else [])


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org()


# --- the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize("box", MODES, ids=lambda b: b.mode)
def test_a_hanging_parser_is_killed_at_the_deadline(box: Sandbox, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; exec sleep 600" if box.mode == "rlimits" else "sleep 600"
    with pytest.raises(SandboxError, match="time limit"):
        box.run(["/bin/sh", "-c", script], [], Limits(wall_seconds=1.0))
    if box.mode == "rlimits":  # the whole process group went with it
        pid = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("box", MODES, ids=lambda b: b.mode)
def test_cpu_memory_and_output_limits(box: Sandbox) -> None:
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    with pytest.raises(SandboxError, match="CPU time limit"):
        box.run([python, "-c", "while True: pass"], [], Limits(cpu_seconds=1))
    with pytest.raises(SandboxError, match="memory limit is 128 MiB"):
        box.run([python, "-c", "b = bytearray(512 * 2**20)"], [],
                Limits(memory_bytes=128 * 2**20))
    with pytest.raises(SandboxError, match="more than 1000 bytes"):
        box.run(["/bin/sh", "-c", "yes"], [], Limits(output_bytes=1000))


@pytest.mark.skipif(BWRAP.mode != "bubblewrap", reason="bubblewrap does not work here")
def test_bubblewrap_gives_no_network_and_no_files(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    secret = tmp_path / "identity.age"
    secret.write_text("AGE-SECRET")
    probe = (f"cat {secret} 2>/dev/null && echo READ; "
             f"echo x > /usr/amanat-probe 2>/dev/null && echo WROTE; "
             f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo CONNECTED; echo done")
    try:
        output = BWRAP.run(["/bin/bash", "-c", probe], []).decode()
    finally:
        listener.close()
    assert output.strip() == "done"
    assert not Path("/usr/amanat-probe").exists()


def test_without_bubblewrap_the_fallback_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_module._bwrap_unusable.cache_clear()
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    try:
        box = detect()
    finally:
        sandbox_module._bwrap_unusable.cache_clear()
    assert box.mode == "rlimits"
    assert box.warning is not None
    assert "bubblewrap is not installed" in box.warning


@needs_tools
def test_the_fallback_leaves_no_plaintext_in_shared_memory() -> None:
    before = set(Path("/dev/shm").glob("amanat-*"))
    copy = clean_copy(Sandbox("rlimits"), lambda: [gps_photo()], len(gps_photo()))
    assert "EXIF:GPSLatitude" in copy.removed
    assert set(Path("/dev/shm").glob("amanat-*")) == before


# --- findings ---------------------------------------------------------------------------------


@needs_tools
@pytest.mark.parametrize("box", MODES, ids=lambda b: b.mode)
def test_findings_and_cleaning(box: Sandbox) -> None:
    photo, pdf = gps_photo(), authored_pdf()
    found = read_attachment(box, lambda: [photo], len(photo))
    assert found["metadata"]["gps"] == pytest.approx(list(GPS), abs=1e-4)
    assert found["filetype"] == "jpg"
    assert len(found["phash"]) == 16
    assert read_attachment(box, lambda: [pdf], len(pdf))["metadata"]["author"]["Author"] == AUTHOR
    cleaned = clean_copy(box, lambda: [pdf], len(pdf))
    assert "PDF:Author" in cleaned.removed
    assert cleaned.left == {}
    assert AUTHOR.encode() not in cleaned.data
    docx = authored_docx()  # ZIP inside: exiftool needs to seek, so it reads a tmpfs copy
    office = read_attachment(box, lambda: [docx], len(docx))
    assert office["metadata"]["author"] == {"Creator": AUTHOR, "LastModifiedBy": AUTHOR}
    assert office["filetype"] == "docx"
    cleaned = clean_copy(box, lambda: [docx], len(docx))
    assert "author" not in cleaned.left
    assert "XMP:Creator" in cleaned.removed


def test_findings_ignore_what_describes_the_pipe_and_bound_hostile_values() -> None:
    tags = {"SourceFile": "-", "File:FileType": "JPEG", "EXIF:Make": "x" * 10_000,
            "EXIF:GPSLatitude": 1234.0, "EXIF:GPSLongitude": 10.0, "XMP:Creator": ["a", "b"]}
    found = findings(tags)
    assert "gps" not in found  # 1234 degrees is no position
    assert len(found["device"]) == 200
    assert found["author"] == {"Creator": "a, b"}
    assert findings({"Composite:GPSPosition": "-33.5 -70.25"})["gps"] == [-33.5, -70.25]


@needs_tools
def test_a_decompression_bomb_is_stopped_and_the_import_goes_on(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = Submission("map attached", files=[("map.png", png_bomb(), "image/png"),
                                             ("photo.jpg", gps_photo(), "image/jpeg")])
    tool = Tool(tmp_path, org, capsys)
    assert "1 new submission(s)" in tool.import_([bomb])
    shown = json.loads(tool.run("show", bomb.submission_id, "--json"))
    png, jpg = shown["attachments"]
    assert png["metadata"]["unreadable"].startswith("metadata unreadable")
    assert "memory limit" in png["metadata"]["unreadable"]
    assert jpg["metadata"]["gps"] == pytest.approx(list(GPS), abs=1e-4)
    assert "unreadable" in tool.run("show", bomb.submission_id)


@needs_tools
def test_hostile_metadata_values_reach_no_terminal(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = "\x1b[2J\x1b]0;owned\x07" + "A" * 500
    sub = Submission("m", files=[("a.pdf", authored_pdf(evil), "application/pdf")],
                     consents=("advocacy",))
    tool = Tool(tmp_path, org, capsys)
    tool.import_([sub])
    tool.every_view(sub.submission_id)  # Tool checks every output for controls
    shown = json.loads(tool.run("show", sub.submission_id, "--json"))
    assert len(shown["attachments"][0]["metadata"]["author"]["Author"]) == 200
    tool.run("export-case", sub.submission_id, "--purpose", "advocacy", "--out", tmp_path / "c")
    summary = (tmp_path / "c" / "summary.html").read_text(encoding="utf-8")
    assert not UNSAFE.search(summary)


@needs_tools
def test_a_file_mat2_cannot_clean_is_said_and_logged(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = Submission("m", files=[("blob.bin", os.urandom(3000), "application/octet-stream")],
                     consents=("advocacy",))
    tool = Tool(tmp_path, org, capsys)
    tool.import_([sub], limits=IntakeLimits())
    case = tmp_path / "case"
    tool.run("export-case", sub.submission_id, "--purpose", "advocacy", "--out", case)
    folder = case / sub.submission_id
    assert (folder / "originals" / "blob.bin").exists()
    assert not (folder / "working" / "blob.bin").exists()
    assert "not made" in (case / "summary.html").read_text(encoding="utf-8")
    lines = (case / "custody.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("action") == "derive-failed" for line in lines)


# --- duplicates -------------------------------------------------------------------------------


def _sub(sid: str, *files: tuple[str, str | None]) -> dict[str, Any]:
    return {"id": sid, "files": [{"sha256": sha, "phash": ph} for sha, ph in files]}


def test_duplicates_and_similar_photos() -> None:
    near = f"{0x0F0F0F0F0F0F0F0F ^ ((1 << SIMILAR_BITS) - 1):016x}"
    far = f"{0x0F0F0F0F0F0F0F0F ^ (((1 << (SIMILAR_BITS + 1)) - 1) << 32):016x}"
    subs = [
        _sub("a", ("s1", "0f0f0f0f0f0f0f0f"), ("s2", None)),
        _sub("b", ("s1", "0f0f0f0f0f0f0f0f")),  # the same file: duplicate, not "similar"
        _sub("c", ("s3", near)),  # SIMILAR_BITS bits off: similar
        _sub("d", ("s4", far)),  # one bit more: not similar
        _sub("e", ("s2", None)),  # a duplicate that is not a photo
        {"id": "f"},  # imported before metadata was read
    ]
    matches = find_matches(subs)
    assert matches.of("a") == {"duplicates": ["b", "e"], "similar": ["c"]}
    assert matches.of("b") == {"duplicates": ["a"], "similar": ["c"]}
    assert matches.of("c") == {"duplicates": [], "similar": ["a", "b"]}
    assert matches.of("d") == {"duplicates": [], "similar": []}
    assert matches.of("f") == {"duplicates": [], "similar": []}


# --- consent ----------------------------------------------------------------------------------


def test_consent_is_read_from_the_questionnaire_record() -> None:
    from keys.manifest import IntakeManifest

    def intake(answers: list[dict[str, Any]]) -> IntakeManifest:
        return IntakeManifest("2026-11-20", None, (), {}, {"answers": answers})

    ticked = {"key": "c", "type": "consent", "value": {"legal": True, "advocacy": False}}
    assert consents(intake([ticked])) == ["legal"]
    as_text = {"key": "c", "type": "text", "value": {"advocacy": True}}  # not a consent field
    assert consents(intake([as_text])) == []
    assert consents(intake([{"type": "consent", "value": "advocacy"}])) == []
    assert check_export("legal", {"x": ["legal"]}, None) == []
    with pytest.raises(ConsentError, match="did not consent to referral for x"):
        check_export("referral", {"x": ["legal"]}, None)
    with pytest.raises(ConsentError):
        check_export("referral", {"x": []}, "   ")  # a blank reason is no reason
    assert check_export("referral", {"x": [], "y": ["referral"]}, "court") == ["x"]
    with pytest.raises(ConsentError, match="unknown purpose"):
        check_export("publicity", {}, "x")
