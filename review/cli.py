"""`amanat-review`: read testimonies on the offline workstation.

Every command takes `--vault DIR`; the passphrase comes from a terminal prompt, or from
`--passphrase-file FILE` for scripts. Testimony text is untrusted: everything printed goes through
keys.sanitize. Progress goes to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from keys import command
from keys.errors import ConfigError, InputError
from keys.files import read_file
from keys.passphrase import read_passphrase as passphrase_of
from keys.progress import Progress
from keys.sanitize import clean, display_lines, isolate, json_dumps, one_line
from review.answers import labelled_answers, questionnaire_labels
from review.case import ExportRequest, export_case, extract_files
from review.consent import PURPOSES
from review.content import Content
from review.duplicates import Matches, find_matches
from review.importer import import_bundle
from review.metadata import by_ciphertext, warnings
from review.queue import SORTS, rows, sort_rows
from review.replies import make_reply, sent_replies
from review.report_text import LANGUAGES
from review.search import SearchIndex
from review.state import ReplyRecord, SubmissionRecord
from review.suppression import DEFAULT_THRESHOLD, MIN_THRESHOLD, check_threshold
from review.vault import Vault, verify_vault

Run = Callable[[argparse.Namespace], int]


# --- small helpers -----------------------------------------------------------------------------


def read_passphrase(args: argparse.Namespace, what: str) -> bytes:
    return passphrase_of(args.passphrase_file, what).encode("utf-8")


def open_vault(args: argparse.Namespace) -> Vault:
    return Vault.open(args.vault, read_passphrase(args, f"the vault {args.vault}"))


def out(line: str = "") -> None:
    print(line)


MAX_TEXT_BYTES = 256 * 1024  # far above a note's or a reply's character limit


def message_text(args: argparse.Namespace, inline: str | None) -> str:
    """A note's or reply's text: typed inline, or from `--message-file FILE` (`-`: standard
    input), so a long or private text need not pass through the shell's history. One final line
    break (an editor's) is not part of it."""
    if args.message_file is None:
        return inline or ""
    if str(args.message_file) == "-":
        data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
    else:
        data = read_file(args.message_file, "message")
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"the message is over {MAX_TEXT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the message is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


# --- commands ----------------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args, str(args.identity))
    with Vault.create(
        args.vault,
        args.identity.read_bytes(),
        args.keyring.read_bytes(),
        args.org_pub.read_bytes(),
        passphrase,
    ) as vault:
        out(f"created vault {args.vault} for investigator {isolate(vault.label)}")
        out(f"keyring version {vault.keyring.version}, fingerprint {vault.keyring.fingerprint()}")
    return 0


def run_keyring(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        old, keyring = vault.update_keyring(args.keyring.read_bytes())
    change = "unchanged" if old == keyring.version else f"updated from version {old}"
    out(
        f"keyring version {keyring.version} ({change}), fingerprint {keyring.fingerprint()}, "
        f"{len(keyring.active_investigators())} active investigator(s)"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        summary = import_bundle(vault, args.bundle, Progress("import"))
    quarantined = summary["quarantined"]
    if summary["sandbox_warning"]:
        print(f"amanat-review: WARNING: {summary['sandbox_warning']}", file=sys.stderr)
    out(
        f"imported bundle {summary['bundle_id']}: {summary['imported']} new submission(s), "
        f"{summary['skipped']} already in the vault, {len(quarantined)} quarantined"
    )
    for sid, reason in sorted(quarantined.items()):
        out(f"QUARANTINED {sid}: {clean(reason, single_line=True)}")
    return 0


def _row(sub: SubmissionRecord) -> dict[str, Any]:
    return {
        "id": sub["id"],
        "day": sub["day"],
        "source": sub["source"],
        "instance": sub["instance"],
        "readable": sub.get("readable", True),
        "quarantine": sub.get("quarantine"),
        "attachment_count": sub.get("attachment_count", 0),
        "tags": sub["tags"],
        "notes": len(sub["notes"]),
    }


def _flags(sub: SubmissionRecord, matches: Matches) -> dict[str, Any]:
    """Duplicate and similar submissions, identifying metadata: what `list` and `show` warn of."""
    return matches.of(sub["id"]) | {"metadata_warnings": warnings(sub)}


def _flag_text(flags: dict[str, Any]) -> str:
    marks = [f"{len(flags[k])} {k[:-1] if k == 'duplicates' else k}" for k in
             ("duplicates", "similar") if flags[k]]
    marks += [f"{k}!" for k in flags["metadata_warnings"]]
    return f"[{' '.join(marks)}] " if marks else ""


def run_list(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        if args.sort == "urgency":
            vault.add_triage()  # submissions imported before the queue kept urgency
        order = sort_rows(rows(vault.submissions.values(), []), args.sort)
        subs = [vault.submissions[r.id] for r in order]
    matches = find_matches(subs)
    if args.tag:
        subs = [s for s in subs if args.tag in s["tags"]]
    if args.json:
        out(json_dumps([_row(s) | _flags(s, matches) for s in subs]))
        return 0
    out(f"{'ID':<32}  {'DAY':<10}  {'SOURCE':<32}  {'FILES':>5}  TAGS / MESSAGE")
    for sub in subs:
        tags = one_line(",".join(sub["tags"]), 30)
        out(
            f"{clean(sub['id'], single_line=True):<32}  {sub['day']:<10}  "
            f"{clean(sub['source'], single_line=True):<32}  {sub.get('attachment_count', 0):>5}  "
            f"{_flag_text(_flags(sub, matches))}{tags + ' ' if tags else ''}"
            f"{isolate(_excerpt(sub))}"
        )
    out(f"{len(subs)} submission(s)")
    return 0


def _excerpt(sub: SubmissionRecord) -> str:
    if not sub.get("readable", True):
        return "(not for me)"
    if sub.get("quarantine"):
        return one_line(f"(quarantined: {sub['quarantine']})", 60)
    return one_line(sub.get("excerpt", ""), 40)


def _show_json(vault: Vault, sub: SubmissionRecord, content: Content | None) -> dict[str, Any]:
    shown = _row(sub) | _flags(sub, find_matches(vault.submissions.values())) | {
        "notes": sub["notes"],
        "replies": [r for r in vault.replies if r["source"] == sub["source"]],
    }
    if content is None:
        return shown
    return shown | {
        "received_day": content.intake.received_day,
        "message": content.message,
        "message_sha256": content.message_sha256,
        "answers": content.intake.answers,
        "questionnaire": content.intake.questionnaire,
        "attachments": [
            {k: a[k] for k in ("name", "size", "sha256", "content_type", "field")}
            | {"metadata": by_ciphertext(sub).get(a["ciphertext"]["name"], {})}
            for a in content.attachments
        ],
    }


def run_show(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        sub = vault.submission(args.id)
        sealed = not sub.get("readable", True) or sub.get("quarantine")
        content = None if sealed else vault.content(sub)
        if args.json:
            out(json_dumps(_show_json(vault, sub, content)))
            return 0
        replies = sent_replies(vault, sub["source"])
        matches = find_matches(vault.submissions.values()).of(sub["id"])
    out(f"submission {clean(sub['id'], single_line=True)}")
    out(f"day:     {sub['day']}   source: {clean(sub['source'], single_line=True)}")
    out(f"tags:    {one_line(', '.join(sub['tags']), 200) or '-'}")
    for key, ids in matches.items():
        if ids:
            out(f"{key}: {', '.join(clean(i, single_line=True) for i in ids)}")
    if quarantine := sub.get("quarantine"):
        out(f"QUARANTINED: {clean(quarantine, single_line=True)}")
        out("(not shown: the bundle carries it in a form the intake never writes)")
        return 0
    if content is None:
        out("(this submission was not encrypted to your key)")
        return 0
    out("\nmessage:")
    for line in display_lines(content.message):
        out(f"  {line}")
    out("\nanswers:")
    labels = questionnaire_labels(args.questionnaire, args.lang)
    for label, text in labelled_answers(content.intake, labels):
        out(f"  {isolate(label)}:")
        for line in display_lines(text, 74):
            out(f"      {line}")
    _show_attachments(sub, content)
    if sub["notes"]:
        out("\nnotes:")
        for note in sub["notes"]:
            out(f"  {note['at']} {isolate(note['by'])}:")
            for line in display_lines(note["text"], 74):
                out(f"      {line}")
    _show_replies(replies)
    return 0


def _show_replies(replies: list[tuple[ReplyRecord, str | None]]) -> None:
    if not replies:
        return
    out("\nreplies sent to this source:")
    for reply, text in replies:
        out(f"  {reply['day']} {isolate(reply['by'])} (reply {reply['reply_id']}):")
        for line in display_lines("(not encrypted to your key)" if text is None else text, 74):
            out(f"      {line}")


def _show_attachments(sub: SubmissionRecord, content: Content) -> None:
    out("\nattachments:")
    found = by_ciphertext(sub)
    for att in content.attachments:
        kind = clean(att["content_type"], single_line=True)
        out(f"  {isolate(att['name'])}  {att['size']} bytes  {kind}")
        out(f"      sha256 {att['sha256']}")
        for key, value in found.get(att["ciphertext"]["name"], {}).items():
            out(f"      {key}: {isolate(one_line(json_dumps(value), 200))}")


def run_search(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        subs = vault.submissions
        index = SearchIndex(vault.search_texts())
    hits = index.search(args.text)
    if args.json:
        out(
            json_dumps(
                [
                    {
                        "id": h.id,
                        "day": subs[h.id]["day"],
                        "source": subs[h.id]["source"],
                        "snippet": h.snippet,
                    }
                    for h in hits
                ]
            )
        )
        return 0
    for hit in hits:
        out(f"{hit.id}  {subs[hit.id]['day']}  {isolate(one_line(hit.snippet, 70))}")
    out(f"{len(hits)} match(es)")
    return 0


def run_tag(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        tags = vault.tag(args.id, args.tag, remove=args.remove)
    out(f"{clean(args.id, single_line=True)}: tags {one_line(', '.join(tags), 200) or '-'}")
    return 0


def run_note(args: argparse.Namespace) -> int:
    text = message_text(args, args.text)
    with open_vault(args) as vault:
        count = vault.add_note(args.id, text)
    out(f"{clean(args.id, single_line=True)}: {count} note(s)")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        written = extract_files(vault, args.id, args.out, Progress("extract"))
    for item in written:
        out(f"{item['sha256']}  {item['size']:>10}  {isolate(item['name'])}")
    out(f"{len(written)} file(s) written to {args.out}, each verified against its intake SHA-256")
    return 0


def run_export_case(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        request = ExportRequest(args.purpose, args.override_consent, args.working)
        folder = export_case(vault, args.ids, args.out, request, Progress("export-case"))
    out(f"case written to {folder}; check it with: cd {folder} && sha256sum -c SHA256SUMS")
    return 0


def run_reply(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        path = make_reply(vault, args.source, message_text(args, args.message), args.out)
    out(f"reply bundle written: {path}  (carry it with `amanat transfer push`)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from review.report import ReportRequest, make_report  # loads matplotlib: only here

    request = ReportRequest(
        out=args.out,
        labels=questionnaire_labels(args.questionnaire, args.lang),
        threshold=check_threshold(args.threshold),
        start=args.start,
        end=args.end,
        purpose=args.purpose,
    )
    with open_vault(args) as vault:
        sums = make_report(vault, request)
    for name, sha in sums.items():
        out(f"{sha}  {name}")
    out(f"report written to {args.out} and recorded in the custody log "
        f"(report.html sha256 {sums['report.html']})")
    return 0


def run_open(args: argparse.Namespace) -> int:
    try:
        from review.workbench import Options, Workbench  # loads Textual: only here
    except ImportError as exc:
        raise ConfigError(f"the workbench needs Textual (install amanat[review]): {exc}") from None
    with open_vault(args) as vault:  # once for the session: the passphrase is asked here
        vault.add_triage()
        Workbench(vault, Options(args.lang, args.questionnaire, args.out)).run()
    return 0


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


def _threshold(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < MIN_THRESHOLD:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_THRESHOLD} (got {number})")
    return number


def run_verify(args: argparse.Namespace) -> int:
    with open_vault(args) as vault:
        checked, problems = verify_vault(vault, Progress("verify"))
    for problem in problems:
        out(f"PROBLEM: {clean(problem, single_line=True)}")
    out(
        f"checked {checked} ciphertext(s), the state signature and the custody log: "
        f"{'OK' if not problems else f'{len(problems)} problem(s)'}"
    )
    return 0 if not problems else 1


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amanat-review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--vault", type=Path, required=True, metavar="DIR")
    common.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the passphrase from FILE instead of prompting",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Run, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(run=run)
        return p

    p = command("init", run_init, "create a vault for an investigator identity")
    p.add_argument("--identity", type=Path, required=True, metavar="FILE")
    p.add_argument("--keyring", type=Path, required=True, metavar="FILE")
    p.add_argument("--org-pub", type=Path, required=True, metavar="FILE")
    p = command("keyring", run_keyring, "adopt a newer org-signed keyring (checked like at init)")
    p.add_argument("keyring", type=Path, metavar="FILE")
    p = command("import", run_import, "verify a transfer bundle and import its submissions")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p = command("list", run_list, "list submissions")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tag", help="only submissions with this tag", metavar="TAG")
    p.add_argument("--sort", choices=SORTS, default="day",
                   help="by day (the default), or by urgency (most urgent first), then day")
    p = command("show", run_show, "show one submission")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.add_argument("--lang", choices=LANGUAGES, default="en",
                   help="the language of the questionnaire's questions and answers")
    p.add_argument("--questionnaire", type=Path, metavar="FILE",
                   help="the questionnaire file the server runs with (default: the built-in one)")
    p = command("search", run_search, "search messages and answers")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--json", action="store_true")
    p = command("tag", run_tag, "tag a submission")
    p.add_argument("id", metavar="ID")
    p.add_argument("tag", metavar="TAG")
    p.add_argument("--remove", action="store_true")
    p = command("note", run_note, "add a note to a submission")
    p.add_argument("id", metavar="ID")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("text", metavar="TEXT", nargs="?")
    given.add_argument("--message-file", type=Path, metavar="FILE",
                       help="read the note from FILE (- for standard input)")
    p = command("extract", run_extract, "write a submission's attachments, verified")
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p = command("export-case", run_export_case, "export submissions as a case folder")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--purpose", choices=PURPOSES, required=True,
                   help="what the case is for: only submissions whose source consented to it")
    p.add_argument("--override-consent", metavar="TEXT",
                   help="export submissions without that consent anyway, for this reason "
                   "(recorded in the custody log and the summary)")
    p.add_argument("--working", action=argparse.BooleanOptionalAction, default=None,
                   help="add working/ copies cleaned of metadata (default: for advocacy only)")
    p = command("reply", run_reply, "write an encrypted, signed reply bundle to a source")
    p.add_argument("source", metavar="SOURCE")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--message", metavar="TEXT")
    given.add_argument("--message-file", type=Path, metavar="FILE",
                       help="read the reply from FILE (- for standard input)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p = command("report", run_report, "write an anonymized advocacy report (HTML, CSV, charts)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--from", dest="start", type=_day, metavar="DAY", help="first day counted")
    p.add_argument("--to", dest="end", type=_day, metavar="DAY", help="last day counted")
    p.add_argument("--lang", choices=LANGUAGES, default="en")
    p.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD, metavar="N",
                   help=f"hide counts below N (default {DEFAULT_THRESHOLD}, at least "
                   f"{MIN_THRESHOLD})")
    p.add_argument("--questionnaire", type=Path, metavar="FILE",
                   help="the questionnaire file the server runs with (default: the built-in one)")
    p.add_argument("--purpose", default="anonymized advocacy report", metavar="TEXT",
                   help="why the report is made (recorded in the custody log)")
    command("verify", run_verify, "re-hash everything in the vault and report")
    p = command("open", run_open, "the interactive workbench: queue, sources, submissions, "
                "actions (unlocks the vault once for the session)")
    p.add_argument("--lang", choices=LANGUAGES, default="en",
                   help="the language of the questionnaire's questions and answers (l switches)")
    p.add_argument("--questionnaire", type=Path, metavar="FILE",
                   help="the questionnaire file the server runs with (default: the built-in one)")
    p.add_argument("--out", type=Path, default=Path(), metavar="DIR",
                   help="the folder the workbench offers for replies, extracts, cases and "
                   "reports (default: the current folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # extracted testimony and vault files: readable by this user only
    return command.run("amanat-review", args)


if __name__ == "__main__":
    sys.exit(main())
