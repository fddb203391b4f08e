"""Builders shared by the review tool tests and bench/bench_review.py (no tests in here).

They make what the server would: an org keyring with a pinned transfer key, investigator identity
files, submissions encrypted with keys/age.py exactly in the shape dropbox/intake.py writes (a
message, one age file per upload, an encrypted JSON manifest), and signed transfer bundles made
with keys/bundle.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from keys.age import X25519Identity, X25519Recipient, encrypt
from keys.bundle import Ciphertext, TransferItem, TransferManifest, write_bundle
from keys.identity_file import InvestigatorSecrets, protect_identity
from keys.keyring import Keyring, format_org_public_key, sign_keyring
from keys.manifest import IntakeLimits
from review.vault import STATE_FORMAT, Vault

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"
DAY = "2026-11-20"


@dataclass
class Org:
    org_key: SigningKey
    transfer_key: SigningKey
    investigators: list[InvestigatorSecrets]
    keyring: Keyring

    @property
    def keyring_doc(self) -> bytes:
        return sign_keyring(self.keyring, self.org_key)

    @property
    def org_pub_doc(self) -> bytes:
        return format_org_public_key(self.org_key.verify_key)

    def recipients(self) -> list[X25519Recipient]:
        return self.keyring.active_recipients()


def make_org(labels: tuple[str, ...] = ("Alice", "Bob")) -> Org:
    org_key, transfer_key = SigningKey.generate(), SigningKey.generate()
    people = [InvestigatorSecrets.generate(label) for label in labels]
    keyring = Keyring(
        version=3,
        org_verify_key=org_key.verify_key,
        investigators=tuple(p.public_entry(date(2026, 11, 1)) for p in people),
        transfer_verify_key=transfer_key.verify_key,
    )
    return Org(org_key, transfer_key, people, keyring)


@dataclass
class Submission:
    message: str
    answers: dict[str, object] = field(default_factory=dict)
    files: list[tuple[str, bytes, str]] = field(default_factory=list)  # name, data, content type
    source_id: str = "src0"
    day: str = DAY
    submission_id: str = field(default_factory=lambda: secrets.token_hex(16))
    reply_identity: X25519Identity = field(default_factory=X25519Identity.generate)
    wrong_sha256_for: str | None = None  # record a wrong intake hash for this file name
    tamper: Callable[[dict[str, Any]], None] | None = None  # edit the manifest before encryption
    consents: tuple[str, ...] = ()  # the uses ticked in the questionnaire's consent field


def encrypt_submission(
    sub: Submission, recipients: list[X25519Recipient]
) -> tuple[TransferItem, dict[str, bytes]]:
    """The item and its ciphertexts, as the server's intake would have stored them."""
    blobs: dict[str, bytes] = {}
    cts: list[Ciphertext] = []

    def add(kind: str, plaintext: bytes) -> str:  # returns the ciphertext's member name
        data = encrypt(plaintext, recipients)
        name = f"{secrets.token_hex(12)}.age"
        blobs[name] = data
        cts.append(Ciphertext(name, kind, len(data), hashlib.sha256(data).hexdigest()))  # type: ignore[arg-type]
        return name

    message = sub.message.encode("utf-8")

    def describe(
        field: str, filename: str, content_type: str, data: bytes, name: str
    ) -> dict[str, object]:
        return {
            "field": field,
            "filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "ciphertext": name,
        }

    message_entry = (
        describe("message", "", "text/plain", message, add("message", message)) if message else None
    )
    entries = []
    for filename, data, content_type in sub.files:
        entry = describe("files", filename, content_type, data, add("file", data))
        if sub.wrong_sha256_for == filename:
            entry["sha256"] = hashlib.sha256(data + b"x").hexdigest()
        entries.append(entry)
    # The shape dropbox/intake.py's manifest() writes (format amanat-manifest/v1).
    manifest = {
        "format": "amanat-manifest/v1",
        "received_day": sub.day,
        "message": message_entry,
        "files": entries,
        "answers": {k: v if isinstance(v, list) else [v] for k, v in sub.answers.items()},
        "questionnaire": {
            "questionnaire": "test",
            "version": 1,
            "locale": "fa",
            "answers": [
                {"key": f"q{n}", "type": "text", "question": f"Question {k}?", "value": v}
                for n, (k, v) in enumerate(sub.answers.items())
            ] + [
                {"key": "consent_uses", "type": "consent", "question": "How may we use it?",
                 "value": {p: p in sub.consents for p in ("advocacy", "referral", "legal")}}
            ] * bool(sub.consents),
        },
    }
    if sub.tamper:
        sub.tamper(manifest)
    add("manifest", json.dumps(manifest, ensure_ascii=False).encode("utf-8"))
    item = TransferItem(
        submission_id=sub.submission_id,
        day=sub.day,
        source_id=sub.source_id,
        reply_recipient=str(sub.reply_identity.recipient()),
        ciphertexts=tuple(cts),
    )
    return item, blobs


def build_bundle(
    org: Org,
    subs: list[Submission],
    *,
    bundle_id: str | None = None,
    key: SigningKey | None = None,
    instance: str = "inst1",
    recipients: list[X25519Recipient] | None = None,
    limits: IntakeLimits | None = None,
) -> bytes:
    """A transfer bundle signed like the server's (a compromised server signs anything)."""
    items, blobs = [], {}
    for sub in subs:
        item, item_blobs = encrypt_submission(sub, recipients or org.recipients())
        items.append(item)
        blobs.update(item_blobs)
    manifest = TransferManifest(
        instance, bundle_id or secrets.token_hex(16), DAY, tuple(items), limits
    )
    out = io.BytesIO()
    files = [(n, io.BytesIO(blobs[n]), len(blobs[n])) for n, _, _ in manifest.files()]
    write_bundle(out, manifest, files, key or org.transfer_key)
    return out.getvalue()


def make_vault(tmp: Path, org: Org, who: int = 0) -> tuple[Path, Path]:
    """An initialised vault via the real CLI; returns (vault dir, passphrase file)."""
    identity = tmp / f"identity-{who}.age"
    identity.write_bytes(protect_identity(org.investigators[who], PASSPHRASE, work_factor=10))
    (tmp / "keyring.json").write_bytes(org.keyring_doc)
    (tmp / "org.pub").write_bytes(org.org_pub_doc)
    passfile = tmp / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    vault = tmp / f"vault-{who}"
    result = review(
        "init",
        "--vault",
        vault,
        "--passphrase-file",
        passfile,
        "--identity",
        identity,
        "--keyring",
        tmp / "keyring.json",
        "--org-pub",
        tmp / "org.pub",
    )
    assert result.returncode == 0, result.stderr
    return vault, passfile


def review(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `amanat-review` CLI in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "review.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (except the lock) and its SHA-256: "nothing changed" checks."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def rewrite_state(
    root: Path, change: Callable[[dict[str, Any]], None], fmt: str = STATE_FORMAT
) -> None:
    """Change a closed vault's state behind the tool's back, as an older version (or damage)
    would have left it: decrypted, changed by `change`, signed and encrypted again. The vault
    itself offers no way to do this: its state is read-only outside its methods."""
    with Vault.open(root, PASSPHRASE.encode()) as vault:
        state = json.loads(vault.document())
        change(state)
        body = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode()
        signature = vault.investigator.signing_key.sign(body).signature
        plaintext = f"{fmt}\n".encode() + base64.b64encode(signature) + b"\n" + body
        data = encrypt(plaintext, [vault.identity.recipient()])
    (root / "state.age").write_bytes(data)
