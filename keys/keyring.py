"""The signed keyring: who may read what the server receives.

An organization key (Ed25519, kept offline) signs a small JSON document listing the vetted
investigators (label, age recipient, the Ed25519 verify key of their offline identity, the Ed25519
key of their transfer credential, day added, revoked flag), a version number that only grows, and
optionally the server's transfer verify key.

Each investigator has two credentials (docs/format.md, 3.5): the offline identity (the age identity
that opens testimonies and the key that signs replies) stays on the review workstation; the
transfer credential (a key that only signs transfer requests) is all the online workstation holds.
Either can be rotated or revoked on its own. The server pins the organization
public key and refuses a keyring that is badly signed, older than the one it saw last, of an
unknown format or malformed in any field. The spec is docs/format.md, section 3.

Everything here is pure: bytes in, bytes out. Reading and writing files is keys/cli.py's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from keys.age import X25519Recipient
from keys.errors import AgeError, KeyringError, KeyringForkError

FORMAT = "amanat-keyring/v2"
FORMAT_V1 = "amanat-keyring/v1"  # before transfer credentials: still read, never written
MAX_VERSION = 2**53 - 1  # stays exact in every JSON implementation
MAX_LABEL_CHARS = 64
FINGERPRINT_DIGITS = 24

ORG_KEY_TAG = "AMANAT-ORG-SIGNING-KEY"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Control, format, surrogate, private-use, unassigned and line/paragraph separators: nothing a
# label needs, and each could hide text from a person comparing labels by eye.
_FORBIDDEN_LABEL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_PAYLOAD_FIELDS = frozenset({"format", "version", "investigators", "transfer_verify_key"})
_INVESTIGATOR_FIELDS_V1 = frozenset({"label", "recipient", "verify_key", "added", "revoked"})
_INVESTIGATOR_FIELDS = _INVESTIGATOR_FIELDS_V1 | {"transfer_key"}
_DOCUMENT_FIELDS = frozenset({"keyring", "signature"})


@dataclass(frozen=True)
class Investigator:
    """One vetted investigator's public entry. `recipient` and `verify_key` are the offline
    identity's (it decrypts and signs replies); `transfer_key` is the transfer credential's (it
    signs transfer requests), None when the investigator has none (not issued, or revoked)."""

    label: str
    recipient: X25519Recipient
    verify_key: VerifyKey
    added: date
    revoked: bool = False
    transfer_key: VerifyKey | None = None

    def __post_init__(self) -> None:
        check_label(self.label)


@dataclass(frozen=True)
class Keyring:
    """A keyring whose invariants hold (checked on construction): unique labels, recipients and
    verify keys; a version in 1..2**53-1."""

    version: int
    org_verify_key: VerifyKey
    investigators: tuple[Investigator, ...] = ()
    transfer_verify_key: VerifyKey | None = None
    # The format this keyring was read in: a v1 keyring keeps its v1 payload (and fingerprint)
    # until the organization changes it; every change writes the current FORMAT.
    format_id: str = FORMAT

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not 1 <= self.version <= MAX_VERSION:
            raise KeyringError(f"keyring version must be an integer in 1..{MAX_VERSION}")
        if self.format_id not in (FORMAT, FORMAT_V1):
            raise KeyringError(f"unknown keyring format {self.format_id!r}")
        _require_unique("label", [i.label.casefold() for i in self.investigators])
        _require_unique("age recipient", [str(i.recipient) for i in self.investigators])
        # One key signs one kind of thing: an offline key is never also a transfer key.
        _require_unique(
            "verify key",
            [bytes(i.verify_key) for i in self.investigators]
            + [bytes(i.transfer_key) for i in self.investigators if i.transfer_key is not None],
        )
        issued = [i for i in self.investigators if i.transfer_key is not None]
        if self.format_id == FORMAT_V1 and issued:
            raise KeyringError(f"a {FORMAT_V1} keyring has no transfer credentials")

    # --- queries ---------------------------------------------------------------------------

    def active_investigators(self) -> list[Investigator]:
        return [i for i in self.investigators if not i.revoked]

    def active_recipients(self) -> list[X25519Recipient]:
        """The age recipients of every new ciphertext: all non-revoked investigators."""
        return [i.recipient for i in self.investigators if not i.revoked]

    def investigator_by_label(self, label: str) -> Investigator | None:
        wanted = label.casefold()
        return next((i for i in self.investigators if i.label.casefold() == wanted), None)

    def investigator_by_verify_key(
        self, verify_key: VerifyKey | bytes, *, include_revoked: bool = False
    ) -> Investigator | None:
        """The investigator owning `verify_key`; revoked ones only when asked for, so that a
        caller authenticating a request cannot accept a revoked key by accident."""
        wanted = bytes(verify_key)
        for inv in self.investigators:
            if bytes(inv.verify_key) == wanted and (include_revoked or not inv.revoked):
                return inv
        return None

    def investigator_by_transfer_key(self, verify_key: VerifyKey | bytes) -> Investigator | None:
        """The investigator whose transfer credential has this key, revoked ones included (the
        caller tells a revoked investigator from an unknown key)."""
        wanted = bytes(verify_key)
        return next(
            (
                i
                for i in self.investigators
                if i.transfer_key is not None and bytes(i.transfer_key) == wanted
            ),
            None,
        )

    def payload(self) -> dict[str, Any]:
        """The signed part of the document, as JSON-ready data."""
        v1 = self.format_id == FORMAT_V1
        return {
            "format": self.format_id,
            "version": self.version,
            "investigators": [_investigator_to_json(i, v1) for i in self.investigators],
            "transfer_verify_key": (
                None if self.transfer_verify_key is None else encode_key(self.transfer_verify_key)
            ),
        }

    def canonical_payload(self) -> bytes:
        return canonical_json(self.payload())

    def fingerprint(self) -> str:
        """24 decimal digits in six groups of four, e.g. "0123 4567 8901 2345 6789 0123":
        SHA-256 over the organization key and the canonical payload (docs/format.md, 3.4)."""
        digest = hashlib.sha256(bytes(self.org_verify_key) + self.canonical_payload()).digest()
        number = int.from_bytes(digest[:16], "big") % 10**FINGERPRINT_DIGITS
        digits = f"{number:0{FINGERPRINT_DIGITS}d}"
        return " ".join(digits[i : i + 4] for i in range(0, FINGERPRINT_DIGITS, 4))

    # --- changes: each returns a new keyring one version up ---------------------------------

    def bumped(self) -> Keyring:
        return replace(self, version=self.version + 1, format_id=FORMAT)

    def with_investigator(self, investigator: Investigator) -> Keyring:
        return replace(
            self.bumped(), investigators=(*self.investigators, investigator)
        )

    def with_revoked(self, label: str) -> Keyring:
        """Revoke the investigator: both credentials stop working, new files skip their key."""
        target = self._active(label)
        return self._replaced(target, replace(target, revoked=True))

    def with_investigator_transfer_key(self, label: str, key: VerifyKey | None) -> Keyring:
        """Issue, rotate (a new key) or revoke (None) one investigator's transfer credential;
        the offline identity is untouched."""
        target = self._active(label)
        if key is None and target.transfer_key is None:
            raise KeyringError(f"investigator {target.label!r} has no transfer credential")
        return self._replaced(target, replace(target, transfer_key=key))

    def with_rotated_identity(
        self, label: str, recipient: X25519Recipient, verify_key: VerifyKey
    ) -> Keyring:
        """Give one investigator a new offline identity; the transfer credential is untouched.
        New files go to the new recipient only."""
        target = self._active(label)
        return self._replaced(target, replace(target, recipient=recipient, verify_key=verify_key))

    def with_transfer_key(self, verify_key: VerifyKey) -> Keyring:
        return replace(self.bumped(), transfer_verify_key=verify_key)

    def _active(self, label: str) -> Investigator:
        target = self.investigator_by_label(label)
        if target is None:
            raise KeyringError(f"no investigator labelled {label!r} in this keyring")
        if target.revoked:
            raise KeyringError(f"investigator {target.label!r} is already revoked")
        return target

    def _replaced(self, old: Investigator, new: Investigator) -> Keyring:
        investigators = tuple(new if i is old else i for i in self.investigators)
        return replace(self.bumped(), investigators=investigators)


def empty_keyring(org_verify_key: VerifyKey) -> Keyring:
    """Version 1 with nobody in it: what `amanat keys init-org` signs first."""
    return Keyring(version=1, org_verify_key=org_verify_key)


# --- signing and loading -------------------------------------------------------------------


def sign_keyring(keyring: Keyring, org_signing_key: SigningKey) -> bytes:
    """The keyring document: the payload and a detached Ed25519 signature over its canonical
    form, written as indented JSON for people to read (indentation is not signed)."""
    if bytes(org_signing_key.verify_key) != bytes(keyring.org_verify_key):
        raise KeyringError("the signing key is not this keyring's organization key")
    signature = org_signing_key.sign(keyring.canonical_payload()).signature
    document = {"keyring": keyring.payload(), "signature": _b64(signature)}
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def load_keyring(
    document: bytes, org_verify_key: VerifyKey, min_version: int = 0, seen_fingerprint: str = ""
) -> Keyring:
    """Verify and parse a keyring document. Raises KeyringError naming the problem: not a keyring
    document, unknown format, bad signature, malformed field, or a version below `min_version`
    (the last version this caller accepted: a lower one is a rollback). With the fingerprint of
    that accepted keyring, the same version with other content is refused too (KeyringForkError)."""
    top = _parse_json(document, "keyring document")
    if not isinstance(top, dict) or set(top) != _DOCUMENT_FIELDS:
        raise KeyringError(
            "not an Amanat keyring document (expected the fields keyring, signature)"
        )
    payload, signature_text = top["keyring"], top["signature"]
    if not isinstance(payload, dict):
        raise KeyringError("malformed keyring document: 'keyring' must be an object")
    _check_format(payload)
    signature = _decode_b64(signature_text, 64, "signature")
    try:
        org_verify_key.verify(canonical_json(payload), signature)
    except BadSignatureError:
        raise KeyringError(
            "the keyring signature does not verify against the pinned organization key "
            "(altered, or signed by another organization)"
        ) from None
    keyring = _keyring_from_payload(payload, org_verify_key)
    check_rollback(keyring, min_version, seen_fingerprint)
    return keyring


def parse_unsigned_keyring(payload: bytes, org_verify_key: VerifyKey) -> Keyring:
    """Parse a bare payload (the "keyring" object, unsigned), e.g. one prepared for `keys sign`."""
    data = _parse_json(payload, "keyring payload")
    if not isinstance(data, dict):
        raise KeyringError("malformed keyring payload: expected a JSON object")
    _check_format(data)
    return _keyring_from_payload(data, org_verify_key)


def check_rollback(keyring: Keyring, last_seen: int, seen_fingerprint: str = "") -> None:
    """Refuse a keyring older than the newest one the caller has accepted before, and one with
    that version but another fingerprint (a fork). The same keyring again is fine: it is loaded
    at every start."""
    if keyring.version < last_seen:
        raise KeyringError(
            f"keyring version {keyring.version} is older than version {last_seen} seen before: "
            "refusing a rollback"
        )
    if keyring.version == last_seen and seen_fingerprint not in ("", keyring.fingerprint()):
        raise KeyringForkError(
            f"keyring version {keyring.version} has other content than the keyring of the same "
            f"version accepted before (fingerprint {seen_fingerprint}): the organization must "
            "sign changes under a new version number"
        )


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 without escaping non-ASCII (RFC 8785 for the subset a
    keyring uses: ASCII keys, integers, booleans, null and strings)."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise KeyringError(f"the keyring cannot be put in canonical form: {exc}") from None


# --- key text forms --------------------------------------------------------------------------


def encode_key(key: VerifyKey) -> str:
    """An Ed25519 verify key as standard padded base64 (44 characters)."""
    return _b64(bytes(key))


def parse_verify_key(text: str, what: str = "verify key") -> VerifyKey:
    return VerifyKey(_decode_b64(text, 32, what))


def format_org_signing_key(key: SigningKey) -> bytes:
    """The org.key file: comments, then `AMANAT-ORG-SIGNING-KEY <base64 seed>`."""
    return (
        "# Amanat organization signing key (Ed25519). Keep it offline and never share it:\n"
        "# whoever holds it decides who can read every testimony.\n"
        f"# Public key (org.pub): {encode_key(key.verify_key)}\n"
        f"{ORG_KEY_TAG} {_b64(bytes(key))}\n"
    ).encode()


def parse_org_signing_key(data: bytes) -> SigningKey:
    lines = _content_lines(data, "organization key file")
    if len(lines) != 1 or not lines[0].startswith(ORG_KEY_TAG + " "):
        raise KeyringError(f"not an organization key file (expected one line {ORG_KEY_TAG} ...)")
    return SigningKey(_decode_b64(lines[0][len(ORG_KEY_TAG) + 1 :], 32, "organization key"))


def format_org_public_key(key: VerifyKey) -> bytes:
    """The org.pub file: a comment and the base64 verify key, which servers pin."""
    return f"# Amanat organization public key (Ed25519)\n{encode_key(key)}\n".encode()


def parse_org_public_key(data: bytes) -> VerifyKey:
    """Read org.pub (comments allowed) or a bare base64 key."""
    lines = _content_lines(data, "organization public key file")
    if len(lines) != 1:
        raise KeyringError("an organization public key file holds exactly one base64 key line")
    return parse_verify_key(lines[0], "organization public key")


def check_label(label: object) -> str:
    """A label is 1..64 characters, no leading or trailing space, nothing invisible."""
    if not isinstance(label, str) or not label:
        raise KeyringError("an investigator label must be a non-empty string")
    if len(label) > MAX_LABEL_CHARS or label != label.strip():
        raise KeyringError(
            f"an investigator label has at most {MAX_LABEL_CHARS} characters and no "
            "leading or trailing space"
        )
    if any(unicodedata.category(ch) in _FORBIDDEN_LABEL_CATEGORIES for ch in label):
        raise KeyringError("an investigator label may not contain control or invisible characters")
    return label


# --- internals -------------------------------------------------------------------------------


def _check_format(payload: dict[str, Any]) -> None:
    # Checked before the signature so that a newer format gets the helpful message.
    found = payload.get("format")
    if found not in (FORMAT, FORMAT_V1):
        raise KeyringError(f"unknown keyring format {found!r} (this Amanat reads {FORMAT!r})")


def _keyring_from_payload(payload: dict[str, Any], org_verify_key: VerifyKey) -> Keyring:
    _require_fields(payload, _PAYLOAD_FIELDS, "keyring")
    investigators = payload["investigators"]
    if not isinstance(investigators, list):
        raise KeyringError("malformed keyring: 'investigators' must be a list")
    transfer = payload["transfer_verify_key"]
    version = payload["version"]
    if type(version) is not int:
        raise KeyringError("malformed keyring: 'version' must be an integer")
    v1 = payload["format"] == FORMAT_V1
    return Keyring(
        version=version,
        org_verify_key=org_verify_key,
        investigators=tuple(
            _investigator_from_json(i, n, v1) for n, i in enumerate(investigators)
        ),
        transfer_verify_key=(
            None if transfer is None else parse_verify_key(transfer, "transfer_verify_key")
        ),
        format_id=payload["format"],
    )


def _investigator_from_json(entry: object, index: int, v1: bool) -> Investigator:
    where = f"investigator #{index + 1}"
    if not isinstance(entry, dict):
        raise KeyringError(f"malformed keyring: {where} must be an object")
    _require_fields(entry, _INVESTIGATOR_FIELDS_V1 if v1 else _INVESTIGATOR_FIELDS, where)
    label = check_label(entry["label"])
    where = f"investigator {label!r}"
    recipient_text = entry["recipient"]
    try:
        if not isinstance(recipient_text, str):
            raise KeyringError(f"malformed keyring: {where}: recipient must be a string")
        recipient = X25519Recipient.parse(recipient_text)
    except AgeError as exc:
        raise KeyringError(f"malformed keyring: {where}: bad age recipient ({exc})") from None
    if str(recipient) != recipient_text:
        raise KeyringError(f"malformed keyring: {where}: age recipient is not in canonical form")
    revoked = entry["revoked"]
    if not isinstance(revoked, bool):
        raise KeyringError(f"malformed keyring: {where}: 'revoked' must be true or false")
    transfer = None if v1 else entry["transfer_key"]
    return Investigator(
        label=label,
        recipient=recipient,
        verify_key=parse_verify_key(entry["verify_key"], f"{where}: verify_key"),
        added=_parse_day(entry["added"], where),
        revoked=revoked,
        transfer_key=(
            None if transfer is None else parse_verify_key(transfer, f"{where}: transfer_key")
        ),
    )


def _investigator_to_json(inv: Investigator, v1: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": inv.label,
        "recipient": str(inv.recipient),
        "verify_key": encode_key(inv.verify_key),
        "added": inv.added.isoformat(),
        "revoked": inv.revoked,
    }
    if not v1:
        entry["transfer_key"] = None if inv.transfer_key is None else encode_key(inv.transfer_key)
    return entry


def _parse_day(value: object, where: str) -> date:
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise KeyringError(f"malformed keyring: {where}: 'added' must be a day YYYY-MM-DD")


def _require_fields(obj: dict[str, Any], expected: frozenset[str], where: str) -> None:
    missing, unknown = expected - set(obj), set(obj) - expected
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(sorted(missing)))
        if unknown:
            parts.append("unknown " + ", ".join(sorted(unknown)))
        raise KeyringError(f"malformed keyring: {where}: " + "; ".join(parts))


def _require_unique(what: str, values: list[Any]) -> None:
    if len(set(values)) != len(values):
        raise KeyringError(f"two investigators share the same {what}")


def _parse_json(data: bytes, what: str) -> Any:
    def no_floats(text: str) -> Any:
        raise KeyringError(f"malformed {what}: numbers must be integers")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise KeyringError(f"malformed {what}: a field appears twice")
        return obj

    try:
        return json.loads(
            data.decode("utf-8"),
            parse_float=no_floats,
            parse_constant=no_floats,
            object_pairs_hook=no_duplicates,
        )
    except UnicodeDecodeError:
        raise KeyringError(f"the {what} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise KeyringError(f"the {what} is not valid JSON") from None


def _content_lines(data: bytes, what: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyringError(f"the {what} is not UTF-8 text") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_b64(text: object, length: int, what: str) -> bytes:
    """Strict standard base64: canonical padding, exactly `length` bytes."""
    if isinstance(text, str):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
        if raw is not None and len(raw) == length and _b64(raw) == text:
            return raw
    raise KeyringError(f"malformed {what}: expected {length} bytes in standard base64")
