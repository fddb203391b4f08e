"""The review vault: one folder on the offline workstation, readable only with the passphrase.

    VAULT/
      vault.json      {"format": "amanat-review-vault/1"}: marks the folder as a vault
      identity.age    the investigator identity file (age, scrypt passphrase), as issued
      keyring.json    the org-signed keyring; org.pub the organization key it must verify with
      state.age       the index: submissions, messages, answers, tags, notes, imported bundle ids,
                      replies and the chain-of-custody log, as JSON encrypted to the investigator's
                      own recipient and signed inside the encryption with their Ed25519 key
      objects/ab/<sha256>.age   every ciphertext exactly as it arrived (age files), by SHA-256
      .lock           held (flock) by whichever command has the vault open

Nothing in the folder is plaintext testimony. Writes go to a temporary name, are fsynced, then
renamed over the old file, so a crash leaves the previous state.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from keys.age import X25519Identity, decrypt, decrypt_iter, encrypt
from keys.errors import AgeError, ConfigError, InputError, StorageError
from keys.identity_file import InvestigatorSecrets, open_identity
from keys.keyring import Keyring, encode_key, load_keyring, parse_org_public_key

VAULT_FORMAT = "amanat-review-vault/1"
STATE_FORMAT = "amanat-review-state/1"
STATE_MAGIC = STATE_FORMAT.encode() + b"\n"
GENESIS = "0" * 64
CHUNK = 64 * 1024


class VaultError(StorageError):
    """The vault folder is missing, not a vault, busy, or could not be written."""


class VaultIntegrityError(InputError):
    """Something in the vault does not verify: the state signature, an object hash, the log."""


class UnknownItemError(InputError):
    """No submission or source with the id given."""


def now() -> str:
    """Custody timestamps: UTC to the second (the workstation is offline and trusted)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, body_sha256: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(body_sha256)).hexdigest()


def custody_body(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("prev", "hash")}


def verify_chain(entries: list[dict[str, Any]]) -> None:
    """Check every custody entry links to the one before; redacted entries carry body_sha256."""
    prev = GENESIS
    for n, entry in enumerate(entries):
        if entry.get("seq") != n or entry.get("prev") != prev:
            raise VaultIntegrityError(f"custody log entry {n} does not follow entry {n - 1}")
        if entry.get("redacted"):
            body_sha = str(entry.get("body_sha256", ""))
        else:
            body_sha = hashlib.sha256(canonical(custody_body(entry))).hexdigest()
        if len(body_sha) != 64 or entry_hash(prev, body_sha) != entry.get("hash"):
            raise VaultIntegrityError(f"custody log entry {n} was altered")
        prev = entry["hash"]


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _empty_state(org_pub: VerifyKey, keyring: Keyring) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "org_pub": encode_key(org_pub),
        "keyring_version": keyring.version,
        "submissions": {},
        "bundles": {},
        "replies": [],
        "custody": [],
    }


class Vault:
    """An open vault. Use as a context manager: it holds the vault lock until closed."""

    def __init__(
        self,
        root: Path,
        investigator: InvestigatorSecrets,
        keyring: Keyring,
        state: dict[str, Any],
        lock: BinaryIO,
    ) -> None:
        self.root = root
        self.investigator = investigator
        self.keyring = keyring
        self.state = state
        self._lock = lock

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls, root: Path, identity: bytes, keyring_doc: bytes, org_pub_doc: bytes, passphrase: bytes
    ) -> Vault:
        """Make a new vault after checking the passphrase, the keyring and our place in it."""
        investigator = open_identity(identity, passphrase)
        org_pub = parse_org_public_key(org_pub_doc)
        keyring = load_keyring(keyring_doc, org_pub)
        _check_membership(keyring, investigator)
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"{root} exists and is not empty: refusing to create a vault there")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / "objects").mkdir(mode=0o700)
        write_atomic(root / "identity.age", [identity])
        write_atomic(root / "keyring.json", [keyring_doc])
        write_atomic(root / "org.pub", [org_pub_doc])
        vault = cls(root, investigator, keyring, _empty_state(org_pub, keyring), _take_lock(root))
        vault.log("init", [], recipient=str(investigator.identity.recipient()))
        vault.save()
        write_atomic(root / "vault.json", [canonical({"format": VAULT_FORMAT})])
        return vault

    @classmethod
    def open(cls, root: Path, passphrase: bytes) -> Vault:
        marker = root / "vault.json"
        try:
            fmt = json.loads(marker.read_bytes()).get("format")
        except (OSError, ValueError, AttributeError):
            raise VaultError(f"{root} is not an amanat-review vault (run `init` first)") from None
        if fmt != VAULT_FORMAT:
            raise VaultError(f"{root}: unknown vault format {fmt!r}")
        lock = _take_lock(root)
        try:
            investigator = open_identity((root / "identity.age").read_bytes(), passphrase)
            state = _read_state(root / "state.age", investigator)
            org_pub = parse_org_public_key((root / "org.pub").read_bytes())
            if encode_key(org_pub) != state["org_pub"]:
                raise VaultIntegrityError("org.pub in the vault is not the key pinned at init")
            keyring = load_keyring(
                (root / "keyring.json").read_bytes(), org_pub, state["keyring_version"]
            )
        except BaseException:
            lock.close()
            raise
        return cls(root, investigator, keyring, state, lock)

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._lock.close()

    # --- state -------------------------------------------------------------------------------

    @property
    def identity(self) -> X25519Identity:
        return self.investigator.identity

    @property
    def label(self) -> str:
        return self.investigator.label

    def save(self) -> None:
        body = json.dumps(self.state, ensure_ascii=False, separators=(",", ":")).encode()
        signature = self.investigator.signing_key.sign(body).signature
        plaintext = STATE_MAGIC + base64.b64encode(signature) + b"\n" + body
        recipient = self.identity.recipient()
        write_atomic(self.root / "state.age", [encrypt(plaintext, [recipient])])

    def submission(self, sid: str) -> dict[str, Any]:
        found: dict[str, Any] | None = self.state["submissions"].get(sid)
        if found is None:
            raise UnknownItemError(f"no submission with id {sid!r} in this vault")
        return found

    def log(self, action: str, subjects: list[str], **details: Any) -> None:
        """Append a hash-chained chain-of-custody entry (saved with the next `save`)."""
        custody: list[dict[str, Any]] = self.state["custody"]
        prev = custody[-1]["hash"] if custody else GENESIS
        entry: dict[str, Any] = {
            "seq": len(custody),
            "at": now(),
            "by": self.label,
            "action": action,
            "subjects": subjects,
            "details": details,
        }
        body_sha = hashlib.sha256(canonical(entry)).hexdigest()
        entry["prev"] = prev
        entry["hash"] = entry_hash(prev, body_sha)
        custody.append(entry)

    # --- objects -----------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise VaultIntegrityError(f"not a SHA-256: {sha256[:80]!r}")
        return self.root / "objects" / sha256[:2] / f"{sha256}.age"

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def write_object(self, sha256: str, chunks: Iterable[bytes]) -> None:
        """Store a ciphertext under its SHA-256, checking the hash before the final rename."""
        path = self.object_path(sha256)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk
            if digest.hexdigest() != sha256:
                raise VaultIntegrityError(f"ciphertext {sha256} changed while being stored")

        write_atomic(path, hashed())

    def read_object(self, sha256: str) -> Iterator[bytes]:
        with open(self.object_path(sha256), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def decrypt_object(self, sha256: str) -> Iterator[bytes]:
        """Plaintext chunks; an exception at any point means the whole object failed."""
        return decrypt_iter(self.read_object(sha256), [self.identity])

    def hash_object(self, sha256: str) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        for chunk in self.read_object(sha256):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()


def _take_lock(root: Path) -> BinaryIO:
    lock = open(root / ".lock", "ab")  # noqa: SIM115 - held for the vault's lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise VaultError(f"{root} is in use by another amanat-review command") from None
    return lock


def _read_state(path: Path, investigator: InvestigatorSecrets) -> dict[str, Any]:
    try:
        plaintext = decrypt(path.read_bytes(), [investigator.identity])
    except OSError as exc:
        raise VaultError(f"cannot read {path}: {exc.strerror}") from None
    except AgeError as exc:
        raise VaultIntegrityError(f"{path} does not open with this identity: {exc}") from None
    magic, _, rest = plaintext.partition(b"\n")
    sig_b64, _, body = rest.partition(b"\n")
    if magic + b"\n" != STATE_MAGIC:
        raise VaultIntegrityError(f"{path} is not a vault state of format {STATE_FORMAT}")
    try:
        investigator.signing_key.verify_key.verify(body, base64.b64decode(sig_b64))
        state: dict[str, Any] = json.loads(body)
    except (BadSignatureError, ValueError):
        raise VaultIntegrityError(f"{path} is not signed by this investigator: altered") from None
    return state


def _check_membership(keyring: Keyring, investigator: InvestigatorSecrets) -> None:
    me = keyring.investigator_by_verify_key(investigator.signing_key.verify_key)
    if me is None or str(me.recipient) != str(investigator.identity.recipient()):
        raise ConfigError(
            f"identity {investigator.label!r} is not an active investigator in this keyring"
        )


def verify_vault(
    vault: Vault, progress: Callable[[int, int], None] | None = None
) -> tuple[int, list[str]]:
    """Re-hash every ciphertext the state refers to, check the custody chain, and look for
    objects nobody refers to. The state signature was checked when the vault was opened."""
    expected: dict[str, int] = {}
    for sub in vault.state["submissions"].values():
        for ct in sub["ciphertexts"]:
            expected[ct["sha256"]] = ct["size"]
    for reply in vault.state["replies"]:
        expected.setdefault(reply["sha256"], -1)
    problems = []
    for n, (sha, size) in enumerate(sorted(expected.items())):
        try:
            got_size, got_sha = vault.hash_object(sha)
        except OSError as exc:
            problems.append(f"ciphertext {sha} is missing or unreadable ({exc.strerror})")
        else:
            if got_sha != sha or (size >= 0 and got_size != size):
                problems.append(f"ciphertext {sha} was altered (now {got_size} bytes, {got_sha})")
        if progress:
            progress(n + 1, len(expected))
    try:
        verify_chain(vault.state["custody"])
    except VaultIntegrityError as exc:
        problems.append(str(exc))
    for path in sorted((vault.root / "objects").glob("*/*")):
        if path.name.removesuffix(".age") not in expected:
            problems.append(f"unexpected file in the vault: {path.relative_to(vault.root)}")
    return len(expected), problems
