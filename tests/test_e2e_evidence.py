"""Evidence metadata, consent and duplicates, end to end (issue 13, "Tests must show").

Sources send through the real pages (`amanat demo`, the HTML forms, no JavaScript): a photo with
EXIF GPS and the phone's make and model, a PDF naming its author, the same photo again from a
second codename, a resized copy of it, and a PNG that decompresses to more than the parser may
use. The server exports a bundle; `amanat-review import` reads every attachment's metadata in
the sandbox. Then: `show --json` reports the findings, `list` and `show` flag the duplicate and
the similar photo across codenames, the bomb leaves an "unreadable" finding and the import
succeeds; an advocacy export's working copies carry none of the metadata (checked with exiftool
outside the tool) while the originals keep their SHA-256, and the custody log names both; an
export without the source's consent is refused, and allowed with a reason that is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from evidence_files import AUTHOR, GPS, MAKE, MODEL, authored_pdf, gps_photo, png_bomb
from PIL import Image
from test_e2e import amanat, demo_server, new_source_submits, review, review_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("exiftool") and shutil.which("mat2")),
        reason="needs the Debian packages libimage-exiftool-perl and mat2",
    ),
]

PHOTO = gps_photo()
PDF = authored_pdf()
BOMB = png_bomb()


def _resized(data: bytes) -> bytes:
    """The same picture, smaller and re-encoded without its EXIF: a near-duplicate."""
    image = Image.open(io.BytesIO(data))
    out = io.BytesIO()
    image.resize((48, 36)).save(out, "JPEG", quality=70)
    return out.getvalue()


def exiftool(path: Path) -> dict[str, Any]:
    """What exiftool itself (not the tool under test) finds in a file."""
    result = subprocess.run(["exiftool", "-json", "-n", str(path)], capture_output=True,
                            text=True, check=True)
    found: dict[str, Any] = json.loads(result.stdout)[0]
    return found


def test_metadata_consent_and_duplicates_end_to_end(tmp_path: Path) -> None:
    with demo_server(tmp_path / "demo") as demo:
        sends = [  # (answers, files) per new source
            ({"message": ["Photo and letter"], "q_consent_uses": ["advocacy"]},
             [("files", "house.jpg", PHOTO), ("files", "letter.pdf", PDF)]),
            ({"message": ["The same photo"]}, [("files", "IMG_0001.jpg", PHOTO)]),
            ({"message": ["Smaller photo"], "q_consent_uses": ["legal"]},
             [("files", "small.jpg", _resized(PHOTO)), ("files", "map.png", BOMB)]),
        ]
        for values, files in sends:
            asyncio.run(new_source_submits(demo.url, values, files))
        bundle = tmp_path / "export.tar"
        amanat("export", "--config", demo.config, "--out", bundle)
        vault, pf = tmp_path / "vault", demo.passphrase_file
        org = demo.root / "org"
        review("init", "--vault", vault, "--passphrase-file", pf, "--identity", demo.identity,
               "--keyring", org / "keyring.json", "--org-pub", org / "org.pub")
    imported = review("import", "--vault", vault, "--passphrase-file", pf, bundle)
    assert "3 new submission(s)" in imported.stdout  # the bomb did not stop the import
    shown = {s["message"]: s for s in (
        review_json(vault, pf, "show", row["id"]) for row in review_json(vault, pf, "list"))}
    first, second, third = (shown[v["message"][0]] for v, _ in sends)
    assert first["source"] != second["source"]  # two codenames

    # --- the findings, per attachment ---------------------------------------------------------
    photo, letter = first["attachments"]
    assert photo["metadata"]["gps"] == pytest.approx(list(GPS), abs=1e-4)
    assert photo["metadata"]["device"] == f"{MAKE} {MODEL}"
    assert "ModifyDate" in photo["metadata"]["times"]
    assert letter["metadata"]["author"]["Author"] == AUTHOR
    assert "gps" not in letter["metadata"]
    small, bomb = third["attachments"]
    assert "gps" not in small["metadata"]
    assert bomb["metadata"]["unreadable"].startswith("metadata unreadable")

    # --- duplicates across two codenames, and the similar photo --------------------------------
    assert first["duplicates"] == [second["id"]]
    assert second["duplicates"] == [first["id"]]
    assert third["duplicates"] == []
    assert sorted(third["similar"]) == sorted([first["id"], second["id"]])
    rows = {r["id"]: r for r in review_json(vault, pf, "list")}
    assert rows[first["id"]]["metadata_warnings"] == ["gps", "device", "author"]
    assert rows[third["id"]]["metadata_warnings"] == ["unreadable"]
    printed = review("list", "--vault", vault, "--passphrase-file", pf).stdout
    assert "1 duplicate" in printed
    assert "gps!" in printed

    _advocacy_export(tmp_path, vault, pf, first)
    _consent(tmp_path, vault, pf, second)


def _advocacy_export(tmp: Path, vault: Path, pf: Path, first: dict[str, Any]) -> None:
    """Working copies without the metadata, originals unchanged, both hashes in custody."""
    case = tmp / "advocacy"
    review("export-case", first["id"], "--purpose", "advocacy", "--out", case,
           "--vault", vault, "--passphrase-file", pf)
    folder = case / first["id"]
    sent = {"house.jpg": PHOTO, "letter.pdf": PDF}
    for name, data in sent.items():
        original = (folder / "originals" / name).read_bytes()
        assert hashlib.sha256(original).hexdigest() == hashlib.sha256(data).hexdigest()
    assert exiftool(folder / "originals" / "house.jpg")["GPSLatitude"] == pytest.approx(GPS[0])
    photo = exiftool(folder / "working" / "house.jpg")
    for tag in ("GPSLatitude", "GPSLongitude", "GPSPosition", "Make", "Model"):
        assert tag not in photo, tag
    letter = exiftool(folder / "working" / "letter.pdf")
    assert "Author" not in letter
    assert AUTHOR not in json.dumps(letter)
    entries = [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]
    derived = {e["details"]["original_sha256"]: e["details"] for e in entries
               if e.get("action") == "derive"}
    for name, data in sent.items():
        entry = derived[hashlib.sha256(data).hexdigest()]
        copy = (folder / "working" / name).read_bytes()
        assert entry["copy_sha256"] == hashlib.sha256(copy).hexdigest()
        assert entry["copy_sha256"] != entry["original_sha256"]
        assert entry["tool"].startswith("mat2")
    assert "EXIF:GPSLatitude" in derived[hashlib.sha256(PHOTO).hexdigest()]["removed"]
    summary = (case / "summary.html").read_text(encoding="utf-8")
    assert "cleaned with mat2" in summary
    assert "GPSLatitude" in summary
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=case, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout


def _consent(tmp: Path, vault: Path, pf: Path, second: dict[str, Any]) -> None:
    """The second source consented to nothing: refused, then allowed with a recorded reason."""
    case = tmp / "refused"
    refused = review("export-case", second["id"], "--purpose", "advocacy", "--out", case,
                     "--vault", vault, "--passphrase-file", pf, check=False)
    assert refused.returncode == 1
    assert "did not consent to advocacy" in refused.stderr
    assert not case.exists()
    reason = "the source asked for it in a reply of 2026-11-20"
    case = tmp / "overridden"
    review("export-case", second["id"], "--purpose", "advocacy", "--out", case,
           "--override-consent", reason, "--vault", vault, "--passphrase-file", pf)
    assert reason in (case / "summary.html").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]
    started = next(e for e in entries if e.get("action") == "export-case")["details"]
    assert started["consent_override"] == reason
    assert started["without_consent"] == [second["id"]]
    assert not exiftool(case / second["id"] / "working" / "IMG_0001.jpg").get("GPSLatitude")
