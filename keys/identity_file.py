"""Investigator identity files: an investigator's two secret keys under a passphrase.

The file is an ordinary age file encrypted to a single scrypt recipient, so `age -d` opens it with
the passphrase. Its plaintext is a valid age identity file (`age -d -i` accepts it): comments, one
`AGE-SECRET-KEY-1...` line, and the Ed25519 signing seed carried in a tagged comment line that age
ignores. The review tool and the transfer client read it; docs/format.md, section 3.5 is the spec.
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
DEFAULT_WORK_FACTOR = 18  # what `age -p` uses: about a second on a laptop


class IdentityFileError(InputError):
    """The bytes are not an Amanat investigator identity file (garbage, truncated, wrong kind)."""


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

    def public_entry(self, added: date) -> Investigator:
        """The keyring entry that lets the organization add this investigator."""
        return Investigator(
            label=self.label,
            recipient=self.identity.recipient(),
            verify_key=self.signing_key.verify_key,
            added=added,
        )


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
    if not passphrase:
        raise WrongPassphraseError("the passphrase is empty")
    try:
        header, _ = parse_header(data)
        if not any(stanza.type == "scrypt" for stanza in header.stanzas):
            raise IdentityFileError("this age file is not protected by a passphrase")
        plaintext = decrypt(data, [ScryptIdentity(passphrase)])
    except NoIdentityMatchError:
        raise WrongPassphraseError("the passphrase does not open this identity file") from None
    except AgeError as exc:
        raise IdentityFileError(f"not a readable identity file: {exc}") from None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityFileError("the identity file does not hold text") from None
    return parse_identity(text)
