"""`reply SOURCE`: an encrypted, signed reply bundle for `amanat transfer push` to carry.

The reply is an age file whose plaintext is the UTF-8 message, encrypted to the source's reply
recipient (from the submissions it sent) and to every active investigator, so the team can read
what was said. The bundle (docs/format.md, section 5) is signed with this investigator's key; the
server checks it against the keyring. A copy of the ciphertext stays in the vault.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path

from keys.age import X25519Recipient, encrypt
from keys.bundle import Reply, ReplyManifest, write_bundle
from keys.errors import ConfigError, InputError, NoIdentityMatchError
from keys.files import replace_atomic
from keys.keyring import Investigator
from review.state import ObjectRef, ReplyRecord, SubmissionRecord
from review.vault import UnknownItemError, Vault, today

MAX_REPLY_CHARS = 20_000


class ReplyTextError(InputError):
    """The reply's text is empty or too long."""


def _latest_from(vault: Vault, source_id: str) -> SubmissionRecord:
    subs = [s for s in vault.submissions.values() if s["source"] == source_id]
    if not subs:
        raise UnknownItemError(f"no submission in this vault comes from source {source_id!r}")
    return max(subs, key=lambda s: (s["day"], s["imported_at"]))


def _check_text(message: str) -> bytes:
    if not message.strip():
        raise ReplyTextError("a reply needs a message")
    if len(message) > MAX_REPLY_CHARS:
        raise ReplyTextError(f"a reply is at most {MAX_REPLY_CHARS} characters")
    return message.encode("utf-8")


def _signer(vault: Vault) -> Investigator:
    me = vault.keyring.investigator_by_verify_key(vault.investigator.signing_key.verify_key)
    if me is None:
        raise ConfigError(
            "this investigator is revoked or not in the keyring: replies would be refused"
        )
    return me


def make_reply(vault: Vault, source_id: str, message: str, outbox: Path) -> Path:
    """Write `outbox/reply-<bundle id>.tar` and record the reply; returns the bundle path."""
    plaintext = _check_text(message)
    me = _signer(vault)
    latest = _latest_from(vault, source_id)
    recipients = [
        X25519Recipient.parse(latest["reply_recipient"]),
        *vault.keyring.active_recipients(),
    ]
    ciphertext = encrypt(plaintext, recipients)
    reply_id = secrets.token_hex(16)
    reply = Reply(
        reply_id=reply_id,
        source_id=source_id,
        reply_recipient=latest["reply_recipient"],
        name=f"{reply_id}.age",
        size=len(ciphertext),
        sha256=hashlib.sha256(ciphertext).hexdigest(),
        investigator=me.label,
        day=today(),
    )
    manifest = ReplyManifest(latest["instance"], secrets.token_hex(16), today(), me.label, (reply,))
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"reply-{manifest.bundle_id}.tar"
    replace_atomic(path, _signed_bundle(vault, manifest, ciphertext), secret=True)
    _record(vault, latest, manifest, ciphertext)
    return path


def _signed_bundle(vault: Vault, manifest: ReplyManifest, ciphertext: bytes) -> bytes:
    (reply,) = manifest.replies
    out = io.BytesIO()
    members = [(reply.name, io.BytesIO(ciphertext), len(ciphertext))]
    write_bundle(out, manifest, members, vault.investigator.signing_key)
    return out.getvalue()


def _record(
    vault: Vault, latest: SubmissionRecord, manifest: ReplyManifest, ciphertext: bytes
) -> None:
    """Keep a copy of the ciphertext and log the reply in the vault (saved)."""
    (reply,) = manifest.replies
    record: ReplyRecord = {
        "reply_id": reply.reply_id,
        "source": reply.source_id,
        "instance": latest["instance"],
        "day": reply.day,
        "by": reply.investigator,
        "sha256": reply.sha256,
        "size": reply.size,
        "bundle_id": manifest.bundle_id,
    }
    vault.add_reply(record, latest["id"], ciphertext)


def sent_replies(vault: Vault, source_id: str) -> list[tuple[ReplyRecord, str | None]]:
    """The replies sent to a source, oldest first, each with its text as this investigator reads
    it from the vault's copy (None when the reply was not encrypted to this key: an investigator
    added to the keyring later)."""
    found = []
    for reply in vault.replies:
        if reply["source"] != source_id:
            continue
        ct: ObjectRef = {"sha256": reply["sha256"], "size": reply["size"]}
        try:
            text: str | None = b"".join(vault.decrypt_ciphertext(ct)).decode("utf-8", "replace")
        except NoIdentityMatchError:
            text = None
        found.append((reply, text))
    return found
