"""`import BUNDLE`: verify a transfer bundle whole, then add its submissions to the vault.

Order matters: `keys.bundle.read_bundle` checks the structure, the transfer-key signature and every
ciphertext hash before anything is written; then the bundle id is checked against the ones already
imported (a replay is refused); then each new submission's message and encrypted manifest are
opened in memory and checked (review/content.py: the keys/manifest.py schema within the limits
the bundle signs, and agreement with the bundle); only then is the bundle stored and the state
saved. If any step fails, the objects this import added are removed and the state is left as it
was. A signed bundle can still be crafted (the server holds the signing key): a submission that
does not conform is quarantined (kept, with the reason, never shown), the others import.
Each attachment's metadata is read in the sandbox (review/metadata.py); a file that defeats the
parser gets an "unreadable" finding and still imports.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypedDict, cast

from keys.age import decrypt_iter
from keys.bundle import (
    BundleError,
    TransferItem,
    TransferManifest,
    VerifiedBundle,
    read_bundle,
    transfer_key_lookup,
)
from keys.errors import ConfigError
from keys.manifest import DEFAULT_LIMITS
from review.content import NonConformingItemError, open_content, summary
from review.metadata import read_files
from review.sandbox import Sandbox, detect
from review.state import BundleRecord, CiphertextRecord, SubmissionRecord
from review.vault import Vault, now

Progress = Callable[[int, int], None]


class BundleReplayError(BundleError):
    """This bundle (by its id) was imported before."""


class BundleConflictError(BundleError):
    """The bundle's content contradicts what the vault already holds or what the item says."""


class ImportSummary(TypedDict):
    bundle_id: str
    imported: int
    skipped: int
    quarantined: dict[str, str]
    sandbox_warning: str | None


def import_bundle(vault: Vault, path: Path, progress: Progress | None = None) -> ImportSummary:
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
        sandbox = detect()
        records: dict[str, SubmissionRecord] = {}
        for n, item in enumerate(new_items):
            records[item.submission_id] = _open_item(
                vault, bundle, manifest, item, bundle_sha256, sandbox
            )
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
        "quarantined": {sid: q for sid, r in records.items() if (q := r.get("quarantine"))},
        "sandbox_warning": sandbox.warning if new_items else None,
    }


def _record(
    vault: Vault,
    manifest: TransferManifest,
    records: dict[str, SubmissionRecord],
    bundle_sha256: str,
) -> None:
    """Add the new submissions, the bundle id (for replay checks) and a custody entry; save."""
    bundle: BundleRecord = {
        "limits": (manifest.limits or DEFAULT_LIMITS).to_json(),
        "instance": manifest.instance_id,
        "created_day": manifest.created_day,
        "imported_at": now(),
        "sha256": bundle_sha256,
        "items": len(manifest.items),
        "new": len(records),
    }
    vault.add_import(
        manifest.bundle_id,
        bundle,
        records,
        bundle_sha256=bundle_sha256,
        instance=manifest.instance_id,
        skipped=len(manifest.items) - len(records),
    )


def _refuse_replay(vault: Vault, manifest: TransferManifest) -> None:
    seen = vault.bundles.get(manifest.bundle_id)
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
        known = vault.submissions.get(item.submission_id)
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
    sandbox: Sandbox,
) -> SubmissionRecord:
    """The vault's record of one submission: what the signed bundle says, plus a summary of its
    decrypted content (`readable: False` if not encrypted to us) and its attachments' metadata.
    An item whose content breaks the schema is kept, quarantined, with the reason: the rest of
    the bundle still imports."""
    record = _record_skeleton(bundle, manifest, item, bundle_sha256)

    def read(ct: CiphertextRecord) -> Iterator[bytes]:
        return bundle.iter_member(ct["name"])

    limits = manifest.limits or DEFAULT_LIMITS
    try:
        content = open_content(read, vault.identity, record["ciphertexts"], limits)
    except NonConformingItemError as exc:
        return {**record, "readable": True, "quarantine": str(exc)}
    if content is None:
        return {**record, **summary(None)}
    files = read_files(
        sandbox, content.attachments, lambda ct: decrypt_iter(read(ct), [vault.identity])
    )
    return {**record, **summary(content), "files": files}


def _record_skeleton(
    bundle: VerifiedBundle, manifest: TransferManifest, item: TransferItem, bundle_sha256: str
) -> SubmissionRecord:
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
