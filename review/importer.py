"""`import BUNDLE`: verify a transfer bundle whole, then add its submissions to the vault.

Order matters: `keys.bundle.read_bundle` checks the structure, the transfer-key signature and every
ciphertext hash before anything is written; then the bundle id is checked against the ones already
imported (a replay is refused); then each new submission's message and encrypted manifest are
opened in memory and cross-checked; only then are ciphertexts stored and the state saved. If any
step fails, the objects this import added are removed and the state is left as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from keys.age import decrypt
from keys.bundle import (
    BundleError,
    TransferItem,
    TransferManifest,
    VerifiedBundle,
    read_bundle,
    transfer_key_lookup,
)
from keys.errors import AgeError, ConfigError, NoIdentityMatchError
from review.vault import Vault, now

Progress = Callable[[int, int], None]


class BundleReplayError(BundleError):
    """This bundle (by its id) was imported before."""


class BundleConflictError(BundleError):
    """The bundle's content contradicts what the vault already holds or what the item says."""


def import_bundle(vault: Vault, path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Import one transfer bundle; returns a summary. Raises BundleError subclasses on refusal."""
    transfer_key = vault.keyring.transfer_verify_key
    if transfer_key is None:
        raise ConfigError("the keyring pins no server transfer key: cannot check any bundle")
    with open(path, "rb") as raw:
        src = _HashingReader(raw)
        bundle = read_bundle(cast(BinaryIO, src), transfer_key_lookup(transfer_key))
        bundle_sha256 = src.hexdigest()  # read_bundle read every byte once, in order
        manifest = bundle.manifest
        assert isinstance(manifest, TransferManifest)  # the lookup accepts nothing else
        _refuse_replay(vault, manifest)
        new_items = _new_items(vault, manifest)
        records = {}
        for n, item in enumerate(new_items):
            records[item.submission_id] = _open_item(vault, bundle, manifest, item, bundle_sha256)
            if progress:
                progress(n + 1, len(new_items))
        stored = vault.bundle_path(bundle_sha256)
        added = [] if stored.exists() or not new_items else [stored]
        if added:
            vault.store_bundle(raw, bundle_sha256)
    try:
        _record(vault, manifest, records, bundle_sha256)
    except BaseException:
        for path in added:
            path.unlink(missing_ok=True)
        raise
    return {
        "bundle_id": manifest.bundle_id,
        "imported": len(new_items),
        "skipped": len(manifest.items) - len(new_items),
    }


def _record(
    vault: Vault, manifest: TransferManifest, records: dict[str, Any], bundle_sha256: str
) -> None:
    """Add the new submissions, the bundle id (for replay checks) and a custody entry; save."""
    vault.state["submissions"].update(records)
    vault.state["bundles"][manifest.bundle_id] = {
        "instance": manifest.instance_id,
        "created_day": manifest.created_day,
        "imported_at": now(),
        "sha256": bundle_sha256,
        "items": len(manifest.items),
        "new": len(records),
    }
    vault.log(
        "import",
        sorted(records),
        bundle_id=manifest.bundle_id,
        bundle_sha256=bundle_sha256,
        instance=manifest.instance_id,
        skipped=len(manifest.items) - len(records),
    )
    vault.save()


def _refuse_replay(vault: Vault, manifest: TransferManifest) -> None:
    seen = vault.state["bundles"].get(manifest.bundle_id)
    if seen is not None:
        raise BundleReplayError(
            f"bundle {manifest.bundle_id} was already imported at {seen['imported_at']}: "
            "refused as a replay, nothing changed"
        )


def _new_items(vault: Vault, manifest: TransferManifest) -> list[TransferItem]:
    """Items not in the vault yet. A server re-sends unacknowledged items in later bundles, which
    is fine if they are byte-identical; a different ciphertext under a known id is refused."""
    new = []
    for item in manifest.items:
        known = vault.state["submissions"].get(item.submission_id)
        if known is None:
            new.append(item)
            continue
        hashes = sorted(c.sha256 for c in item.ciphertexts)
        if hashes != sorted(c["sha256"] for c in known["ciphertexts"]):
            raise BundleConflictError(
                f"submission {item.submission_id} is already in the vault with other content"
            )
    return new


def _open_item(
    vault: Vault,
    bundle: VerifiedBundle,
    manifest: TransferManifest,
    item: TransferItem,
    bundle_sha256: str,
) -> dict[str, Any]:
    """The vault's record of one submission: what the bundle says, plus what its intake
    manifest and message say once decrypted (or `readable: False` if not encrypted to us)."""
    record = _record_skeleton(bundle, manifest, item, bundle_sha256)
    by_kind = {kind: [c for c in item.ciphertexts if c.kind == kind] for kind in KINDS}
    if len(by_kind["message"]) > 1 or len(by_kind["manifest"]) != 1:
        raise BundleConflictError(
            f"submission {item.submission_id} needs one manifest and at most one message"
        )
    try:
        intake = _json_object(
            decrypt(bundle.read_member(by_kind["manifest"][0].name), [vault.identity])
        )
        message = b""
        if by_kind["message"]:
            message = decrypt(bundle.read_member(by_kind["message"][0].name), [vault.identity])
    except NoIdentityMatchError:
        record.update(readable=False, message="", answers={}, attachments=[])
        return record
    except AgeError as exc:
        raise BundleConflictError(f"submission {item.submission_id}: {exc}") from exc
    _check_message(item, intake, message, by_kind["message"])
    questionnaire = intake.get("questionnaire")
    record.update(
        readable=True,
        message=message.decode("utf-8", errors="replace"),
        message_sha256=hashlib.sha256(message).hexdigest(),
        received_day=str(intake.get("received_day", item.day)),
        answers=_dict(intake.get("answers"), item, "answers"),
        questionnaire=_dict(questionnaire, item, "questionnaire") if questionnaire else None,
        attachments=_attachments(item, intake, by_kind["file"]),
    )
    return record


def _record_skeleton(
    bundle: VerifiedBundle, manifest: TransferManifest, item: TransferItem, bundle_sha256: str
) -> dict[str, Any]:
    """What the signed transfer manifest says of a submission; ciphertexts stay in the stored
    bundle and are found by offset."""
    return {
        "id": item.submission_id,
        "instance": manifest.instance_id,
        "bundle": manifest.bundle_id,
        "day": item.day,
        "source": item.source_id,
        "reply_recipient": item.reply_recipient,
        "imported_at": now(),
        "ciphertexts": [
            {
                "name": c.name,
                "kind": c.kind,
                "size": c.size,
                "sha256": c.sha256,
                "bundle": bundle_sha256,
                "offset": bundle.offset(c.name),
            }
            for c in item.ciphertexts
        ],
        "tags": [],
        "notes": [],
    }


def _dict(value: object, item: TransferItem, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BundleConflictError(f"submission {item.submission_id}: {what} is not an object")
    return value


KINDS = ("message", "file", "manifest")
INTAKE_MANIFEST_FORMAT = "amanat-manifest/v1"  # dropbox/intake.py MANIFEST_FORMAT


def _json_object(data: bytes) -> dict[str, Any]:
    """The submission manifest written by dropbox/intake.py (format amanat-manifest/v1)."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise BundleConflictError(f"an encrypted submission manifest is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BundleConflictError("an encrypted submission manifest is not a JSON object")
    if value.get("format") != INTAKE_MANIFEST_FORMAT:
        raise BundleConflictError(
            f"unknown submission manifest format {str(value.get('format'))[:40]!r}"
        )
    return value


def _check_message(
    item: TransferItem, intake: dict[str, Any], message: bytes, cts: list[Any]
) -> None:
    """The message ciphertext and the manifest's `message` entry agree, down to the SHA-256."""
    entry = intake.get("message")
    where = f"submission {item.submission_id}"
    if entry is None and not cts:
        return
    if not isinstance(entry, dict) or not cts or entry.get("ciphertext") != cts[0].name:
        raise BundleConflictError(f"{where}: the manifest and the bundle disagree on the message")
    if entry.get("sha256") != hashlib.sha256(message).hexdigest() or entry.get("size") != len(
        message
    ):
        raise BundleConflictError(
            f"{where}: the message does not match the size and SHA-256 recorded at intake"
        )


def _attachments(
    item: TransferItem, intake: dict[str, Any], files: list[Any]
) -> list[dict[str, Any]]:
    """Each `file` ciphertext described exactly once by the manifest's `files` (by name)."""
    entries = intake.get("files") or []
    by_name = {c.name: c for c in files}
    described = [e.get("ciphertext") for e in entries if isinstance(e, dict)]
    if len(described) != len(entries) or sorted(map(str, described)) != sorted(by_name):
        raise BundleConflictError(
            f"submission {item.submission_id}: the manifest's files and the bundle's "
            "file ciphertexts do not match one to one"
        )
    out = []
    for entry in entries:
        size, sha256 = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or not isinstance(sha256, str) or len(sha256) != 64:
            raise BundleConflictError(f"submission {item.submission_id}: bad file entry")
        out.append(
            {
                "name": str(entry.get("filename") or "attachment"),
                "content_type": str(entry.get("content_type") or "application/octet-stream"),
                "size": size,
                "sha256": sha256,
                "field": str(entry.get("field", "")),
                "object": by_name[entry["ciphertext"]].sha256,
            }
        )
    return out


class _HashingReader(io.RawIOBase):
    """Passes reads through and hashes them: the bundle's SHA-256 in the same pass that
    verifies it, so the copy kept in the vault is provably the bytes that were verified."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        return data

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
