"""Getting plaintext out of the vault on purpose: `extract` and `export-case`.

Every attachment is decrypted to a temporary file inside the target folder, hashed on the way and
compared with the size and SHA-256 recorded at intake (in the encrypted submission manifest). Only
a file that matches gets its final, sanitized name; anything else is deleted and refused. Each run
is recorded in the hash-chained chain-of-custody log.
"""

from __future__ import annotations

import hashlib
import html
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.sanitize import clean, escape_json_text, json_dumps, safe_filename, unique_name
from review.answers import answer_pairs
from review.consent import CLEANED_BY_DEFAULT, check_export, consents
from review.content import Attachment, Content
from review.metadata import by_ciphertext, clean_copy
from review.sandbox import Sandbox, SandboxError, detect
from review.state import CiphertextRecord, SubmissionRecord
from review.vault import (
    GENESIS,
    Vault,
    VaultIntegrityError,
    canonical,
    custody_body,
    now,
)

Progress = Callable[[int, int], None]


class AttachmentMismatchError(VaultIntegrityError):
    """A decrypted attachment differs from the size or SHA-256 recorded at intake."""


def _inside(directory: Path, name: str) -> Path:
    target = (directory / name).resolve()
    if target.parent != directory.resolve():
        raise VaultIntegrityError(f"refusing to write {name!r} outside {directory}")
    return target


def _write_verified(vault: Vault, directory: Path, attachment: Attachment, name: str) -> Path:
    """Decrypt one attachment into `directory` under `name`; verified before it gets the name."""
    tmp = _inside(directory, f".amanat-partial-{secrets.token_hex(8)}")
    digest, size = hashlib.sha256(), 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in vault.decrypt_ciphertext(attachment["ciphertext"]):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != attachment["size"] or digest.hexdigest() != attachment["sha256"]:
            raise AttachmentMismatchError(
                f"attachment {clean(attachment['name'], single_line=True)!r} does not match the "
                "size and SHA-256 recorded at intake: not written"
            )
        final = _inside(directory, name)
        os.link(tmp, final)  # unlike rename, never replaces an existing file
        return final
    finally:
        tmp.unlink(missing_ok=True)


def extract_files(
    vault: Vault, sid: str, out_dir: Path, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Write one submission's attachments into `out_dir` (created if needed). The custody log
    records the start before the first plaintext is written and each file once it is there, so
    a run that fails half way leaves no decrypted file the log does not account for."""
    sub = vault.submission(sid)
    content = vault.content(sub)
    out_dir.mkdir(parents=True, exist_ok=True)
    where = str(out_dir.resolve())
    vault.record("extract", [sid], out=where, planned=len(content.attachments))
    written = _extract_into(vault, sub["id"], content, out_dir, progress, "extract-file")
    vault.record("extract-done", [sid], out=where, files=len(written))
    return written


def _extract_into(
    vault: Vault,
    sid: str,
    content: Content,
    out_dir: Path,
    progress: Progress | None,
    action: str,
) -> list[dict[str, Any]]:
    taken = set(os.listdir(out_dir))
    written = []
    for n, att in enumerate(content.attachments):
        name = unique_name(safe_filename(att["name"]), taken)
        path = _write_verified(vault, out_dir, att, name)
        taken.add(path.name)
        entry = {"name": path.name, "size": att["size"], "sha256": att["sha256"]}
        vault.record(action, [sid], out=str(path.resolve()), size=att["size"], sha256=att["sha256"])
        written.append(entry)
        if progress:
            progress(n + 1, len(content.attachments))
    return written


# --- export-case -------------------------------------------------------------------------------

ABOUT = """\
About the files in this folder (written by amanat-review export-case)

Everything here came from anonymous sources and is untrusted. So that no terminal, editor or
viewer acts on what a source typed:

- message.txt (in each submission's folder) and summary.html: the text with terminal control
  characters (C0 other than newline and tab, DEL, C1, and whole escape sequences) replaced by
  U+FFFD, and bidi embedding, override and isolate characters removed. The exact original stays
  in the vault; its size and SHA-256 are in that folder's answers.json (message_size,
  message_sha256).
- answers.json and custody.jsonl: JSON with every value exact, but control, bidi and line
  separator characters written as \\uXXXX escapes.
- originals/: each file exactly as received and verified against the SHA-256 recorded at
  intake, saved under a name made safe for Windows, macOS and Linux; the original name is in
  answers.json (attachments: name, saved_as). Originals may carry metadata that identifies a
  place or a person (GPS position, phone, author): see summary.html.
- working/ (advocacy exports, or with --working): copies cleaned of metadata by mat2, under the
  same names. Each copy's SHA-256, the original's, the tool and what was removed are in
  custody.jsonl (action "derive") and summary.html. A file mat2 could not clean has no copy.
- SHA256SUMS: check everything with `sha256sum -c SHA256SUMS`.
"""


@dataclass(frozen=True)
class ExportRequest:
    purpose: str  # advocacy | referral | legal (review/consent.py)
    override: str | None = None  # why submissions without that consent go anyway
    working: bool | None = None  # cleaned working copies; None: as the purpose needs


def export_case(
    vault: Vault,
    ids: list[str],
    out_dir: Path,
    request: ExportRequest,
    progress: Progress | None = None,
) -> Path:
    """Write a case folder: per submission its message, answers, originals and (for purposes
    that need them) cleaned working copies; custody.jsonl; summary.html; ABOUT.txt; and
    SHA256SUMS over all of them. Only submissions whose source consented to the purpose, unless
    an override reason is given. Custody: the start is logged before anything is written,
    then each file as it is written."""
    subs = [vault.submission(sid) for sid in dict.fromkeys(ids)]
    contents = [vault.content(sub) for sub in subs]
    given = {sub["id"]: consents(c.intake) for sub, c in zip(subs, contents, strict=True)}
    without = check_export(request.purpose, given, request.override)
    working = request.working
    if working is None:
        working = request.purpose in CLEANED_BY_DEFAULT
    if out_dir.exists() and any(out_dir.iterdir()):
        raise VaultIntegrityError(f"{out_dir} is not empty: export-case writes a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    overridden = {"consent_override": request.override, "without_consent": without}
    vault.record("export-case", [s["id"] for s in subs], out=str(out_dir.resolve()),
                 purpose=request.purpose, working=working, **(overridden if without else {}))
    sandbox = detect() if working else None
    exported: dict[str, list[dict[str, Any]]] = {}
    for n, (sub, content) in enumerate(zip(subs, contents, strict=True)):
        folder = out_dir / safe_filename(sub["id"])
        (folder / "originals").mkdir(parents=True)
        _write_text(vault, sub["id"], folder / "message.txt", clean(content.message))
        saved = _extract_into(vault, sub["id"], content, folder / "originals", None, "export-file")
        if sandbox is not None:
            _working_copies(vault, sandbox, sub["id"], content, saved, folder / "working")
        _write_text(vault, sub["id"], folder / "answers.json", _answers_json(content, saved))
        exported[sub["id"]] = saved
        if progress:
            progress(n + 1, len(subs))
    (out_dir / "custody.jsonl").write_text(_custody_lines(vault, set(ids)), encoding="utf-8")
    cases = list(zip(subs, contents, strict=True))
    summary = _summary_html(vault, cases, exported, request, given, without)
    (out_dir / "summary.html").write_text(summary, encoding="utf-8")
    (out_dir / "ABOUT.txt").write_text(ABOUT, encoding="utf-8")
    _write_sums(out_dir)
    return out_dir


def _working_copies(
    vault: Vault,
    sandbox: Sandbox,
    sid: str,
    content: Content,
    saved: list[dict[str, Any]],
    folder: Path,
) -> None:
    """A copy of each original cleaned by mat2 (in the sandbox), logged as a derivation with both
    hashes and the tool; `saved` entries gain `working` (or `working_error`)."""
    folder.mkdir()
    for att, entry in zip(content.attachments, saved, strict=True):
        ct = att["ciphertext"]

        def plaintext(ct: CiphertextRecord = ct) -> Iterator[bytes]:
            return vault.decrypt_ciphertext(ct)

        try:
            copy = clean_copy(sandbox, plaintext, att["size"])
        except SandboxError as exc:
            entry["working_error"] = str(exc)
            vault.record("derive-failed", [sid], original_sha256=att["sha256"], reason=str(exc))
            continue
        path = _inside(folder, entry["name"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(copy.data)
        entry["working"] = {"sha256": copy.sha256, "size": len(copy.data), "tool": copy.tool,
                            "removed": copy.removed, "left": copy.left}
        vault.record("derive", [sid], out=str(path.resolve()), original_sha256=att["sha256"],
                     copy_sha256=copy.sha256, tool=copy.tool, removed=copy.removed)


def _write_text(vault: Vault, sid: str, path: Path, text: str) -> None:
    """Write a file with plaintext testimony in it, then record it in the custody log."""
    data = text.encode("utf-8")
    path.write_bytes(data)
    vault.record("export-file", [sid], out=str(path.resolve()), size=len(data),
                 sha256=hashlib.sha256(data).hexdigest())


def _answers_json(content: Content, saved: list[dict[str, Any]]) -> str:
    """The answers with every value exact, escaped where a terminal could act on them."""
    document = {
        "received_day": content.intake.received_day,
        "message_size": content.message_size,
        "message_sha256": content.message_sha256,
        "answers": content.intake.answers,
        "questionnaire": content.intake.questionnaire,
        "consents": consents(content.intake),
        "attachments": [
            {"name": a["name"], "saved_as": s["name"], "size": a["size"], "sha256": a["sha256"],
             "content_type": a["content_type"]}
            | {k: s[k] for k in ("working", "working_error") if k in s}
            for a, s in zip(content.attachments, saved, strict=True)
        ],
    }
    return json_dumps(document) + "\n"


def _custody_lines(vault: Vault, ids: set[str]) -> str:
    """The whole chain, so it still verifies; entries about other submissions are redacted to the
    hash of their body (see docs: review tool, chain of custody)."""
    lines = []
    for entry in vault.custody:
        subjects = set(entry["subjects"])
        if not subjects or subjects & ids:
            lines.append(escape_json_text(canonical(entry).decode()))
        else:
            body_sha = hashlib.sha256(canonical(custody_body(entry))).hexdigest()
            redacted = {
                "seq": entry["seq"],
                "redacted": True,
                "body_sha256": body_sha,
                "prev": entry["prev"],
                "hash": entry["hash"],
            }
            lines.append(canonical(redacted).decode())
    return "\n".join(lines) + "\n"


def _write_sums(out_dir: Path) -> None:
    lines = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        if rel == "SHA256SUMS":
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {rel}\n")
    (out_dir / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")


def _e(text: object) -> str:
    return html.escape(clean(str(text)), quote=True)


def _summary_html(
    vault: Vault,
    subs: list[tuple[SubmissionRecord, Content]],
    exported: dict[str, list[dict[str, Any]]],
    request: ExportRequest,
    given: dict[str, list[str]],
    without: list[str],
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        "<title>Amanat case export</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "pre{white-space:pre-wrap;border:1px solid #999;padding:.5em}"
        "td,th{border:1px solid #999;padding:.2em .4em;text-align:start}"
        "table{border-collapse:collapse}.warn{color:#a00}</style></head><body>",
        "<h1>Amanat case export</h1>",
        f"<p>Exported {_e(now())} by {_e(vault.label)} for the purpose "
        f"<strong>{_e(request.purpose)}</strong>. Chain of custody: custody.jsonl "
        f"(starts from {GENESIS[:8]}…). Check files with <code>sha256sum -c SHA256SUMS</code>."
        "</p>",
    ]
    if without:
        parts.append(
            f'<p class="warn">Exported WITHOUT the source\'s consent to {_e(request.purpose)}: '
            f"{_e(', '.join(without))}. Reason given: {_e(request.override)}</p>"
        )
    for sub, content in subs:
        parts.append(f"<section><h2>Submission {_e(sub['id'])}</h2>")
        parts.append(
            f"<p>Day {_e(sub['day'])} · source {_e(sub['source'])} · tags "
            f"{_e(', '.join(sub['tags']) or '—')} · consented to "
            f"{_e(', '.join(given[sub['id']]) or 'nothing')}</p>"
        )
        parts.append(f'<h3>Message</h3><pre dir="auto">{_e(content.message)}</pre>')
        parts.append("<h3>Answers</h3><table>")
        for key, value in answer_pairs(content.intake):
            parts.append(f'<tr><th dir="auto">{_e(key)}</th><td dir="auto">{_e(value)}</td></tr>')
        parts.append("</table>")
        parts += _attachment_rows(sub, content, exported[sub["id"]])
        parts.append("<h3>Notes</h3><ul>")
        for note in sub["notes"]:
            parts.append(
                f'<li dir="auto">{_e(note["at"])} {_e(note["by"])}: {_e(note["text"])}</li>'
            )
        parts.append("</ul></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _attachment_rows(
    sub: SubmissionRecord, content: Content, saved: list[dict[str, Any]]
) -> list[str]:
    """Originals with their metadata findings; working copies with what was removed."""
    found = by_ciphertext(sub)
    parts = ["<h3>Attachments</h3><table><tr><th>file (originals/)</th><th>size</th>",
             "<th>SHA-256</th><th>metadata in the original</th><th>working/ copy</th></tr>"]
    for att, entry in zip(content.attachments, saved, strict=True):
        meta = found.get(att["ciphertext"]["name"], {})
        parts.append(
            f'<tr><td dir="auto">{_e(entry["name"])}</td><td>{_e(entry["size"])}</td>'
            f"<td><code>{_e(entry['sha256'])}</code></td>"
            f'<td class="{"warn" if meta else ""}">{_e(json_dumps(meta)) if meta else "none found"}'
            f"</td><td>{_working_text(entry)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _working_text(entry: dict[str, Any]) -> str:
    if "working_error" in entry:
        return f'<span class="warn">not made: {_e(entry["working_error"])}</span>'
    copy = entry.get("working")
    if copy is None:
        return "—"
    removed = ", ".join(copy["removed"]) or "nothing"
    text = (f"cleaned with {_e(copy['tool'])}, SHA-256 <code>{_e(copy['sha256'])}</code>; "
            f"removed: {_e(removed)}")
    if copy["left"]:
        text += f'; <span class="warn">still there: {_e(json_dumps(copy["left"]))}</span>'
    return text
