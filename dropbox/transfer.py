"""The transfer domain: what leaves the server for the review workstation and what comes back.

- `build_transfer` turns every unacknowledged submission into a transfer manifest (docs/format.md,
  section 5) whose members are the age files in the store; `write_transfer_bundle` streams it to a
  binary stream, signed with the server's transfer key.
- `acknowledge_submissions` records that one investigator holds a list of submissions;
  `settle_acknowledgements` starts the retention of every submission whose acknowledgements meet
  the organization's policy (`[transfer] acknowledgements`: every active investigator, or N of
  them); then `purge_due` deletes the submissions whose retention ran out: rows first
  (committed), files after, so a crash in between leaves only orphan files that
  `db.sweep_orphans` removes at startup; then it truncates the database's write-ahead log, which
  still held the deleted rows. The submission rows go too, so an id acknowledged again later is
  reported as unknown.
- `waiting_status` counts what one investigator's pull would carry, without building it.
- `store_replies` takes a verified reply bundle and stores each age-encrypted reply for its source
  (the server cannot read them: they are encrypted to the source's reply recipient).

Functions take their database session or sessionmaker explicitly; nothing here reads config files.
The transfer signing key file (`[transfer] signing_key`) is written and read by the helpers at the
bottom, the only file formats this module owns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from nacl.signing import SigningKey, VerifyKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import db
from dropbox.store import Store
from keys.age import parse_header
from keys.bundle import (
    BLOCK,
    Ciphertext,
    Kind,
    ReplyManifest,
    TransferItem,
    TransferManifest,
    VerifiedBundle,
    encode_manifest,
    new_bundle_id,
    write_bundle,
)
from keys.errors import AgeError, ConfigError, InputError, TransferError
from keys.files import read_secret, write_new
from keys.keyring import Keyring, encode_key
from keys.manifest import IntakeLimits

TRANSFER_KEY_TAG = "AMANAT-TRANSFER-SIGNING-KEY"
MAX_ACK_IDS = 10_000
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class ReplyRefusedError(TransferError, InputError):
    """A verified reply bundle still cannot be stored here (another instance, unknown source)."""


class AckRefusedError(TransferError, InputError):
    """An acknowledgement list is malformed (not a list of ids, empty, too long)."""


# --- instance id ------------------------------------------------------------------------------


def instance_id(instance_salt: bytes) -> str:
    """This installation's id in bundles: stable for the life of its codenames (the salt), and
    telling nothing about the salt itself."""
    return hashlib.sha256(b"amanat-instance-id/1\0" + instance_salt).hexdigest()[:32]


# --- transfer bundles -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedBundle:
    """A transfer manifest and the exact size of the bundle it makes."""

    manifest: TransferManifest

    @property
    def submission_ids(self) -> list[str]:
        return [item.submission_id for item in self.manifest.items]

    @property
    def size(self) -> int:
        """Bytes `write_bundle` will write: known up front, so HTTP can send Content-Length."""
        members = [len(encode_manifest(self.manifest)), 64]
        members += [size for _, size, _ in self.manifest.files()]
        return sum(BLOCK + size + (-size % BLOCK) for size in members) + 2 * BLOCK


async def build_transfer(
    session: AsyncSession, instance: str, day: str, investigator: str | None = None,
    limits: IntakeLimits | None = None,
) -> PlannedBundle:
    """A manifest of every submission not acknowledged under the policy yet; for an investigator
    (a pull), without those that investigator acknowledged already. `limits` (the intake's) are
    signed into it for the review tool to check submission manifests against."""
    items = []
    for submission in await _waiting(session, investigator):
        if not submission.ciphertexts:
            continue  # nothing left to carry (cannot happen before acknowledgement)
        items.append(
            TransferItem(
                submission_id=submission.id,
                day=submission.day,
                # the random database id: opaque and stable, never the lookup id
                source_id=submission.source_id,
                reply_recipient=submission.source.reply_recipient,
                ciphertexts=tuple(
                    Ciphertext(name=c.name, kind=cast(Kind, c.kind), size=c.size, sha256=c.sha256)
                    for c in submission.ciphertexts
                ),
            )
        )
    manifest = TransferManifest(
        instance_id=instance,
        bundle_id=new_bundle_id(),
        created_day=day,
        items=tuple(items),
        limits=limits,
    )
    return PlannedBundle(manifest)


def write_transfer_bundle(
    out: BinaryIO, planned: PlannedBundle, store: Store, signing_key: SigningKey
) -> int:
    """Stream the signed bundle to `out` (blocking: run it in a thread from async code).

    Each age file is re-hashed as it is copied; a file changed or damaged on disk raises
    BundleHashError before the end-of-archive marker, so the reader sees a refused bundle."""
    with ExitStack() as stack:

        def files() -> Iterator[tuple[str, BinaryIO, int]]:
            for name, size, _ in planned.manifest.files():
                yield name, stack.enter_context(store.open(name)), size

        return write_bundle(out, planned.manifest, files(), signing_key)


async def _waiting(session: AsyncSession, investigator: str | None) -> list[db.Submission]:
    if investigator is None:
        return await db.list_unacknowledged(session)
    return await db.list_waiting_for(session, investigator)


@dataclass(frozen=True)
class WaitingStatus:
    """What one investigator's pull would carry, and what waits on the server besides."""

    submissions: int
    files: int
    bytes: int
    replies: int
    acknowledged_by_me: int
    deleted_by_sources: list[str]  # reply ids of this investigator's replies, never a day

    def as_json(self) -> dict[str, object]:
        return {
            "waiting": {
                "submissions": self.submissions,
                "files": self.files,
                "bytes": self.bytes,
                "replies": self.replies,
            },
            "acknowledged_by_me": self.acknowledged_by_me,
            "replies_deleted_by_sources": self.deleted_by_sources,
        }


async def waiting_status(session: AsyncSession, investigator: str) -> WaitingStatus:
    """Counts, in SQL: nothing is read from the store. `replies` are those stored for sources
    that have not deleted them yet; `deleted_by_sources` names this investigator's replies that
    their sources deleted (that they did, never when)."""
    submissions, files, size = await db.waiting_counts(session, investigator)
    replies = await db.count_replies(session)
    return WaitingStatus(
        submissions=submissions,
        files=files,
        bytes=size,
        replies=replies,
        acknowledged_by_me=await db.acknowledged_by(session, investigator),
        deleted_by_sources=await db.deleted_replies_by(session, investigator),
    )


# --- acknowledgement and retention ------------------------------------------------------------


@dataclass(frozen=True)
class AckPolicy:
    """When a submission counts as acknowledged: `required` investigators (None: every active
    investigator who was in the keyring on the submission's day) hold it. Only acknowledgements
    of active investigators count: a revoked one's copy is no reason to delete ours."""

    required: int | None
    retention_days: int

    def met(self, acknowledged: set[str], keyring: Keyring, day: str) -> bool:
        active = {i.label for i in keyring.active_investigators()}
        counted = acknowledged & active
        if not counted:
            return False
        if self.required is not None:
            return len(counted) >= self.required
        # Someone added after the submission's day cannot open it: do not wait for them.
        expected = {
            i.label for i in keyring.active_investigators() if i.added.isoformat() <= day
        }
        return expected <= counted


@dataclass(frozen=True)
class AckResult:
    acknowledged: list[str]
    already_acknowledged: list[str]
    unknown: list[str]
    deleted: int
    retention_started: list[str]


def parse_ack_ids(document: object) -> list[str]:
    """The submission ids of an acknowledgement body `{"submission_ids": [...]}`."""
    if not isinstance(document, dict) or set(document) != {"submission_ids"}:
        raise AckRefusedError('expected a JSON object {"submission_ids": [ID, ...]}')
    ids = document["submission_ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_ACK_IDS:
        raise AckRefusedError(f"submission_ids must be a list of 1 to {MAX_ACK_IDS} ids")
    for value in ids:
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise AckRefusedError(f"{str(value)[:80]!r} is not a submission id")
    return list(dict.fromkeys(ids))


async def acknowledge_submissions(
    maker: async_sessionmaker[AsyncSession],
    store: Store,
    ids: Sequence[str],
    investigator: str,
    keyring: Keyring,
    policy: AckPolicy,
    day: str,
) -> AckResult:
    """Record that `investigator` holds `ids`, start the retention of every submission that now
    meets the policy, then delete whatever retention allows."""
    async with db.writing(maker) as session:
        newly, already = await db.add_acknowledgements(session, ids, investigator, day)
        started = await settle_acknowledgements(session, keyring, policy, day)
    known = set(newly) | set(already)
    deleted = await purge_due(maker, store, day)
    return AckResult(
        acknowledged=newly,
        already_acknowledged=already,
        unknown=[i for i in ids if i not in known],
        deleted=deleted,
        retention_started=started,
    )


async def settle_acknowledgements(
    session: AsyncSession, keyring: Keyring, policy: AckPolicy, day: str
) -> list[str]:
    """Start the retention (`db.acknowledge`) of every submission whose acknowledgements meet
    the policy under this keyring. Run after each acknowledgement and before each purge: a
    revocation can complete a submission nobody acknowledged today."""
    pending = await db.acknowledgers(session)
    if not pending:
        return []
    days = await db.submission_days(session, pending)
    met = [sid for sid, who in pending.items() if policy.met(who, keyring, days[sid])]
    return await db.acknowledge(session, met, day, policy.retention_days)


async def purge_due(
    maker: async_sessionmaker[AsyncSession], store: Store, day: str
) -> int:
    """Delete acknowledged submissions whose retention ended by `day`, their rows and their
    ciphertexts, and the database journal's copy of those rows. Returns how many files were
    deleted."""
    async with db.writing(maker) as session:
        due = [s.id for s in await db.due_for_deletion(session, day)]
        names = await db.forget_submissions(session, due) if due else []
    # After the commit: a file whose row is gone is an orphan either way.
    for name in names:
        await asyncio.to_thread(store.delete, name)
    if due:
        async with db.write_turn(maker), maker() as session:
            await db.truncate_journal(session)  # a reader in the way: the daily sweep retries
    return len(names)


# --- replies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyResult:
    stored: list[str]
    already_stored: list[str]
    deleted_by_source: list[str]  # pushed again after the source deleted it: not stored again


async def store_replies(
    maker: async_sessionmaker[AsyncSession],
    store: Store,
    bundle: VerifiedBundle,
    instance: str,
    day: str,
) -> ReplyResult:
    """Store every reply of a verified reply bundle for its source, or none of them.

    Checks first (this instance, known sources, each reply to the source's own recipient, each an
    age file), then writes the files, then records them in one transaction. A reply whose
    ciphertext this source already holds is skipped, so pushing a bundle twice is harmless; so
    is a reply its source deleted (pushing the bundle again must not bring it back)."""
    manifest = bundle.manifest
    if not isinstance(manifest, ReplyManifest):
        raise ReplyRefusedError("this is a transfer bundle, not a reply bundle")
    if manifest.instance_id != instance:
        raise ReplyRefusedError("this reply bundle was made for another Amanat instance")
    async with maker() as session:
        held = await _check_reply_targets(session, manifest)
        deleted = set(await db.deleted_replies_by(session, manifest.investigator))
    gone = [r for r in manifest.replies if r.reply_id in deleted]
    new = [r for r in manifest.replies
           if (r.source_id, r.sha256) not in held and r.reply_id not in deleted]
    for reply in new:
        _check_age_file(bundle, reply.name)
    stored = []
    for reply in new:
        store.ensure_room(reply.size)
        async with store.writer() as writer:
            for chunk in bundle.iter_member(reply.name):
                await writer.write(chunk)
            stored.append((reply, await writer.commit()))
    async with db.writing(maker) as session:
        for reply, stored_file in stored:
            await db.add_reply(session, reply.source_id, stored_file, day, reply.investigator,
                               reply.reply_id)
    return ReplyResult(
        stored=[r.reply_id for r in new],
        already_stored=[r.reply_id for r in manifest.replies if r not in new and r not in gone],
        deleted_by_source=[r.reply_id for r in gone],
    )


async def _check_reply_targets(
    session: AsyncSession, manifest: ReplyManifest
) -> set[tuple[str, str]]:
    """Raise unless every reply goes to a known source under its own recipient; returns the
    (source id, sha256) pairs of replies already stored for those sources."""
    held: set[tuple[str, str]] = set()
    for source_id in {r.source_id for r in manifest.replies}:
        source = await session.get(db.Source, source_id)
        if source is None:
            raise ReplyRefusedError(f"no source {source_id!r} on this server")
        for reply in manifest.replies:
            if reply.source_id == source_id and reply.reply_recipient != source.reply_recipient:
                raise ReplyRefusedError(
                    f"reply {reply.reply_id} is not encrypted to its source's reply recipient"
                )
        held.update((source_id, r.sha256) for r in await db.replies_for(session, source_id))
    return held


def _check_age_file(bundle: VerifiedBundle, name: str) -> None:
    head = b""
    for chunk in bundle.iter_member(name):
        head += chunk
        if len(head) >= 64 * 1024:
            break
    try:
        parse_header(head)
    except AgeError as exc:
        raise ReplyRefusedError(f"reply {name} is not an age file: {exc}") from None


# --- the transfer signing key file ------------------------------------------------------------


def format_transfer_key(key: SigningKey) -> bytes:
    """The signing key file: comments, then `AMANAT-TRANSFER-SIGNING-KEY <base64 seed>`."""
    return (
        "# Amanat server transfer signing key (Ed25519). It signs transfer bundles; the review\n"
        "# workstation trusts it once the organization pins its public half in the keyring.\n"
        f"# Public key (amanat keys pin-transfer-key --key): {encode_key(key.verify_key)}\n"
        f"{TRANSFER_KEY_TAG} {base64.b64encode(bytes(key)).decode('ascii')}\n"
    ).encode()


def parse_transfer_key(data: bytes, where: str) -> SigningKey:
    lines = [
        line.strip()
        for line in data.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(lines) != 1 or not lines[0].startswith(TRANSFER_KEY_TAG + " "):
        raise ConfigError(f"{where} is not a transfer signing key file")
    try:
        seed = base64.b64decode(lines[0][len(TRANSFER_KEY_TAG) + 1 :], validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(f"{where}: the transfer signing key is damaged")
    return SigningKey(seed)


def create_transfer_key(path: Path) -> SigningKey:
    """Generate a key and write it to a new file, mode 0600 (never overwriting one)."""
    key = SigningKey.generate()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_new(path, format_transfer_key(key), secret=True)
    return key


def load_transfer_key(path: Path | None, keyring: Keyring) -> SigningKey:
    """The server's transfer key, which must be the one the keyring pins (else the review tool
    would refuse every bundle, and a wrongly pinned key deserves a clear error here)."""
    if path is None:
        raise ConfigError(
            "[transfer] signing_key is not set; create one with `amanat transfer init-key`"
        )
    if not path.exists():
        raise ConfigError(
            f"the transfer signing key {path} does not exist; create it with "
            "`amanat transfer init-key`"
        )
    key = parse_transfer_key(read_secret(path, "transfer signing key"), str(path))
    check_pinned(key.verify_key, keyring)
    return key


def check_pinned(verify_key: VerifyKey, keyring: Keyring) -> None:
    pinned = keyring.transfer_verify_key
    if pinned is None:
        raise ConfigError(
            "the keyring pins no transfer key: the organization must run "
            f"`amanat keys pin-transfer-key --key {encode_key(verify_key)}` and copy the keyring"
        )
    if bytes(pinned) != bytes(verify_key):
        raise ConfigError(
            "the keyring pins a different transfer key than [transfer] signing_key holds; "
            f"pin {encode_key(verify_key)} or restore the key the keyring names"
        )
