"""The commands the workbench brought along (issue 13 §1), run as the real CLI: `list --sort
urgency|day`, `show` with the questionnaire's labels and the replies sent, `note` and `reply`
reading their text from a file or standard input, and tags and notes in the custody log."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_review_kit import (
    PASSPHRASE,
    ROOT,
    Org,
    build_bundle,
    make_org,
    make_vault,
    review,
    rewrite_state,
)
from test_review_workbench import DARI, dari_testimony

from review.queue import urgency_rank
from review.vault import Vault


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org(("Alice",))


@pytest.fixture
def vault(tmp_path: Path, org: Org) -> dict[str, Any]:
    import random

    from test_review_report import make_submission

    path, passfile = make_vault(tmp_path, org)
    rng = random.Random(5)
    subs = [make_submission(rng, f"src{n % 4}", True) for n in range(12)]
    dari = dari_testimony()
    (tmp_path / "b.tar").write_bytes(build_bundle(org, [*subs, dari]))
    assert review("import", "--vault", path, "--passphrase-file", passfile,
                  tmp_path / "b.tar").returncode == 0
    return {"tmp": tmp_path, "common": ["--vault", path, "--passphrase-file", passfile],
            "path": path, "dari": dari, "subs": subs}


def run(v: dict[str, Any], *args: object, stdin: bytes | None = None,
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "review.cli", *map(str, args), *v["common"]],
                          input=stdin, capture_output=True, cwd=ROOT, timeout=120)


def custody(v: dict[str, Any]) -> list[dict[str, Any]]:
    with Vault.open(v["path"], PASSPHRASE.encode()) as opened:
        return list(opened.custody)


def test_list_sorts_by_urgency_or_day(vault: dict[str, Any]) -> None:
    by_day = json.loads(run(vault, "list", "--json").stdout)
    assert [r["day"] for r in by_day] == sorted(r["day"] for r in by_day)
    by_urgency = json.loads(run(vault, "list", "--json", "--sort", "urgency").stdout)
    urgency = {s.submission_id: s.answers.get("urgency") for s in vault["subs"]}
    urgency[vault["dari"].submission_id] = "days"
    keys = [(urgency_rank(urgency[r["id"]]), r["day"], r["id"]) for r in by_urgency]
    assert keys == sorted(keys)
    assert sorted(r["id"] for r in by_urgency) == sorted(r["id"] for r in by_day)
    assert run(vault, "list", "--sort", "size").returncode == 2


def test_list_by_urgency_fills_in_a_vault_imported_before_triage(vault: dict[str, Any]) -> None:
    def as_an_older_import_left_it(state: dict[str, Any]) -> None:
        for sub in state["submissions"].values():
            del sub["triage"]

    rewrite_state(vault["path"], as_an_older_import_left_it)
    first = json.loads(run(vault, "list", "--json", "--sort", "urgency").stdout)[0]
    entry = custody(vault)[-1]
    assert entry["action"] == "migrate"
    assert entry["details"] == {"added": "triage"}
    assert len(entry["subjects"]) == 13
    assert first["id"] in {s.submission_id for s in vault["subs"]} | {vault["dari"].submission_id}
    with Vault.open(vault["path"], PASSPHRASE.encode()) as opened:
        assert opened.add_triage() == 0  # done once


def test_show_labels_answers_in_the_chosen_language(vault: dict[str, Any]) -> None:
    sid = vault["dari"].submission_id
    en = run(vault, "show", sid).stdout.decode()
    assert "Khyber Pakhtunkhwa" in en
    assert "Yes, within days" in en
    assert "khyber_pakhtunkhwa" not in en
    assert "por_card" not in en
    dari = run(vault, "show", sid, "--lang", "fa_AF").stdout.decode()
    assert "خیبر پښتونخوا" in dari
    assert "کارت ثبت نام (PoR)" in dari
    assert "ایالت یا منطقه‌ای که در آن اتفاق افتاد" in dari


def test_note_and_reply_from_a_file_or_stdin_and_shown(vault: dict[str, Any]) -> None:
    sid, tmp = vault["dari"].submission_id, vault["tmp"]
    note = "یادداشت: با خانواده تماس گرفته شد\nsecond line\n"
    (tmp / "note.txt").write_text(note, "utf-8")
    assert run(vault, "note", sid, "--message-file", tmp / "note.txt").returncode == 0
    assert run(vault, "note", sid, "--message-file", "-", stdin=b"from stdin\n").returncode == 0
    reply = "پیام شما را خواندیم. We read your message."
    made = run(vault, "reply", "dari-source", "--message-file", "-", "--out", tmp / "outbox",
               stdin=reply.encode())
    assert made.returncode == 0, made.stderr
    shown = json.loads(run(vault, "show", sid, "--json").stdout)
    assert [n["text"] for n in shown["notes"]] == [note.removesuffix("\n"), "from stdin"]
    text = run(vault, "show", sid).stdout.decode()
    assert "replies sent to this source:" in text
    assert reply in text
    assert DARI in text
    actions = [(e["action"], e["details"].get("sha256")) for e in custody(vault)[-3:]]
    assert actions[0] == ("note", hashlib.sha256(note.removesuffix("\n").encode()).hexdigest())
    assert actions[1] == ("note", hashlib.sha256(b"from stdin").hexdigest())
    assert actions[2][0] == "reply"


def test_message_file_refusals_are_clear_and_change_nothing(vault: dict[str, Any]) -> None:
    sid, tmp = vault["dari"].submission_id, vault["tmp"]
    before = custody(vault)
    (tmp / "latin1.txt").write_bytes("café".encode("latin-1"))
    cases = [
        (("note", sid, "--message-file", tmp / "latin1.txt"), None, "not UTF-8"),
        (("note", sid, "--message-file", tmp / "missing.txt"), None, "does not exist"),
        (("note", sid, "--message-file", tmp), None, "is a folder"),
        (("note", sid, "--message-file", "-"), b"x" * (300 * 1024), "over"),
        (("note", sid, "--message-file", "-"), b"  \n", "needs some text"),
        (("note", sid, "--message-file", "-"), "ب".encode() * 20_001, "at most 20000"),
        (("reply", "dari-source", "--message-file", "-", "--out", tmp / "o"), b"",
         "needs a message"),
    ]
    for args, stdin, reason in cases:
        result = run(vault, *args, stdin=stdin)
        assert result.returncode == 1, (args, result.stderr)
        assert reason in result.stderr.decode(), (reason, result.stderr)
        assert b"Traceback" not in result.stderr
    both = run(vault, "note", sid, "text", "--message-file", "-", stdin=b"x")
    assert both.returncode == 2  # one or the other
    assert run(vault, "note", sid).returncode == 2
    assert custody(vault) == before
    assert not (tmp / "o").exists()


def test_tags_are_logged_and_cleaned(vault: dict[str, Any]) -> None:
    sid = vault["dari"].submission_id
    assert run(vault, "tag", sid, "needs\x1b[31m  follow-up").returncode == 0
    assert run(vault, "tag", sid, "needs\x1b[31m  follow-up").returncode == 0  # no change
    assert run(vault, "tag", sid, "gone", "--remove").returncode == 0  # not there: no change
    assert run(vault, "tag", sid, "needs\ufffd follow-up", "--remove").returncode == 0
    entries = [(e["action"], e["subjects"], e["details"]) for e in custody(vault)[-2:]]
    assert entries == [("tag", [sid], {"tag": "needs\ufffd follow-up"}),
                       ("untag", [sid], {"tag": "needs\ufffd follow-up"})]


def test_open_asks_the_passphrase_by_the_one_rule_before_any_screen(
        vault: dict[str, Any]) -> None:
    path, tmp = vault["path"], vault["tmp"]
    cmd = [sys.executable, "-m", "review.cli", "open", "--vault", str(path)]
    no_tty = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert no_tty.returncode == 1
    assert "no passphrase for the vault" in no_tty.stderr
    (tmp / "wrong").write_text("not it\n")
    wrong = subprocess.run([*cmd, "--passphrase-file", str(tmp / "wrong")],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
    assert wrong.returncode == 1
    assert "wrong passphrase" in wrong.stderr
    assert "Traceback" not in no_tty.stderr + wrong.stderr
    bad_lang = subprocess.run([*cmd, "--lang", "de"], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
    assert bad_lang.returncode == 2
