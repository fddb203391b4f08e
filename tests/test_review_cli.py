"""The real `amanat-review` CLI, run as subprocesses against bundles built with keys/bundle.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_review_kit import (
    Org,
    Submission,
    build_bundle,
    make_org,
    make_vault,
    review,
    tree_digest,
)

from keys.age import decrypt
from keys.bundle import ReplyManifest, read_bundle, reply_key_lookup
from keys.keyring import sign_keyring
from review.vault import verify_chain

DARI = "ما را از خانه بيرون كردند و پوليس مدارك ما را گرفت"  # typed with Arabic yeh and kaf
PASHTO = "زموږ کورنۍ ته یې ګواښ وکړ، موږ له پېښور څخه وتلو"
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED\x9b31m ok \u202eexe.gpj\u202c end"
PHOTO = os.urandom(200_000)
DOC = b"%PDF-1.4 fake but fine\n" * 50


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org()


@pytest.fixture(scope="module")
def subs() -> list[Submission]:
    return [
        Submission(
            DARI,
            answers={"city": "Peshawar", "family_size": "۵", "threat": "تهديد از طرف پوليس"},
            files=[("عکس خانه.jpg", PHOTO, "image/jpeg"), ("../../etc/passwd", DOC, "text/plain")],
            source_id="srcA",
        ),
        Submission(PASHTO, answers={"city": "Quetta"}, source_id="srcB", day="2026-11-21"),
        Submission(
            EVIL,
            answers={"note\x1b[1m": EVIL},
            files=[("\u202eevil\x1b[0m.exe", b"MZ payload", "application/octet-stream")],
            source_id="srcA",
            day="2026-11-22",
        ),
    ]


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, org: Org, subs: list[Submission]
) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("review")
    vault, passfile = make_vault(tmp, org)
    bundle = tmp / "bundle.tar"
    bundle.write_bytes(build_bundle(org, subs))
    result = review("import", bundle, "--vault", vault, "--passphrase-file", passfile)
    assert result.returncode == 0, result.stderr
    assert "3 new submission(s)" in result.stdout
    return {"tmp": tmp, "vault": vault, "passfile": passfile, "bundle": bundle}


def run(ctx: dict[str, Any], *args: object) -> subprocess.CompletedProcess[str]:
    return review(*args, "--vault", ctx["vault"], "--passphrase-file", ctx["passfile"])


def ok_json(ctx: dict[str, Any], *args: object) -> Any:
    result = run(ctx, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_list_json(imported: dict[str, Any], subs: list[Submission]) -> None:
    rows = ok_json(imported, "list")
    assert [r["id"] for r in rows] == [s.submission_id for s in subs]
    assert [(r["day"], r["source"]) for r in rows] == [(s.day, s.source_id) for s in subs]
    table = run(imported, "list")
    assert table.returncode == 0
    assert subs[0].submission_id in table.stdout
    assert "3 submission(s)" in table.stdout


def test_show_json(imported: dict[str, Any], subs: list[Submission]) -> None:
    shown = ok_json(imported, "show", subs[0].submission_id)
    assert shown["id"] == subs[0].submission_id
    assert shown["message"] == DARI
    assert shown["answers"]["threat"] == ["تهديد از طرف پوليس"]
    assert shown["questionnaire"]["answers"][0]["question"] == "Question city?"
    assert [(a["name"], a["size"], a["sha256"]) for a in shown["attachments"]] == [
        ("عکس خانه.jpg", len(PHOTO), hashlib.sha256(PHOTO).hexdigest()),
        ("../../etc/passwd", len(DOC), hashlib.sha256(DOC).hexdigest()),
    ]


def test_unknown_id_is_a_clear_error(imported: dict[str, Any]) -> None:
    result = run(imported, "show", "nope")
    assert result.returncode == 1
    assert "no submission with id 'nope'" in result.stderr


def test_reimport_is_refused_and_changes_nothing(imported: dict[str, Any]) -> None:
    before = tree_digest(imported["vault"])
    result = run(imported, "import", imported["bundle"])
    assert result.returncode == 1
    assert "already imported" in result.stderr
    assert "replay" in result.stderr
    assert tree_digest(imported["vault"]) == before


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _in_last_member(data: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + last.size // 2


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: _flip(d, _in_last_member(d)), "does not match the SHA-256"),
        (
            lambda d: d.replace(b'"created_day":"2026-11-20"', b'"created_day":"2026-11-21"'),
            "manifest.sig does not verify",
        ),
        (lambda d: d[: len(d) // 2], "ends inside"),
    ],
    ids=["ciphertext-byte", "manifest-byte", "truncated"],
)
def test_tampered_bundle_refused_whole(
    tmp_path: Path, imported: dict[str, Any], org: Org, damage: Any, reason: str
) -> None:
    good = build_bundle(org, [Submission("fresh testimony", source_id="srcC")])
    bad = tmp_path / "bad.tar"
    bad.write_bytes(damage(good))
    before = tree_digest(imported["vault"])
    result = run(imported, "import", bad)
    assert result.returncode == 1
    assert reason in result.stderr
    assert tree_digest(imported["vault"]) == before


def test_bundle_signed_by_another_key_refused(
    tmp_path: Path, imported: dict[str, Any], org: Org
) -> None:
    from nacl.signing import SigningKey

    bad = tmp_path / "forged.tar"
    bad.write_bytes(build_bundle(org, [Submission("forged")], key=SigningKey.generate()))
    before = tree_digest(imported["vault"])
    result = run(imported, "import", bad)
    assert result.returncode == 1
    assert "manifest.sig does not verify" in result.stderr
    assert tree_digest(imported["vault"]) == before


def test_later_bundle_with_known_items_only_adds_new(
    tmp_path: Path, org: Org, subs: list[Submission]
) -> None:
    vault, passfile = make_vault(tmp_path, org)
    first = tmp_path / "1.tar"
    first.write_bytes(build_bundle(org, subs[:1]))
    assert review("import", first, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    # The same submission re-encrypted (other ciphertext) under the same id is a conflict.
    second = tmp_path / "2.tar"
    second.write_bytes(build_bundle(org, subs[:2]))
    result = review("import", second, "--vault", vault, "--passphrase-file", passfile)
    assert result.returncode == 1
    assert "already in the vault with other content" in result.stderr


def _set(key: str, value: object) -> Any:
    return lambda m: m.update({key: value})


def _edit_message(key: str, value: object) -> Any:
    return lambda m: m["message"].update({key: value})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_set("format", "amanat-manifest/v9"), "unknown manifest format"),
        (_edit_message("sha256", "0" * 64), "message does not match"),
        (_edit_message("ciphertext", "other.age"), "disagree on the message"),
        (_set("files", []), "do not match one to one"),
    ],
    ids=["format", "message-hash", "message-name", "files-missing"],
)
def test_intake_manifest_must_agree_with_bundle(
    tmp_path: Path, org: Org, tamper: Any, reason: str
) -> None:
    vault, passfile = make_vault(tmp_path, org)
    good = Submission("fine", source_id="ok")
    bad = Submission("x", files=[("a.txt", b"a", "text/plain")], tamper=tamper)
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, [good, bad]))
    result = review("import", bundle, "--vault", vault, "--passphrase-file", passfile)
    assert result.returncode == 0, result.stderr
    assert f"QUARANTINED {bad.submission_id}: " in result.stdout
    assert reason in result.stdout
    common = ["--vault", vault, "--passphrase-file", passfile]
    rows = {r["id"]: r for r in json.loads(review("list", "--json", *common).stdout)}
    assert rows[good.submission_id]["quarantine"] is None  # the rest of the bundle imported
    assert reason in rows[bad.submission_id]["quarantine"]
    shown = review("show", bad.submission_id, *common)
    assert "QUARANTINED" in shown.stdout
    assert "x" not in shown.stdout.split("QUARANTINED", 1)[1].split(":", 1)[0]
    refused = review("extract", bad.submission_id, "--out", tmp_path / "o", *common)
    assert refused.returncode == 1
    assert "quarantined" in refused.stderr


def test_files_only_submission(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    sub = Submission("", files=[("voice.ogg", b"OggS...", "audio/ogg")])
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, [sub]))
    assert review("import", bundle, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    shown = review(
        "show", sub.submission_id, "--json", "--vault", vault, "--passphrase-file", passfile
    )
    data = json.loads(shown.stdout)
    assert data["message"] == ""
    assert [a["name"] for a in data["attachments"]] == ["voice.ogg"]


def test_submission_not_encrypted_to_me_is_listed_but_sealed(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)  # Alice's vault
    sub = Submission("for Bob only", files=[("b.txt", b"b", "text/plain")])
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(
        build_bundle(org, [sub], recipients=[org.investigators[1].identity.recipient()])
    )
    assert review("import", bundle, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    common = ["--vault", vault, "--passphrase-file", passfile]
    (row,) = json.loads(review("list", "--json", *common).stdout)
    assert row["readable"] is False
    assert "not encrypted to your key" in review("show", sub.submission_id, *common).stdout
    refused = review("extract", sub.submission_id, "--out", tmp_path / "o", *common)
    assert refused.returncode == 1
    assert "not encrypted to this investigator" in refused.stderr


def test_search_folds_arabic_script_variants(
    imported: dict[str, Any], subs: list[Submission]
) -> None:
    # Query typed on a Persian keyboard (ی, ک) finds text typed with Arabic ي and ك.
    hits = ok_json(imported, "search", "بیرون کردند")
    assert [h["id"] for h in hits] == [subs[0].submission_id]
    hits = ok_json(imported, "search", "پولیس")  # in the message and in an answer
    assert [h["id"] for h in hits] == [subs[0].submission_id]
    hits = ok_json(imported, "search", "پېښور")
    assert [h["id"] for h in hits] == [subs[1].submission_id]
    hits = ok_json(imported, "search", "QUETTA")  # answers, case-insensitive
    assert [h["id"] for h in hits] == [subs[1].submission_id]
    assert ok_json(imported, "search", "5") != []  # Persian digit ۵ in an answer
    assert ok_json(imported, "search", "nowhere to be found") == []


def test_tag_and_note_are_kept_encrypted(imported: dict[str, Any], subs: list[Submission]) -> None:
    sid = subs[1].submission_id
    secret_tag, secret_note = "witness-ZQX", "Investigator remark about Hayatabad ZQXNOTE"
    assert run(imported, "tag", sid, secret_tag).returncode == 0
    assert run(imported, "note", sid, secret_note).returncode == 0
    shown = ok_json(imported, "show", sid)
    assert shown["tags"] == [secret_tag]
    assert [n["text"] for n in shown["notes"]] == [secret_note]
    assert ok_json(imported, "list", "--tag", secret_tag)[0]["id"] == sid
    needles = [b"witness-ZQX", b"ZQXNOTE", b"Hayatabad", "پېښور".encode(), b"Peshawar", b"Quetta"]
    for path in imported["vault"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, f"{needle!r} in plaintext in {path}"


def test_extract_gives_back_the_originals(
    imported: dict[str, Any], subs: list[Submission], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run(imported, "extract", subs[0].submission_id, "--out", out)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["عکس خانه.jpg", "passwd"])
    assert (out / "عکس خانه.jpg").read_bytes() == PHOTO
    assert (out / "passwd").read_bytes() == DOC
    # Again into the same folder: nothing is overwritten.
    assert run(imported, "extract", subs[0].submission_id, "--out", out).returncode == 0
    assert (out / "عکس خانه (2).jpg").read_bytes() == PHOTO
    evil_out = tmp_path / "evil"
    assert run(imported, "extract", subs[2].submission_id, "--out", evil_out).returncode == 0
    (name,) = os.listdir(evil_out)
    assert "\u202e" not in name
    assert "\x1b" not in name
    assert name.endswith(".exe")


def test_extract_refuses_a_file_that_differs_from_intake(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    sub = Submission("x", files=[("a.txt", b"aaa", "text/plain")], wrong_sha256_for="a.txt")
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, [sub]))
    assert review("import", bundle, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    out = tmp_path / "out"
    result = review(
        "extract", sub.submission_id, "--out", out, "--vault", vault, "--passphrase-file", passfile
    )
    assert result.returncode == 1
    assert "does not match" in result.stderr
    assert os.listdir(out) == []


def test_terminal_escapes_and_bidi_are_stripped(
    imported: dict[str, Any], subs: list[Submission]
) -> None:
    for args in (["show", subs[2].submission_id], ["list"], ["search", "RED"]):
        result = run(imported, *args)
        assert result.returncode == 0, result.stderr
        for bad in ("\x1b", "\x07", "\x9b", "\u202e", "\u202c"):
            assert bad not in result.stdout, (args, bad)
    shown = run(imported, "show", subs[2].submission_id).stdout
    assert "RED" in shown
    assert "exe.gpj" in shown
    # JSON keeps the data but escapes what a terminal could act on.
    raw = run(imported, "show", subs[2].submission_id, "--json").stdout
    assert "\x1b" not in raw
    assert "\u202e" not in raw
    assert json.loads(raw)["message"] == EVIL


def test_rtl_lines_are_isolated_for_display(
    imported: dict[str, Any], subs: list[Submission]
) -> None:
    shown = run(imported, "show", subs[1].submission_id).stdout
    assert "\u2067" + PASHTO + "\u2069" in shown


def test_export_case(imported: dict[str, Any], subs: list[Submission], tmp_path: Path) -> None:
    case = tmp_path / "case"
    ids = [subs[0].submission_id, subs[2].submission_id]
    assert run(imported, "extract", ids[0], "--out", tmp_path / "x").returncode == 0
    refused = run(imported, "export-case", *ids, "--out", case, "--purpose", "legal")
    assert refused.returncode == 1
    assert "did not consent to legal" in refused.stderr
    assert not case.exists()
    result = run(imported, "export-case", *ids, "--out", case, "--purpose", "legal",
                 "--override-consent", "subpoena 12/2026")
    assert result.returncode == 0, result.stderr
    if shutil.which("sha256sum"):
        check = subprocess.run(
            ["sha256sum", "-c", "SHA256SUMS"], cwd=case, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count(": OK") == len([p for p in case.rglob("*") if p.is_file()]) - 1
    assert (case / ids[0] / "originals" / "عکس خانه.jpg").read_bytes() == PHOTO
    assert not (case / ids[0] / "working").exists()  # legal: the originals only
    for path in [case, *case.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert (case / ids[0] / "message.txt").read_text(encoding="utf-8") == DARI
    html = (case / "summary.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert "\x1b" not in html
    assert "\u202e" not in html
    assert "default-src &#x27;none&#x27;" not in html
    assert "default-src 'none'" in html
    entries = [json.loads(line) for line in (case / "custody.jsonl").read_text().splitlines()]
    verify_chain(entries)
    actions = [e.get("action") for e in entries if not e.get("redacted")]
    assert actions[0] == "init"
    assert "import" in actions
    start = actions.index("export-case")
    started = next(e for e in entries if e.get("action") == "export-case")["details"]
    assert started["consent_override"] == "subpoena 12/2026"
    assert started["without_consent"] == sorted(ids)
    assert set(actions[start + 1 :]) == {"export-file"}  # every file, once written
    logged = {Path(e["details"]["out"]).name for e in entries if e.get("action") == "export-file"}
    assert logged == {"message.txt", "answers.json", "عکس خانه.jpg", "passwd", "evil.exe"}
    assert any(e.get("action") == "extract" for e in entries)
    # Every file written for humans is free of controls, and ABOUT.txt says so.
    for path in [*case.rglob("*.txt"), *case.rglob("*.json*"), case / "summary.html"]:
        text = path.read_text(encoding="utf-8")
        for bad in ("\x1b", "\x07", "\x9b", "\u202e", "\u202c"):
            assert bad not in text, (path, bad)
    assert "RED" in (case / ids[1] / "message.txt").read_text(encoding="utf-8")
    assert json.loads((case / ids[1] / "answers.json").read_text())["answers"] == {
        "note\x1b[1m": [EVIL]
    }
    assert "U+FFFD" in (case / "ABOUT.txt").read_text()
    # Tampering with one entry breaks the chain.
    entries[1]["by"] = "Mallory"
    with pytest.raises(ValueError, match="altered"):
        verify_chain(entries)


def test_reply_bundle_verifies_and_decrypts(
    imported: dict[str, Any], subs: list[Submission], org: Org
) -> None:
    outbox = imported["tmp"] / "outbox"
    result = run(
        imported, "reply", "srcA", "--message", "ما پیام شما را دریافت کردیم", "--out", outbox
    )
    assert result.returncode == 0, result.stderr
    (path,) = outbox.iterdir()
    alice, bob = org.investigators
    with open(path, "rb") as f:
        bundle = read_bundle(f, reply_key_lookup({alice.label: alice.signing_key.verify_key}))
        manifest = bundle.manifest
        assert isinstance(manifest, ReplyManifest)
        (reply,) = manifest.replies
        assert reply.source_id == "srcA"
        assert reply.investigator == "Alice"
        # the newest submission from srcA is subs[2]
        assert reply.reply_recipient == str(subs[2].reply_identity.recipient())
        ciphertext = bundle.read_member(reply.name)
    for identity in (subs[2].reply_identity, bob.identity, alice.identity):
        assert decrypt(ciphertext, [identity]).decode() == "ما پیام شما را دریافت کردیم"
    with open(path, "rb") as f, pytest.raises(ValueError, match="unknown or revoked"):
        read_bundle(f, reply_key_lookup({bob.label: bob.signing_key.verify_key}))
    assert run(imported, "reply", "srcZ", "--message", "hi", "--out", outbox).returncode == 1


def test_verify_reports_damage(tmp_path: Path, org: Org, subs: list[Submission]) -> None:
    vault, passfile = make_vault(tmp_path, org)
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, subs[:2]))
    assert review("import", bundle, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    good = review("verify", "--vault", vault, "--passphrase-file", passfile)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK" in good.stdout
    (victim,) = (vault / "bundles").iterdir()
    data = victim.read_bytes()
    victim.write_bytes(_flip(data, _in_last_member(data)))
    bad = review("verify", "--vault", vault, "--passphrase-file", passfile)
    assert bad.returncode == 1
    assert "was altered" in bad.stdout
    assert victim.stem in bad.stdout


def test_wrong_passphrase(imported: dict[str, Any], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = review("list", "--vault", imported["vault"], "--passphrase-file", wrong)
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr
    assert result.stdout == ""


def test_init_with_wrong_passphrase_creates_nothing(tmp_path: Path, org: Org) -> None:
    from keys.identity_file import protect_identity

    identity = tmp_path / "id.age"
    identity.write_bytes(protect_identity(org.investigators[0], "right one", work_factor=10))
    (tmp_path / "k.json").write_bytes(org.keyring_doc)
    (tmp_path / "org.pub").write_bytes(org.org_pub_doc)
    (tmp_path / "pass").write_text("wrong one\n")
    result = review(
        "init",
        "--vault",
        tmp_path / "v",
        "--passphrase-file",
        tmp_path / "pass",
        "--identity",
        identity,
        "--keyring",
        tmp_path / "k.json",
        "--org-pub",
        tmp_path / "org.pub",
    )
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr
    assert not (tmp_path / "v").exists()


def test_vault_state_swapped_for_a_forgery_is_refused(imported: dict[str, Any], org: Org) -> None:
    """The state is encrypted to a public recipient, so it is also signed: a forged one fails."""
    from keys.age import encrypt

    vault = imported["vault"]
    copy = vault.parent / "forged-vault"
    shutil.copytree(vault, copy)
    recipient = org.investigators[0].identity.recipient()
    forged = b"amanat-review-state/1\n" + b"A" * 88 + b"\n{}"
    (copy / "state.age").write_bytes(encrypt(forged, [recipient]))
    result = review("list", "--vault", copy, "--passphrase-file", imported["passfile"])
    assert result.returncode == 1
    assert "not signed by this investigator" in result.stderr


def test_progress_goes_to_stderr(tmp_path: Path, org: Org) -> None:
    vault, passfile = make_vault(tmp_path, org)
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, [Submission(f"t{i}") for i in range(5)]))
    result = review("import", bundle, "--vault", vault, "--passphrase-file", passfile)
    assert "import: 5/5" in result.stderr
    assert "import:" not in result.stdout


def test_console_script_is_installed_entry_point() -> None:
    script = shutil.which("amanat-review", path=str(Path(os.sys.executable).parent))
    if script is None:
        pytest.skip("amanat-review console script not installed in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "export-case" in result.stdout


def test_keyring_update_revokes_rotates_and_refuses_rollback(tmp_path: Path) -> None:
    """The org revokes Bob and rotates the server's transfer key: the vault adopts the new
    keyring, so replies stop going to Bob and bundles signed with the new key import; older,
    forked, foreign or self-revoking keyrings are refused and change nothing."""
    from dataclasses import replace

    from nacl.signing import SigningKey

    org = make_org()
    vault, passfile = make_vault(tmp_path, org)
    old_doc = org.keyring_doc
    org.transfer_key = SigningKey.generate()
    org.keyring = org.keyring.with_revoked("Bob").with_transfer_key(org.transfer_key.verify_key)
    new = org.keyring.version

    def adopt(doc: bytes) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "new-keyring.json"
        path.write_bytes(doc)
        return review("keyring", path, "--vault", vault, "--passphrase-file", passfile)

    bundle = tmp_path / "b.tar"
    bundle.write_bytes(build_bundle(org, [Submission("after rotation", source_id="srcR")]))
    refused = review("import", bundle, "--vault", vault, "--passphrase-file", passfile)
    assert refused.returncode == 1, "a bundle signed by a key the vault does not pin imported"

    result = adopt(org.keyring_doc)
    assert result.returncode == 0, result.stderr
    assert f"version {new} (updated from version 3)" in result.stdout
    assert "1 active investigator(s)" in result.stdout
    assert review("import", bundle, "--vault", vault, "--passphrase-file", passfile).returncode == 0
    outbox = tmp_path / "outbox"
    assert review("reply", "srcR", "--message", "hi", "--out", outbox, "--vault", vault,
                  "--passphrase-file", passfile).returncode == 0
    (reply_path,) = outbox.iterdir()
    with open(reply_path, "rb") as f:
        alice, bob = org.investigators
        reply_bundle = read_bundle(f, reply_key_lookup({"Alice": alice.signing_key.verify_key}))
        manifest = reply_bundle.manifest
        assert isinstance(manifest, ReplyManifest)
        ciphertext = reply_bundle.read_member(manifest.replies[0].name)
    assert decrypt(ciphertext, [alice.identity]) == b"hi"
    with pytest.raises(ValueError):
        decrypt(ciphertext, [bob.identity])  # revoked: no longer a recipient

    before = tree_digest(vault)
    forked = replace(org.keyring, investigators=org.keyring.investigators[:1])
    foreign_org = make_org()
    foreign = replace(foreign_org.keyring, version=9)
    self_revoked = org.keyring.with_revoked("Alice")
    for doc, reason in [
        (old_doc, f"older than version {new}"),
        (sign_keyring(forked, org.org_key), "same version"),
        (sign_keyring(foreign, foreign_org.org_key), "does not verify"),
        (sign_keyring(self_revoked, org.org_key), "not an active investigator"),
    ]:
        result = adopt(doc)
        assert result.returncode == 1
        assert reason in result.stderr
    assert tree_digest(vault) == before
    checked = review("verify", "--vault", vault, "--passphrase-file", passfile)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_keyring_swapped_inside_the_vault_is_refused(tmp_path: Path) -> None:
    """Someone with the folder puts a same-version keyring with another investigator in it."""
    from dataclasses import replace

    org = make_org()
    vault, passfile = make_vault(tmp_path, org)
    original = (vault / "keyring.json").read_bytes()
    mallory = make_org(("Mallory",)).investigators[0]
    intruder = mallory.public_entry(org.keyring.investigators[0].added)
    forked = replace(org.keyring, investigators=(*org.keyring.investigators, intruder))
    (vault / "keyring.json").write_bytes(sign_keyring(forked, org.org_key))
    result = review("list", "--vault", vault, "--passphrase-file", passfile)
    assert result.returncode == 1
    assert "not the keyring this vault adopted" in result.stderr
    (vault / "keyring.json").write_bytes(original)
    assert review("list", "--vault", vault, "--passphrase-file", passfile).returncode == 0


def test_reply_text_must_be_there_and_not_too_long(imported: dict[str, Any]) -> None:
    from review.replies import MAX_REPLY_CHARS

    outbox = imported["tmp"] / "outbox-refused"
    for text, reason in [("  \n ", "needs a message"), ("x" * (MAX_REPLY_CHARS + 1), "at most")]:
        result = run(imported, "reply", "srcA", "--message", text, "--out", outbox)
        assert result.returncode == 1
        assert reason in result.stderr
    assert not outbox.exists()
