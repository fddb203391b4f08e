"""Getting plaintext out of the vault on purpose: `extract` and `export-case`.

Every attachment is decrypted to a temporary file inside the target folder, hashed on the way and
compared with the size and SHA-256 recorded at intake (in the encrypted submission manifest). Only
a file that matches gets its final, sanitized name; anything else is deleted and refused. Each run
is recorded in the hash-chained chain-of-custody log.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from review.answers import answer_pairs
from review.sanitize import clean, safe_filename, unique_name
from review.vault import (
    GENESIS,
    UnknownItemError,
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


def _ciphertext(sub: dict[str, Any], attachment: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in sub["ciphertexts"] if c["sha256"] == attachment["object"])


def _write_verified(
    vault: Vault, directory: Path, sub: dict[str, Any], attachment: dict[str, Any], name: str
) -> Path:
    """Decrypt one attachment into `directory` under `name`; verified before it gets the name."""
    tmp = _inside(directory, f".amanat-partial-{secrets.token_hex(8)}")
    digest, size = hashlib.sha256(), 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in vault.decrypt_ciphertext(_ciphertext(sub, attachment)):
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


def _readable(vault: Vault, sid: str) -> dict[str, Any]:
    sub = vault.submission(sid)
    if not sub.get("readable", True):
        raise UnknownItemError(f"submission {sid} was not encrypted to this investigator's key")
    return sub


def extract_files(
    vault: Vault, sid: str, out_dir: Path, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Write one submission's attachments into `out_dir` (created if needed)."""
    sub = _readable(vault, sid)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _extract_into(vault, sub, out_dir, progress)
    vault.log("extract", [sid], out=str(out_dir.resolve()), files=written)
    vault.save()
    return written


def _extract_into(
    vault: Vault, sub: dict[str, Any], out_dir: Path, progress: Progress | None
) -> list[dict[str, Any]]:
    taken = set(os.listdir(out_dir))
    written = []
    for n, att in enumerate(sub["attachments"]):
        name = unique_name(safe_filename(att["name"]), taken)
        path = _write_verified(vault, out_dir, sub, att, name)
        taken.add(path.name)
        written.append({"name": path.name, "size": att["size"], "sha256": att["sha256"]})
        if progress:
            progress(n + 1, len(sub["attachments"]))
    return written


# --- export-case -------------------------------------------------------------------------------


def export_case(
    vault: Vault, ids: list[str], out_dir: Path, progress: Progress | None = None
) -> Path:
    """Write a case folder: per submission its message, answers and attachments; custody.jsonl;
    summary.html; and SHA256SUMS over all of them (check with `sha256sum -c SHA256SUMS`)."""
    subs = [_readable(vault, sid) for sid in dict.fromkeys(ids)]
    if out_dir.exists() and any(out_dir.iterdir()):
        raise VaultIntegrityError(f"{out_dir} is not empty: export-case writes a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    vault.log("export-case", [s["id"] for s in subs], out=str(out_dir.resolve()))
    vault.save()
    exported: dict[str, list[dict[str, Any]]] = {}
    for n, sub in enumerate(subs):
        folder = out_dir / safe_filename(sub["id"])
        (folder / "attachments").mkdir(parents=True)
        (folder / "message.txt").write_text(sub["message"], encoding="utf-8")
        answers = json.dumps(
            {"answers": sub["answers"], "questionnaire": sub.get("questionnaire")},
            ensure_ascii=False,
            indent=2,
            sort_keys=True,
        )
        (folder / "answers.json").write_text(answers + "\n", encoding="utf-8")
        exported[sub["id"]] = _extract_into(vault, sub, folder / "attachments", None)
        if progress:
            progress(n + 1, len(subs))
    (out_dir / "custody.jsonl").write_text(_custody_lines(vault, set(ids)), encoding="utf-8")
    summary = _summary_html(vault, subs, exported)
    (out_dir / "summary.html").write_text(summary, encoding="utf-8")
    _write_sums(out_dir)
    return out_dir


def _custody_lines(vault: Vault, ids: set[str]) -> str:
    """The whole chain, so it still verifies; entries about other submissions are redacted to the
    hash of their body (see docs: review tool, chain of custody)."""
    lines = []
    for entry in vault.state["custody"]:
        subjects = set(entry["subjects"])
        if not subjects or subjects & ids:
            lines.append(canonical(entry).decode())
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
    vault: Vault, subs: list[dict[str, Any]], exported: dict[str, list[dict[str, Any]]]
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
        "table{border-collapse:collapse}</style></head><body>",
        "<h1>Amanat case export</h1>",
        f"<p>Exported {_e(now())} by {_e(vault.label)}. Chain of custody: custody.jsonl "
        f"(starts from {GENESIS[:8]}…). Check files with <code>sha256sum -c SHA256SUMS</code>."
        "</p>",
    ]
    for sub in subs:
        parts.append(f"<section><h2>Submission {_e(sub['id'])}</h2>")
        parts.append(
            f"<p>Day {_e(sub['day'])} · source {_e(sub['source'])} · tags "
            f"{_e(', '.join(sub['tags']) or '—')}</p>"
        )
        parts.append(f'<h3>Message</h3><pre dir="auto">{_e(sub["message"])}</pre>')
        parts.append("<h3>Answers</h3><table>")
        for key, value in answer_pairs(sub):
            parts.append(f'<tr><th dir="auto">{_e(key)}</th><td dir="auto">{_e(value)}</td></tr>')
        parts.append("</table><h3>Attachments</h3><table><tr><th>file</th><th>size</th>")
        parts.append("<th>SHA-256</th></tr>")
        for att in exported[sub["id"]]:
            parts.append(
                f'<tr><td dir="auto">{_e(att["name"])}</td><td>{_e(att["size"])}</td>'
                f"<td><code>{_e(att['sha256'])}</code></td></tr>"
            )
        parts.append("</table><h3>Notes</h3><ul>")
        for note in sub["notes"]:
            parts.append(
                f'<li dir="auto">{_e(note["at"])} {_e(note["by"])}: {_e(note["text"])}</li>'
            )
        parts.append("</ul></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
