"""An investigator's two credentials, each a file under a passphrase (docs/format.md, 3.5).

- The offline identity (`investigator.age`, review workstation only): the age identity that opens
  testimonies and the Ed25519 key that signs replies. Its plaintext is a valid age identity file
  (`age -d -i` accepts it): comments, one `AGE-SECRET-KEY-1...` line, and the Ed25519 seed in a
  tagged comment line that age ignores. The review tool reads it.
- The transfer credential (`transfer.cred`, online workstation): one Ed25519 key that signs
  transfer requests and nothing else; it holds no age identity and opens nothing. The transfer
  client reads it and refuses any file that carries an age identity.

Both are ordinary age files encrypted to a single scrypt recipient, so `age -d` opens them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import date

from nacl.signing import SigningKey

from keys.age import (
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    encrypt,
    parse_header,
)
from keys.errors import (
    AgeError,
    InputError,
    KeyringError,
    NoIdentityMatchError,
    WrongPassphraseError,
)
from keys.keyring import Investigator, check_label, encode_key

LABEL_TAG = "# AMANAT-LABEL: "
SIGNING_KEY_TAG = "# AMANAT-SIGNING-KEY: "
CREDENTIAL_TAG = "AMANAT-TRANSFER-CREDENTIAL: "
AGE_IDENTITY_MARK = "AGE-SECRET-KEY-"
DEFAULT_WORK_FACTOR = 18  # what `age -p` uses: about a second on a laptop


class IdentityFileError(InputError):
    """The bytes are not an Amanat investigator identity file (garbage, truncated, wrong kind)."""


class CredentialFileError(IdentityFileError):
    """The bytes are not a transfer credential (garbage, truncated, or an identity file)."""


class AgeIdentityOnlineError(CredentialFileError):
    """A file given as a transfer credential holds an age identity: refused, and said why."""


@dataclass(frozen=True)
class InvestigatorSecrets:
    """An investigator's secret keys: the age identity that opens ciphertexts and the Ed25519 key
    that signs transfer requests and replies. Its repr shows only public parts."""

    label: str
    identity: X25519Identity = field(repr=False)
    signing_key: SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        check_label(self.label)

    @classmethod
    def generate(cls, label: str) -> InvestigatorSecrets:
        return cls(label, X25519Identity.generate(), SigningKey.generate())

    def public_entry(self, added: date, transfer: TransferCredential | None = None) -> Investigator:
        """The keyring entry that lets the organization add this investigator (with the public
        key of their transfer credential, when they have one)."""
        return Investigator(
            label=self.label,
            recipient=self.identity.recipient(),
            verify_key=self.signing_key.verify_key,
            added=added,
            transfer_key=None if transfer is None else transfer.signing_key.verify_key,
        )


@dataclass(frozen=True)
class TransferCredential:
    """The online workstation's only secret: a key that signs transfer requests. It cannot
    decrypt anything. Its repr shows only the label."""

    label: str
    signing_key: SigningKey = field(repr=False)

    def __post_init__(self) -> None:
        check_label(self.label)

    @classmethod
    def generate(cls, label: str) -> TransferCredential:
        return cls(label, SigningKey.generate())


def format_identity(secrets: InvestigatorSecrets) -> str:
    """The plaintext of an identity file (secret: never log or print it)."""
    seed = base64.b64encode(bytes(secrets.signing_key)).decode("ascii")
    return (
        "# Amanat investigator identity. Secret: keep it offline.\n"
        f"{LABEL_TAG}{secrets.label}\n"
        f"# Public age recipient: {secrets.identity.recipient()}\n"
        f"# Public Ed25519 verify key: {encode_key(secrets.signing_key.verify_key)}\n"
        "# The next line is the Ed25519 signing seed, written as a comment so that\n"
        "# `age -d -i` accepts this file as an ordinary age identity file.\n"
        f"{SIGNING_KEY_TAG}{seed}\n"
        f"{secrets.identity}\n"
    )


def parse_identity(text: str) -> InvestigatorSecrets:
    """Read the plaintext form written by `format_identity`."""
    labels, seeds, age_lines = [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(LABEL_TAG.strip() + " "):
            labels.append(line[len(LABEL_TAG) :].strip())
        elif line.startswith(SIGNING_KEY_TAG.strip() + " "):
            seeds.append(line[len(SIGNING_KEY_TAG) :].strip())
        elif line and not line.startswith("#"):
            age_lines.append(line)
    if len(labels) != 1 or len(seeds) != 1 or len(age_lines) != 1:
        raise IdentityFileError(
            "not an Amanat identity: expected one label, one signing key and one age secret key"
        )
    try:
        identity = X25519Identity.parse(age_lines[0])
        seed = base64.b64decode(seeds[0], validate=True)
        if len(seed) != 32:
            raise IdentityFileError("the signing key in the identity file is not 32 bytes")
        return InvestigatorSecrets(labels[0], identity, SigningKey(seed))
    except (AgeError, KeyringError, binascii.Error) as exc:
        raise IdentityFileError(f"the identity file is damaged: {exc}") from None


def protect_identity(
    secrets: InvestigatorSecrets,
    passphrase: str | bytes,
    work_factor: int = DEFAULT_WORK_FACTOR,
) -> bytes:
    """The identity file: `format_identity` encrypted to one scrypt recipient (an age file)."""
    plaintext = format_identity(secrets).encode("utf-8")
    return encrypt(plaintext, [ScryptRecipient(passphrase, work_factor)])


def open_identity(data: bytes, passphrase: str | bytes) -> InvestigatorSecrets:
    """Decrypt and parse an identity file. A wrong passphrase raises WrongPassphraseError;
    anything that is not an intact identity file raises IdentityFileError."""
    return parse_identity(_open_protected(data, passphrase, "the identity file"))


def _open_protected(data: bytes, passphrase: str | bytes, what: str) -> str:
    """The text inside a passphrase-protected age file."""
    if not passphrase:
        raise WrongPassphraseError("the passphrase is empty")
    try:
        header, _ = parse_header(data)
        if not any(stanza.type == "scrypt" for stanza in header.stanzas):
            raise IdentityFileError(f"{what} is not protected by a passphrase")
        plaintext = decrypt(data, [ScryptIdentity(passphrase)])
    except NoIdentityMatchError:
        raise WrongPassphraseError(f"the passphrase does not open {what}") from None
    except AgeError as exc:
        raise IdentityFileError(f"{what} is not readable: {exc}") from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityFileError(f"{what} does not hold text") from None


# --- transfer credentials ---------------------------------------------------------------------

_AGE_IDENTITY_ONLINE = (
    "{what} holds an age identity, the key that opens testimonies; it must never be on an online "
    "machine. The transfer commands take the transfer credential (--credential), which only signs "
    "requests: see docs/deploy.md, \"Migrating to transfer credentials\". Move this file back to "
    "the review workstation."
)


def format_credential(credential: TransferCredential) -> str:
    """The plaintext of a transfer credential file (secret: never log or print it)."""
    seed = base64.b64encode(bytes(credential.signing_key)).decode("ascii")
    return (
        "# Amanat transfer credential. It signs transfer requests and opens nothing.\n"
        f"{LABEL_TAG}{credential.label}\n"
        f"# Public Ed25519 transfer key: {encode_key(credential.signing_key.verify_key)}\n"
        f"{CREDENTIAL_TAG}{seed}\n"
    )


def parse_credential(text: str, what: str = "this file") -> TransferCredential:
    """Read the plaintext form written by `format_credential`; refuse one with an age identity."""
    if AGE_IDENTITY_MARK in text.upper():
        raise AgeIdentityOnlineError(_AGE_IDENTITY_ONLINE.format(what=what))
    labels, seeds, other = [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(LABEL_TAG.strip() + " "):
            labels.append(line[len(LABEL_TAG) :].strip())
        elif line.startswith(CREDENTIAL_TAG):
            seeds.append(line[len(CREDENTIAL_TAG) :].strip())
        elif line and not line.startswith("#"):
            other.append(line)
    if len(labels) != 1 or len(seeds) != 1 or other:
        raise CredentialFileError(
            f"{what} is not an Amanat transfer credential: expected one label and one key"
        )
    try:
        seed = base64.b64decode(seeds[0], validate=True)
        if len(seed) != 32:
            raise CredentialFileError(f"the key in {what} is not 32 bytes")
        return TransferCredential(labels[0], SigningKey(seed))
    except (KeyringError, binascii.Error) as exc:
        raise CredentialFileError(f"{what} is damaged: {exc}") from None


def protect_credential(
    credential: TransferCredential,
    passphrase: str | bytes,
    work_factor: int = DEFAULT_WORK_FACTOR,
) -> bytes:
    """The transfer credential file: `format_credential` encrypted to one scrypt recipient."""
    plaintext = format_credential(credential).encode("utf-8")
    return encrypt(plaintext, [ScryptRecipient(passphrase, work_factor)])


def refuse_plain_age_identity(data: bytes, what: str) -> None:
    """Refuse, before any passphrase is asked, a file that shows an age identity in the clear."""
    if AGE_IDENTITY_MARK.encode() in data.upper():
        raise AgeIdentityOnlineError(_AGE_IDENTITY_ONLINE.format(what=what))


def open_credential(
    data: bytes, passphrase: str | bytes, what: str = "this file"
) -> TransferCredential:
    """Decrypt and parse a transfer credential. A wrong passphrase raises WrongPassphraseError; an
    identity file (or anything else carrying an age identity) raises AgeIdentityOnlineError."""
    refuse_plain_age_identity(data, what)
    text = _open_protected(data, passphrase, what)
    return parse_credential(text, what)
