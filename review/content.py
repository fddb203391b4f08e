"""A submission's content: its message, answers and attachment list, read from its ciphertexts.

The vault's state holds only a small record per submission (day, source, an excerpt, counts,
tags, notes); the message and the submission manifest stay the age files the server sent, kept in
the stored bundle, and are decrypted when a command needs them. So the state's size does not grow
with message sizes, and `list` never decrypts a message.

`open_content` is the one place a submission manifest is read: on import (from the verified
bundle) and on every later `show`, `search`, `extract` and `export-case` (from the vault). It
checks the manifest against keys/manifest.py's schema, within the limits the server signed into
the bundle, and against the bundle's ciphertexts; an item that does not conform raises
`NonConformingItemError`, and the importer quarantines it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from keys.age import X25519Identity, decrypt_iter
from keys.errors import AgeError, InputError, NoIdentityMatchError
from keys.manifest import (
    DEFAULT_LIMITS,
    FileEntry,
    IntakeLimits,
    IntakeManifest,
    IntakeManifestError,
    decode_intake_manifest,
)
from review.answers import answer_pairs
from review.queue import triage
from review.state import CiphertextRecord, Triage

EXCERPT_CHARS = 160
# An age file is its header (one stanza per recipient) plus 16 bytes per 64 KiB chunk.
_HEADER_ALLOWANCE = 64 * 1024

ReadCiphertext = Callable[[CiphertextRecord], Iterable[bytes]]


class Attachment(TypedDict):
    """An attachment as the submission manifest describes it, with its ciphertext."""

    name: str
    content_type: str
    size: int
    sha256: str  # of the plaintext
    field: str
    ciphertext: CiphertextRecord


class Summary(TypedDict):
    """What the vault state keeps of a submission's content (the rest when it is readable)."""

    readable: bool
    quarantine: str | None
    received_day: NotRequired[str]
    excerpt: NotRequired[str]
    message_sha256: NotRequired[str]
    message_size: NotRequired[int]
    attachment_count: NotRequired[int]
    triage: NotRequired[Triage]


class NonConformingItemError(InputError):
    """A submission's manifest or ciphertexts break the schema or contradict each other."""


@dataclass(frozen=True)
class Content:
    message: str
    message_sha256: str
    message_size: int
    intake: IntakeManifest
    attachments: tuple[Attachment, ...]


def open_content(
    read: ReadCiphertext,
    identity: X25519Identity,
    ciphertexts: Sequence[CiphertextRecord],
    limits: IntakeLimits,
) -> Content | None:
    """Decrypt and check one submission; None if it was not encrypted to `identity`."""
    limits = limits.capped()
    by_kind = {k: [c for c in ciphertexts if c["kind"] == k] for k in ("message", "manifest")}
    if len(by_kind["message"]) > 1 or len(by_kind["manifest"]) != 1:
        raise NonConformingItemError("a submission needs one manifest and at most one message")
    try:
        raw = _decrypt(read, identity, by_kind["manifest"][0], limits.max_document_bytes())
        intake = decode_intake_manifest(raw, limits)
        message = b""
        if by_kind["message"]:
            message = _decrypt(read, identity, by_kind["message"][0], limits.max_message_bytes)
    except NoIdentityMatchError:
        return None
    except (AgeError, IntakeManifestError) as exc:
        raise NonConformingItemError(str(exc)) from None
    _check_message(intake.message, message, by_kind["message"])
    return Content(
        message=message.decode("utf-8", errors="replace"),
        message_sha256=hashlib.sha256(message).hexdigest(),
        message_size=len(message),
        intake=intake,
        attachments=_attachments(intake, [c for c in ciphertexts if c["kind"] == "file"]),
    )


def _decrypt(
    read: ReadCiphertext, identity: X25519Identity, ct: CiphertextRecord, limit: int
) -> bytes:
    """A whole plaintext of at most `limit` bytes; the ciphertext's size is checked first, so a
    huge member is refused before any of it is read."""
    if ct["size"] > limit + limit // 4096 + _HEADER_ALLOWANCE:
        raise NonConformingItemError(
            f"a {ct['kind']} ciphertext of {ct['size']} bytes is over the signed limit of {limit}"
        )
    plaintext = bytearray()
    for chunk in decrypt_iter(read(ct), [identity]):
        plaintext += chunk
        if len(plaintext) > limit:
            raise NonConformingItemError(f"a {ct['kind']} is over the signed limit of {limit}")
    return bytes(plaintext)


def _check_message(
    entry: FileEntry | None, message: bytes, cts: Sequence[CiphertextRecord]
) -> None:
    """The message ciphertext and the manifest's `message` entry agree, down to the SHA-256."""
    if entry is None and not cts:
        return
    if entry is None or not cts or entry.ciphertext != cts[0]["name"]:
        raise NonConformingItemError("the manifest and the bundle disagree on the message")
    if entry.sha256 != hashlib.sha256(message).hexdigest() or entry.size != len(message):
        raise NonConformingItemError(
            "the message does not match the size and SHA-256 recorded at intake"
        )


def _attachments(
    intake: IntakeManifest, files: Sequence[CiphertextRecord]
) -> tuple[Attachment, ...]:
    """Each `file` ciphertext described exactly once by the manifest's `files` (by name)."""
    by_name = {c["name"]: c for c in files}
    if sorted(e.ciphertext for e in intake.files) != sorted(by_name):
        raise NonConformingItemError(
            "the manifest's files and the bundle's file ciphertexts do not match one to one"
        )
    return tuple(
        {
            "name": e.filename or "attachment",
            "content_type": e.content_type,
            "size": e.size,
            "sha256": e.sha256,
            "field": e.field,
            "ciphertext": by_name[e.ciphertext],
        }
        for e in intake.files
    )


def search_text(content: Content) -> str:
    """What `search` looks through: the message, then every answer (question and value)."""
    answers = " ".join(f"{label} {text}" for label, text in answer_pairs(content.intake))
    return f"{content.message} {answers}"


def summary(content: Content | None) -> Summary:
    """What the vault state keeps of a submission's content: enough for `list`, no more."""
    if content is None:
        return {"readable": False, "quarantine": None}
    return {
        "readable": True,
        "quarantine": None,
        "received_day": content.intake.received_day,
        "excerpt": content.message[:EXCERPT_CHARS],
        "message_sha256": content.message_sha256,
        "message_size": content.message_size,
        "attachment_count": len(content.attachments),
        "triage": triage(content.intake),
    }


def limits_of(bundle_record: Mapping[str, object] | None) -> IntakeLimits:
    """The limits a stored bundle signed (the defaults if it signed none)."""
    doc = (bundle_record or {}).get("limits")
    return DEFAULT_LIMITS if doc is None else IntakeLimits.from_json(doc)
