"""`amanat-review open`, driven headless with Textual's pilot over a vault of signed submissions
imported by the real CLI: the queue sorts by urgency then day and filters, a Dari testimony
reads with the questionnaire's Dari labels, and tag, note, reply and report land in the vault and
its custody log exactly as the commands' do (checked afterwards with the CLI).

SVG screenshots are saved in test-artifacts/screenshots/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from test_review_kit import (
    PASSPHRASE,
    Org,
    Submission,
    build_bundle,
    make_org,
    make_vault,
    review,
    rewrite_state,
)
from test_review_report import QUESTIONS, TYPES, make_submission
from textual.pilot import Pilot
from textual.widgets import Input, Static

from review.queue import urgency_rank
from review.vault import Vault, verify_chain
from review.workbench import Options, Workbench
from review.workbench.app import QueueScreen, SourceScreen, SubmissionScreen
from review.workbench.table import QueueTable

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DARI = "دیشب پولیس به خانه ما آمد و برادرم را بردند. کارت PoR ما را پاره کردند."
DARI_WORD = "برادرم"


def dari_testimony() -> Submission:
    answers: dict[str, Any] = {
        "what_happened": DARI, "province": "khyber_pakhtunkhwa", "urgency": "days",
        "groups": ["woman", "journalist"], "documents": ["por_card"],
        "consent_uses": {"advocacy": True, "referral": True, "legal": False},
    }

    def record(manifest: dict[str, Any]) -> None:  # as dropbox/questionnaire.py writes it
        manifest["questionnaire"] = {
            "questionnaire": "amanat-pk-default", "version": 1, "locale": "fa_AF",
            "answers": [{"key": k, "type": TYPES[k], "question": QUESTIONS[k], "value": v}
                        for k, v in answers.items()]}

    return Submission(DARI, source_id="dari-source", day="2026-10-02", tamper=record,
                      files=[("عکس.jpg", b"\xff\xd8 a photo", "image/jpeg")])


@pytest.fixture
def vault_dir(tmp_path: Path) -> tuple[Path, Path, Submission, Org]:
    org = make_org(("Alice",))
    vault, passfile = make_vault(tmp_path, org)
    rng = random.Random(13)
    subs = [make_submission(rng, f"src{n % 7}", n % 3 != 0) for n in range(24)]
    dari = dari_testimony()
    (tmp_path / "b.tar").write_bytes(build_bundle(org, [*subs, dari]))
    result = review("import", "--vault", vault, "--passphrase-file", passfile, tmp_path / "b.tar")
    assert result.returncode == 0, result.stderr
    return vault, passfile, dari, org


async def type_text(pilot: Pilot[None], text: str) -> None:
    for ch in text:
        await pilot.press("space" if ch == " " else ch)


def body_of(app: Workbench) -> str:
    return str(app.screen.query_one("#body", Static).render())


def shot(app: Workbench, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    app.save_screenshot(f"{name}.svg", path=str(SCREENSHOTS))
    assert (SCREENSHOTS / f"{name}.svg").stat().st_size > 5_000


async def select_row(pilot: Pilot[None], app: Workbench, sid: str) -> None:
    app.screen.query_one("#queue", QueueTable).cursor = [r.id for r in app.shown].index(sid)
    await pilot.pause()


async def test_a_session_at_the_workbench(
        vault_dir: tuple[Path, Path, Submission, Org], tmp_path: Path) -> None:
    vault_path, passfile, dari, _ = vault_dir
    sid = dari.submission_id
    vault = Vault.open(vault_path, PASSPHRASE.encode())
    custody_before = len(vault.custody)
    app = Workbench(vault, Options(lang="fa_AF", out=tmp_path / "work"))
    try:
        async with app.run_test(size=(180, 50)) as pilot:
            await pilot.pause()
            # The queue: every submission, most urgent first, then the oldest.
            assert isinstance(app.screen, QueueScreen)
            assert len(app.shown) == 25
            assert len(app.screen.query_one("#queue", QueueTable).rows) == 25
            keys = [(urgency_rank(r.urgency), r.day, r.id) for r in app.shown]
            assert keys == sorted(keys)
            assert app.shown[0].urgency == "days"
            shot(app, "workbench-queue")

            await pilot.press("s")  # by day
            assert [r.day for r in app.shown] == sorted(r.day for r in app.shown)
            assert {r.urgency for r in app.shown} != {"days"}
            await pilot.press("s")
            assert app.sort == "urgency"

            # Filters: by urgency and consent, then by a Dari word found in the message.
            await pilot.press("slash")
            await type_text(pilot, "urgency:days consent:advocacy")
            await pilot.press("enter")
            assert app.shown
            assert all(r.urgency == "days" and "advocacy" in r.consent
                                     for r in app.shown)
            assert len(app.shown) < 25
            app.screen.query_one("#filter", Input).value = DARI_WORD
            await pilot.press("slash", "enter")
            assert [r.id for r in app.shown] == [sid]

            # Read the Dari testimony: labels in Dari, not codes.
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, SubmissionScreen)
            body = body_of(app)
            assert DARI in body
            assert "خیبر پښتونخوا" in body  # khyber_pakhtunkhwa, as the Dari form says it
            assert "بلی، در چند روز آینده" in body  # urgency "days"
            assert "ایالت یا منطقه‌ای که در آن اتفاق افتاد" in body  # the Dari question
            assert "khyber_pakhtunkhwa" not in body
            assert hashlib.sha256(b"\xff\xd8 a photo").hexdigest() in body
            shot(app, "workbench-dari-testimony")

            # Tag, note (editor pane), reply (editor pane): the vault's own methods.
            await pilot.press("t")
            await type_text(pilot, "urgent-help")
            await pilot.press("enter")
            assert vault.submission(sid)["tags"] == ["urgent-help"]
            await pilot.press("n")
            await type_text(pilot, "Called UNHCR hotline")
            await pilot.press("ctrl+s")
            assert [n["text"] for n in vault.submission(sid)["notes"]] == ["Called UNHCR hotline"]
            await pilot.press("r")
            await type_text(pilot, "We read your message")
            await pilot.press("ctrl+s")
            await pilot.pause()
            outbox = tmp_path / "work" / "outbox"
            assert len(list(outbox.glob("reply-*.tar"))) == 1
            assert "We read your message" in body_of(app)  # the reply, decrypted from the vault
            assert "Called UNHCR hotline" in body_of(app)
            shot(app, "workbench-after-reply")

            # The source view: the conversation in order.
            await pilot.press("o")
            await pilot.pause()
            assert isinstance(app.screen, SourceScreen)
            conversation = body_of(app)
            assert conversation.index(sid) < conversation.index("We read your message")
            await pilot.press("escape", "escape")
            assert isinstance(app.screen, QueueScreen)
            assert app.shown[0].replied
            assert app.shown[0].tags == ("urgent-help",)

            # The report action: the same files as `amanat-review report`.
            await pilot.press("p")
            await pilot.pause()
            app.screen.query_one("#out", Input).value = str(tmp_path / "wb-report")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "report written" in app.status, app.status
    finally:
        vault.close()

    actions = [e["action"] for e in vault.custody[custody_before:]]
    assert actions == ["tag", "note", "reply", "report"]
    note_entry = vault.custody[custody_before + 1]
    assert note_entry["details"]["sha256"] == hashlib.sha256(b"Called UNHCR hotline").hexdigest()
    assert "Called UNHCR" not in json.dumps(note_entry)

    # Afterwards, the commands see what the workbench did, and the vault verifies.
    common = ["--vault", vault_path, "--passphrase-file", passfile]
    shown = json.loads(review("show", sid, "--json", *common).stdout)
    assert shown["tags"] == ["urgent-help"]
    assert [n["text"] for n in shown["notes"]] == ["Called UNHCR hotline"]
    assert len(shown["replies"]) == 1
    assert review("verify", *common).returncode == 0
    cli_report = tmp_path / "cli-report"
    result = review("report", "--out", cli_report, "--lang", "fa_AF", *common)
    assert result.returncode == 0, result.stderr
    ours = sorted(p.name for p in (tmp_path / "wb-report").iterdir())
    assert ours == sorted(p.name for p in cli_report.iterdir())
    assert (tmp_path / "wb-report" / "report.csv").read_bytes() == \
        (cli_report / "report.csv").read_bytes()
    with Vault.open(vault_path, PASSPHRASE.encode()) as again:
        verify_chain(again.custody)
        assert [e["action"] for e in again.custody[-2:]] == ["report", "report"]


async def test_failures_are_shown_and_change_nothing(
        vault_dir: tuple[Path, Path, Submission, Org], tmp_path: Path) -> None:
    vault_path, _, dari, _ = vault_dir
    vault = Vault.open(vault_path, PASSPHRASE.encode())
    app = Workbench(vault, Options(out=tmp_path / "work"))
    before = vault.document()
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            await select_row(pilot, app, dari.submission_id)
            await pilot.press("n")
            await type_text(pilot, "   ")
            await pilot.press("ctrl+s")  # an empty note
            assert "note failed: a note needs some text" in app.status
            await pilot.press("r")
            await pilot.press("ctrl+s")  # an empty reply
            assert "reply failed: a reply needs a message" in app.status
            await pilot.press("p")
            await pilot.pause()
            app.screen.query_one("#threshold", Input).value = "2"
            await pilot.press("ctrl+s")
            assert "report failed" in app.status
            assert "at least 3" in app.status
            (tmp_path / "taken").mkdir()
            (tmp_path / "taken" / "x").write_text("x")
            await pilot.press("x")
            app.screen.query_one("#out", Input).value = str(tmp_path / "taken")
            app.screen.query_one("#override", Input).value = "a test"
            await pilot.press("ctrl+s")
            assert "export-case failed" in app.status
            assert "not empty" in app.status
            await pilot.press("t")
            await pilot.press("escape")  # cancelled
            assert isinstance(app.screen, QueueScreen)
            # No command palette: its "Screenshot" would write testimony to a file unlogged.
            await pilot.press("ctrl+p")
            await pilot.pause()
            assert isinstance(app.screen, QueueScreen)
            assert not list(Path.cwd().glob("amanat-review_*.svg"))
    finally:
        vault.close()
    assert vault.document() == before


async def test_export_extract_language_and_what_the_vault_warns_of(
        tmp_path: Path, vault_dir: tuple[Path, Path, Submission, Org]) -> None:
    vault_path, passfile, dari, org = vault_dir
    hostile = Submission("[bold red]markup[/] \x1b]0;owned\x07 \u202eevil", source_id="h",
                         day="2026-10-03", files=[("a.txt", b"text", "text/plain")])
    (tmp_path / "h.tar").write_bytes(build_bundle(org, [hostile]))
    assert review("import", "--vault", vault_path, "--passphrase-file", passfile,
                  tmp_path / "h.tar").returncode == 0
    # What import recorded (issue 13 §2, §4), set to findings the test can name.
    photo_sha = hashlib.sha256(b"\xff\xd8 a photo").hexdigest()

    def findings_to_name(state: dict[str, Any]) -> None:
        subs = state["submissions"]
        photo = next(f for f in subs[dari.submission_id]["files"] if f["sha256"] == photo_sha)
        photo["metadata"] = {"gps": [34.01, 71.52], "device": "Samsung SM-A105F"}
        subs[hostile.submission_id]["files"][0]["sha256"] = photo_sha  # the same file, twice

    rewrite_state(vault_path, findings_to_name)
    vault = Vault.open(vault_path, PASSPHRASE.encode())
    custody_before = len(vault.custody)
    app = Workbench(vault, Options(lang="en", out=tmp_path / "work"))
    try:
        async with app.run_test(size=(180, 50)) as pilot:
            await pilot.pause()
            row = next(r for r in app.shown if r.id == dari.submission_id)
            assert row.warnings == ("duplicate", "gps", "device")
            await select_row(pilot, app, dari.submission_id)
            await pilot.press("space")
            await select_row(pilot, app, hostile.submission_id)
            await pilot.press("space")
            assert app.marked == {dari.submission_id, hostile.submission_id}

            await pilot.press("x")  # export the two marked submissions, for a legal case
            app.screen.query_one("#out", Input).value = str(tmp_path / "refused")
            app.screen.query_one("#purpose", Input).value = "legal"
            await pilot.press("ctrl+s")
            assert "export-case failed" in app.status  # nobody consented to legal use
            assert not (tmp_path / "refused").exists()
            await pilot.press("x")
            app.screen.query_one("#out", Input).value = str(tmp_path / "case")
            app.screen.query_one("#purpose", Input).value = "legal"
            app.screen.query_one("#override", Input).value = "the court asked for the originals"
            await pilot.press("ctrl+s")
            assert (tmp_path / "case" / "SHA256SUMS").is_file()
            assert (tmp_path / "case" / dari.submission_id / "message.txt").read_text() == DARI

            await select_row(pilot, app, dari.submission_id)
            await pilot.press("e")
            app.screen.query_one("#answer", Input).value = str(tmp_path / "files")
            await pilot.press("enter")
            assert (tmp_path / "files" / "عکس.jpg").read_bytes() == b"\xff\xd8 a photo"

            await pilot.press("enter")  # the submission view, in English, then in Pashto
            await pilot.pause()
            body = body_of(app)
            assert "Khyber Pakhtunkhwa" in body
            assert "gps: 34.01, 71.52" in body
            assert f"same file as: {hostile.submission_id}" in body
            shot(app, "workbench-metadata-warnings")
            await pilot.press("l")
            assert app.lang == "fa_AF"
            await pilot.press("l")
            assert app.lang == "ps"
            assert "خیبر پښتونخوا" in body_of(app)
            assert "Khyber Pakhtunkhwa" not in body_of(app)

            await pilot.press("escape")
            await select_row(pilot, app, hostile.submission_id)
            await pilot.press("enter")
            await pilot.pause()
            body = body_of(app)
            assert "[bold red]markup[/]" in body  # shown as typed, never read as markup
            assert "\x1b" not in body
            assert "\u202e" not in body
            assert "\x07" not in body
    finally:
        vault.close()
    actions = [e["action"] for e in vault.custody[custody_before:]]
    assert actions[0] == "export-case"
    export = vault.custody[custody_before]
    assert export["details"]["purpose"] == "legal"
    assert export["details"]["consent_override"] == "the court asked for the originals"
    assert actions[-3:] == ["extract", "extract-file", "extract-done"]
