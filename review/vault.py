"""The review vault: one folder on the offline workstation, readable only with the passphrase.

    VAULT/
      vault.json      {"format": "amanat-review-vault/1"}: marks the folder as a vault
      identity.age    the investigator identity file (age, scrypt passphrase), as issued
      keyring.json    the org-signed keyring; org.pub the organization key it must verify with
      state.age       the index: per submission what the signed bundle says, a short excerpt and
                      counts, the queue's triage answers (urgency, groups at risk, consented
                      uses: option values only), tags, notes; imported bundle ids and their
                      signed limits, replies and the chain-of-custody log, as JSON encrypted to
                      the investigator's own recipient and signed inside the encryption with
                      their Ed25519 key. Messages and answers are not in it: they stay the age
                      files the server sent, in the stored bundle, and are decrypted when shown
                      (review/content.py)
      bundles/<sha256>.tar      every imported transfer bundle, byte for byte as verified: the
                                server's signed evidence; ciphertexts are read from it by offset
      objects/ab/<sha256>.age   ciphertexts made here (replies), by SHA-256
      search.age      the text `search` looks through, encrypted to ourselves (rebuilt from the
                      bundles whenever it is missing or not the one the state names)
      .lock           held (flock) by whichever command has the vault open

Nothing in the folder is plaintext testimony. Writes go to a temporary name, are fsynced, then
renamed over the old file, so a crash leaves the previous state.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, BinaryIO

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from keys.age import X25519Identity, decrypt, decrypt_iter, encrypt
from keys.errors import AgeError, ConfigError, InputError, KeyringForkError, StorageError
from keys.files import replace_atomic
from keys.identity_file import InvestigatorSecrets, open_identity
from keys.keyring import Keyring, encode_key, load_keyring, parse_org_public_key
from keys.sanitize import clean
from review.content import (
    Content,
    NonConformingItemError,
    limits_of,
    open_content,
    search_text,
    summary,
)
from review.queue import triage
from review.state import (
    BundleRecord,
    CiphertextRecord,
    CustodyEntry,
    FrozenDict,
    Note,
    ObjectRef,
    ReplyRecord,
    SubmissionRecord,
    VaultState,
    check_state,
    freeze,
)

VAULT_FORMAT = "amanat-review-vault/1"
STATE_FORMAT = "amanat-review-state/2"
STATE_MAGIC = STATE_FORMAT.encode() + b"\n"
# Format 1 kept every message, answer and attachment list inline; opening such a vault migrates
# it (`_migrate_v1`) and saves it as format 2.
STATE_FORMAT_V1 = "amanat-review-state/1"
GENESIS = "0" * 64
SEARCH_CACHE = "search.age"
CHUNK = 64 * 1024
MAX_TAG_CHARS = 64
MAX_NOTE_CHARS = 20_000


class VaultError(StorageError):
    """The vault folder is missing, not a vault, busy, or could not be written."""


class VaultIntegrityError(InputError):
    """Something in the vault does not verify: the state signature, an object hash, the log."""


class UnknownItemError(InputError):
    """No submission or source with the id given."""


class NoteTextError(InputError):
    """A note is empty or too long."""


def now() -> str:
    """Custody timestamps: UTC to the second (the workstation is offline and trusted)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev: str, body_sha256: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(body_sha256)).hexdigest()


def custody_body(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("prev", "hash")}


def verify_chain(entries: Sequence[Mapping[str, Any]]) -> None:
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


def _empty_state(org_pub: VerifyKey, keyring: Keyring) -> VaultState:
    return {
        "format": STATE_FORMAT,
        "org_pub": encode_key(org_pub),
        "keyring_version": keyring.version,
        "keyring_fingerprint": keyring.fingerprint(),
        "submissions": {},
        "bundles": {},
        "replies": [],
        "custody": [],
    }


class Vault:
    """An open vault. Use as a context manager: it holds the vault lock until closed.

    The state (review/state.py) is private: others read it through read-only views
    (`submissions`, `bundles`, `replies`, `custody`) and change it only through the methods
    below, each of which writes its custody entry and saves."""

    def __init__(
        self,
        root: Path,
        investigator: InvestigatorSecrets,
        keyring: Keyring,
        state: VaultState,
        lock: BinaryIO,
    ) -> None:
        self.root = root
        self.investigator = investigator
        self.keyring = keyring
        self._state = state
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
        replace_atomic(root / "identity.age", identity, secret=True)
        replace_atomic(root / "keyring.json", keyring_doc, secret=True)
        replace_atomic(root / "org.pub", org_pub_doc, secret=True)
        vault = cls(root, investigator, keyring, _empty_state(org_pub, keyring), _take_lock(root))
        vault._log("init", [], recipient=str(investigator.identity.recipient()))
        vault._save()
        replace_atomic(root / "vault.json", canonical({"format": VAULT_FORMAT}), secret=True)
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
            state = check_state(_drop_inline(_read_state(root / "state.age", investigator)))
            org_pub = parse_org_public_key((root / "org.pub").read_bytes())
            if encode_key(org_pub) != state["org_pub"]:
                raise VaultIntegrityError("org.pub in the vault is not the key pinned at init")
            adopted = (state["keyring_version"], state.get("keyring_fingerprint", ""))
            try:
                keyring = load_keyring((root / "keyring.json").read_bytes(), org_pub, *adopted)
            except KeyringForkError as exc:
                raise VaultIntegrityError(
                    f"keyring.json is not the keyring this vault adopted ({exc}): put back the "
                    "organization's keyring.json of that version"
                ) from None
        except BaseException:
            lock.close()
            raise
        vault = cls(root, investigator, keyring, state, lock)
        if state.get("format") == STATE_FORMAT_V1:
            try:
                vault._migrate_v1()
            except BaseException:
                lock.close()
                raise
        return vault

    def _migrate_v1(self) -> None:
        """Format 1 -> 2 (the inline messages, answers and attachment lists were dropped on
        load: `_drop_inline`): re-check every submission against the strict schema
        (quarantining what fails), and save."""
        for sub in list(self._state["submissions"].values()):
            if not sub.get("readable", True):
                self._put({**sub, **summary(None)})
                continue
            try:
                self._put({**sub, **summary(self._open_content(sub))})
            except NonConformingItemError as exc:
                self._put({**sub, "readable": True, "quarantine": str(exc)})
            except (OSError, VaultIntegrityError) as exc:  # `verify` says more
                self._put({**sub, "readable": True,
                           "quarantine": f"unreadable in the vault: {exc}"})
        self._state["format"] = STATE_FORMAT
        self._log("migrate", [], to=STATE_FORMAT)
        self._save()

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

    @property
    def submissions(self) -> Mapping[str, SubmissionRecord]:
        """Every submission by id (a read-only view)."""
        return MappingProxyType(self._state["submissions"])

    @property
    def bundles(self) -> Mapping[str, BundleRecord]:
        """Every imported transfer bundle by bundle id (a read-only view)."""
        return MappingProxyType(self._state["bundles"])

    @property
    def replies(self) -> Sequence[ReplyRecord]:
        return tuple(self._state["replies"])

    @property
    def custody(self) -> Sequence[CustodyEntry]:
        return tuple(self._state["custody"])

    def document(self) -> bytes:
        """The state as it is saved (JSON), signed and encrypted into state.age."""
        return json.dumps(self._state, ensure_ascii=False, separators=(",", ":")).encode()

    def _save(self) -> None:
        body = self.document()
        signature = self.investigator.signing_key.sign(body).signature
        plaintext = STATE_MAGIC + base64.b64encode(signature) + b"\n" + body
        recipient = self.identity.recipient()
        replace_atomic(self.root / "state.age", encrypt(plaintext, [recipient]), secret=True)

    def update_keyring(self, document: bytes) -> tuple[int, Keyring]:
        """Adopt a newer org-signed keyring (revocations, new investigators, a rotated transfer
        key); returns the version replaced and the keyring now in force.

        Refused: a keyring that does not verify against the org key pinned at init, one older
        than the vault's, one with the vault's version but other content (a second document
        under one version number is a signer's mistake or a swap), and one in which this
        investigator is no longer active. keyring.json is written before the state that records
        its version, so a crash in between leaves a vault that still opens."""
        current = self.keyring
        keyring = load_keyring(
            document, current.org_verify_key, current.version, current.fingerprint()
        )
        _check_membership(keyring, self.investigator)
        replace_atomic(self.root / "keyring.json", document, secret=True)
        self.keyring = keyring
        self._state["keyring_version"] = keyring.version
        self._state["keyring_fingerprint"] = keyring.fingerprint()
        self._log("keyring", [], version=keyring.version, fingerprint=keyring.fingerprint())
        self._save()
        return current.version, keyring

    def content(self, sub: SubmissionRecord) -> Content:
        """A readable, conforming submission's message, answers and attachments, decrypted from
        the stored bundle and checked again (it was checked on import)."""
        if not sub.get("readable", True):
            raise UnknownItemError(
                f"submission {sub['id']} was not encrypted to this investigator's key"
            )
        if sub.get("quarantine"):
            raise UnknownItemError(f"submission {sub['id']} is quarantined: {sub['quarantine']}")
        try:
            content = self._open_content(sub)
        except NonConformingItemError as exc:
            raise VaultIntegrityError(f"submission {sub['id']} no longer checks: {exc}") from None
        if content is None:
            raise VaultIntegrityError(f"submission {sub['id']} no longer opens with this key")
        return content

    def _open_content(self, sub: SubmissionRecord) -> Content | None:
        limits = limits_of(self._state["bundles"].get(sub["bundle"]))
        return open_content(self.read_ciphertext, self.identity, sub["ciphertexts"], limits)

    def search_texts(self) -> list[tuple[str, str]]:
        """(id, message and answers as text) of every readable submission not quarantined, for
        `search`. Decrypting every message each time is slow, so the texts are kept in
        search.age (encrypted to ourselves; its SHA-256 is in the signed state, so a file that
        was swapped is rebuilt, never trusted); only submissions it lacks are decrypted."""
        cache = self._read_search_cache()
        wanted = [
            sub for sub in self._state["submissions"].values()
            if sub.get("readable", True) and not sub.get("quarantine")
        ]
        fresh = {sub["id"]: cache.get(sub["id"]) for sub in wanted}
        for sub in wanted:
            if fresh[sub["id"]] is None:
                fresh[sub["id"]] = search_text(self.content(sub))
        texts = {sid: text for sid, text in fresh.items() if text is not None}
        if texts != cache:
            data = encrypt(canonical(texts), [self.identity.recipient()])
            replace_atomic(self.root / SEARCH_CACHE, data, secret=True)
            # a cache of what the bundles hold, not evidence: no custody entry
            self._state["search_cache"] = hashlib.sha256(data).hexdigest()
            self._save()
        return list(texts.items())

    def _read_search_cache(self) -> dict[str, str]:
        path = self.root / SEARCH_CACHE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        if hashlib.sha256(data).hexdigest() != self._state.get("search_cache"):
            return {}
        texts: dict[str, str] = json.loads(decrypt(data, [self.identity]))
        return texts

    def submission(self, sid: str) -> SubmissionRecord:
        found = self._state["submissions"].get(sid)
        if found is None:
            raise UnknownItemError(f"no submission with id {sid!r} in this vault")
        return found

    def record(self, action: str, subjects: list[str], **details: Any) -> None:
        """Log something done with the vault's content that changes no record (an extract, an
        export, a report) as a custody entry, and save."""
        self._log(action, subjects, **details)
        self._save()

    def _log(self, action: str, subjects: list[str], **details: Any) -> None:
        """Append a hash-chained chain-of-custody entry (saved with the next `_save`)."""
        custody = self._state["custody"]
        prev = custody[-1]["hash"] if custody else GENESIS
        at = now()
        body = {"seq": len(custody), "at": at, "by": self.label, "action": action,
                "subjects": subjects, "details": details}
        hashed = entry_hash(prev, hashlib.sha256(canonical(body)).hexdigest())
        entry: CustodyEntry = {"seq": len(custody), "at": at, "by": self.label, "action": action,
                               "subjects": subjects, "details": details, "prev": prev,
                               "hash": hashed}
        custody.append(freeze(entry))

    # --- every change of the state: each one a custody entry, saved -----------------------------
    # `amanat-review` and the workbench call these, and nothing else changes the state (its
    # records are read-only to everyone else: review/state.py), so both land in the custody log
    # alike.

    def _put(self, record: SubmissionRecord) -> None:
        """Replace (or add) a submission's record, frozen like every record the vault holds."""
        self._state["submissions"][record["id"]] = freeze(record)

    def add_import(
        self, bundle_id: str, bundle: BundleRecord, records: Mapping[str, SubmissionRecord],
        **details: Any,
    ) -> None:
        """Add an imported bundle's new submissions and the bundle (for replay checks); logged
        as `import` (with `details`) and saved."""
        self._state["submissions"].update({sid: freeze(r) for sid, r in records.items()})
        self._state["bundles"][bundle_id] = freeze(bundle)
        quarantined = sorted(sid for sid, r in records.items() if r.get("quarantine"))
        self._log("import", sorted(records), quarantined=quarantined, bundle_id=bundle_id,
                  **details)
        self._save()

    def tag(self, sid: str, tag: str, *, remove: bool = False) -> list[str]:
        """Add (or remove) a tag; logged and saved when it changed anything. Returns the tags."""
        sub = self.submission(sid)
        tag = " ".join(clean(tag, single_line=True).split())[:MAX_TAG_CHARS]
        if remove and tag in sub["tags"]:
            tags = [t for t in sub["tags"] if t != tag]
        elif not remove and tag and tag not in sub["tags"]:
            tags = [*sub["tags"], tag]
        else:
            return list(sub["tags"])
        self._put({**sub, "tags": tags})
        self._log("untag" if remove else "tag", [sid], tag=tag)
        self._save()
        return list(tags)

    def add_note(self, sid: str, text: str) -> int:
        """Append a note; the custody log names its size and SHA-256 (the text stays with the
        submission, and leaves only with a case export). Returns the number of notes."""
        if not text.strip():
            raise NoteTextError("a note needs some text")
        if len(text) > MAX_NOTE_CHARS:
            raise NoteTextError(f"a note is at most {MAX_NOTE_CHARS} characters")
        sub = self.submission(sid)
        notes: list[Note] = [*sub["notes"], {"at": now(), "by": self.label, "text": text}]
        self._put({**sub, "notes": notes})
        data = text.encode("utf-8")
        self._log("note", [sid], size=len(data), sha256=hashlib.sha256(data).hexdigest())
        self._save()
        return len(notes)

    def add_reply(self, record: ReplyRecord, subject: str, ciphertext: bytes) -> None:
        """Keep a reply's ciphertext (made here) and its record, and log it; saved."""
        self._write_object(record["sha256"], ciphertext)
        self._state["replies"].append(freeze(record))
        self._log("reply", [subject], source=record["source"], reply_id=record["reply_id"],
                  bundle_id=record["bundle_id"], sha256=record["sha256"])
        self._save()

    def add_triage(self) -> int:
        """Give submissions imported before the queue's triage record existed theirs (each
        decrypted once), logged and saved when there were any; returns how many."""
        done = []
        for sid, sub in list(self._state["submissions"].items()):
            if "triage" in sub or not sub.get("readable", True) or sub.get("quarantine"):
                continue
            try:
                self._put({**sub, "triage": triage(self.content(sub).intake)})
            except (UnknownItemError, VaultIntegrityError):  # `verify` says more
                continue
            done.append(sid)
        if done:
            self._log("migrate", sorted(done), added="triage")
            self._save()
        return len(done)

    # --- objects -----------------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise VaultIntegrityError(f"not a SHA-256: {sha256[:80]!r}")
        return self.root / "objects" / sha256[:2] / f"{sha256}.age"

    def _write_object(self, sha256: str, data: bytes) -> None:
        """Store a ciphertext made here under its SHA-256."""
        path = self.object_path(sha256)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        self._write_checked(path, [data], sha256)

    def bundle_path(self, sha256: str) -> Path:
        self.object_path(sha256)  # same shape check
        return self.root / "bundles" / f"{sha256}.tar"

    def store_bundle(self, src: BinaryIO, sha256: str) -> None:
        """Copy a verified bundle into the vault; the copy must hash to what was verified."""
        (self.root / "bundles").mkdir(mode=0o700, exist_ok=True)
        src.seek(0)
        self._write_checked(self.bundle_path(sha256), iter(lambda: src.read(CHUNK), b""), sha256)

    def _write_checked(self, path: Path, chunks: Iterable[bytes], sha256: str) -> None:
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk
            if digest.hexdigest() != sha256:
                raise VaultIntegrityError(f"{path.name} changed while being stored")

        replace_atomic(path, hashed(), secret=True)

    def read_ciphertext(self, ct: CiphertextRecord | ObjectRef) -> Iterator[bytes]:
        """A ciphertext's bytes, from its bundle (by offset) or the objects folder, hashed as
        they are read: VaultIntegrityError at the end if they are not what was recorded."""
        if "bundle" in ct:
            path, offset = self.bundle_path(ct["bundle"]), ct["offset"]
        else:
            path, offset = self.object_path(ct["sha256"]), 0
        digest, left = hashlib.sha256(), int(ct["size"])
        with open(path, "rb") as f:
            f.seek(offset)
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
                yield chunk
        if left or digest.hexdigest() != ct["sha256"]:
            raise VaultIntegrityError(f"ciphertext {ct['sha256']} in the vault was altered")

    def decrypt_ciphertext(self, ct: CiphertextRecord | ObjectRef) -> Iterator[bytes]:
        """Plaintext chunks; an exception at any point means the whole file failed."""
        return decrypt_iter(self.read_ciphertext(ct), [self.identity])


def _take_lock(root: Path) -> BinaryIO:
    lock = open(root / ".lock", "ab")  # noqa: SIM115 - held for the vault's lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise VaultError(f"{root} is in use by another amanat-review command") from None
    return lock


def _read_state(path: Path, investigator: InvestigatorSecrets) -> object:
    try:
        plaintext = decrypt(path.read_bytes(), [investigator.identity])
    except OSError as exc:
        raise VaultError(f"cannot read {path}: {exc.strerror}") from None
    except AgeError as exc:
        raise VaultIntegrityError(f"{path} does not open with this identity: {exc}") from None
    magic, _, rest = plaintext.partition(b"\n")
    sig_b64, _, body = rest.partition(b"\n")
    if magic.decode("ascii", errors="replace") not in (STATE_FORMAT, STATE_FORMAT_V1):
        raise VaultIntegrityError(f"{path} is not a vault state of format {STATE_FORMAT}")
    try:
        investigator.signing_key.verify_key.verify(body, base64.b64decode(sig_b64))
        # records parsed frozen: check_state freezes their lists in place, copies nothing
        state: object = json.loads(body, object_pairs_hook=FrozenDict)
    except (BadSignatureError, ValueError):
        raise VaultIntegrityError(f"{path} is not signed by this investigator: altered") from None
    return state


def _drop_inline(document: object) -> object:
    """A format-1 state without the messages, answers and attachment lists it kept inline:
    format 2 reads them from the stored bundles (`Vault._migrate_v1`)."""
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT_V1:
        return document
    subs = document.get("submissions")
    for sub in subs.values() if isinstance(subs, dict) else ():
        if isinstance(sub, dict):
            for key in ("message", "answers", "questionnaire", "attachments"):
                dict.pop(sub, key, None)  # parsed frozen (_read_state), not yet handed out
    return document


def _check_membership(keyring: Keyring, investigator: InvestigatorSecrets) -> None:
    me = keyring.investigator_by_verify_key(investigator.signing_key.verify_key)
    if me is None or str(me.recipient) != str(investigator.identity.recipient()):
        raise ConfigError(
            f"identity {investigator.label!r} is not an active investigator in this keyring"
        )


def verify_vault(
    vault: Vault, progress: Callable[[int, int], None] | None = None
) -> tuple[int, list[str]]:
    """Re-verify every stored bundle (transfer-key signature and every member hash), check that
    each ciphertext the state refers to is where and what it was at import, re-hash replies,
    check the custody chain, and report files nobody refers to. (The state's own signature was
    checked when the vault was opened.)"""
    refs: dict[str, list[CiphertextRecord]] = {}
    for sub in vault.submissions.values():
        for ct in sub["ciphertexts"]:
            refs.setdefault(ct["bundle"], []).append(ct)
    problems: list[str] = []
    replies = vault.replies
    steps = len(refs) + len(replies)
    for n, (bundle_sha, cts) in enumerate(sorted(refs.items())):
        problems += _verify_bundle(vault, bundle_sha, cts)
        if progress:
            progress(n + 1, steps)
    for n, reply in enumerate(replies):
        obj: ObjectRef = {"sha256": reply["sha256"], "size": reply["size"]}
        try:
            for _ in vault.read_ciphertext(obj):
                pass
        except (OSError, VaultIntegrityError) as exc:
            problems.append(f"reply {reply['reply_id']}: {exc}")
        if progress:
            progress(len(refs) + n + 1, steps)
    try:
        verify_chain(vault.custody)
    except VaultIntegrityError as exc:
        problems.append(str(exc))
    known = {f"bundles/{b}.tar" for b in refs}
    known |= {
        vault.object_path(r["sha256"]).relative_to(vault.root).as_posix()
        for r in replies
    }
    for path in sorted([*vault.root.glob("bundles/*"), *vault.root.glob("objects/*/*")]):
        if path.relative_to(vault.root).as_posix() not in known:
            problems.append(f"unexpected file in the vault: {path.relative_to(vault.root)}")
    checked = sum(len(c) for c in refs.values()) + len(replies)
    return checked, problems


def _verify_bundle(vault: Vault, bundle_sha: str, cts: list[CiphertextRecord]) -> list[str]:
    from keys.bundle import BundleError, read_bundle, transfer_key_lookup

    key = vault.keyring.transfer_verify_key
    path = vault.bundle_path(bundle_sha)
    if key is None:
        return ["the keyring no longer pins a transfer key: bundles cannot be re-verified"]
    try:
        with open(path, "rb") as f:
            bundle = read_bundle(f, transfer_key_lookup(key))
            f.seek(0)
            digest = hashlib.sha256()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return [f"bundle {bundle_sha} is missing or unreadable ({exc.strerror})"]
    except BundleError as exc:
        return [f"bundle {bundle_sha} was altered: {exc}"]
    problems = []
    if digest.hexdigest() != bundle_sha:
        problems.append(f"bundle {bundle_sha} was altered: it now hashes to {digest.hexdigest()}")
    listed = {name: sha for name, _, sha in bundle.manifest.files()}
    for ct in cts:
        if listed.get(ct["name"]) != ct["sha256"] or bundle.offset(ct["name"]) != ct["offset"]:
            problems.append(f"ciphertext {ct['sha256']} is not where the import recorded it")
    return problems
