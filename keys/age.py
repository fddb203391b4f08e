"""The age v1 file format (age-encryption.org/v1, the C2SP age spec) on pynacl. Pure: no I/O.

An age file is a text header that wraps a random 16-byte file key for one or more recipients,
followed by a 16-byte nonce and the STREAM payload (see keys.stream). Recipients and identities
are tiny interfaces: a Recipient turns the file key into stanzas, an Identity finds and unwraps
the stanzas addressed to it. Native types here: X25519 and scrypt (passphrase).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_pwhash_scryptsalsa208sha256_ll,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from keys import bech32
from keys.errors import HeaderError, HmacError, KeyFormatError, NoIdentityMatchError
from keys.stream import NONCE_SIZE, StreamDecryptor, StreamEncryptor, hkdf_sha256, payload_key

__all__ = [
    "Decryptor",
    "Encryptor",
    "Header",
    "Identity",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "decrypt_iter",
    "encrypt",
    "parse_header",
]

VERSION_LINE = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
FILE_KEY_SIZE = 16
# A header bigger than this is refused rather than buffered without bound (about 9000 X25519
# stanzas; Amanat writes a handful).
MAX_HEADER_SIZE = 1024 * 1024
_COLUMNS = 64
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_ZERO_NONCE = bytes(12)

X25519_LABEL = b"age-encryption.org/v1/X25519"
X25519_IDENTITY_HRP = "AGE-SECRET-KEY-"
X25519_PUBLIC_HRP = "age"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
SCRYPT_SALT_SIZE = 16
_WORK_FACTOR = re.compile(r"[1-9][0-9]*")
# What age (and ScryptIdentity by default) accepts: a file with a higher factor would not open.
_MAX_WRITE_WORK_FACTOR = 22


# --- base64 and small crypto helpers ----------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as age uses everywhere in the header."""
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str | bytes, what: str) -> bytes:
    """Strict unpadded base64: no padding, no stray characters, canonical trailing bits."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if not _B64_ALPHABET.issuperset(raw) or len(raw) % 4 == 1:
        raise HeaderError(f"{what} is not valid unpadded base64")
    decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4))
    if base64.b64encode(decoded).rstrip(b"=") != raw:
        raise HeaderError(f"{what} is not canonical base64")
    return decoded


def _seal_file_key(key: bytes, file_key: bytes) -> bytes:
    return crypto_aead_chacha20poly1305_ietf_encrypt(file_key, None, _ZERO_NONCE, key)


def _open_file_key(key: bytes, body: bytes) -> bytes | None:
    """The file key, or None when the body does not authenticate under `key` (not for us)."""
    try:
        return crypto_aead_chacha20poly1305_ietf_decrypt(body, None, _ZERO_NONCE, key)
    except CryptoError:
        return None


def _check_body(stanza: Stanza) -> None:
    # The length check comes before any decryption attempt (partitioning oracles).
    if len(stanza.body) != FILE_KEY_SIZE + 16:
        raise HeaderError(f"{stanza.type} stanza body is {len(stanza.body)} bytes, expected 32")


def _header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    mac_key = hkdf_sha256(file_key, b"", b"header")
    return hmac.new(mac_key, mac_input, hashlib.sha256).digest()


# --- stanzas and the header -------------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: `-> type args...` and a binary body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        words = (self.type, *self.args)
        if any(not word or not _is_vchar(word.encode("utf-8")) for word in words):
            raise HeaderError(f"stanza {self.type!r} has an empty or non-printable argument")
        body = b64encode(self.body)
        lines = [body[i : i + _COLUMNS] for i in range(0, len(body), _COLUMNS)]
        if not lines or len(lines[-1]) == _COLUMNS:
            lines.append("")  # the body always ends with a line shorter than 64 columns
        return ("-> " + " ".join(words) + "\n" + "".join(f"{line}\n" for line in lines)).encode()


@dataclass(frozen=True)
class Header:
    """A parsed header. `mac_input` is the header up to and including `---`, what the MAC covers."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes


def _is_vchar(word: bytes) -> bool:
    return all(0x21 <= c <= 0x7E for c in word)


def _read_line(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\n", pos)
    if end < 0:
        raise HeaderError("header is truncated: a line has no end")
    return data[pos:end], end + 1


def _parse_stanza(data: bytes, arg_line: bytes, pos: int) -> tuple[Stanza, int]:
    if not arg_line.startswith(b"-> "):
        raise HeaderError(f"header line {arg_line[:32]!r} is neither a stanza nor the MAC")
    words = arg_line[3:].split(b" ")
    if any(not word or not _is_vchar(word) for word in words):
        raise HeaderError(f"stanza line {arg_line[:32]!r} has an empty or non-printable argument")
    body_lines: list[bytes] = []
    while True:
        line, pos = _read_line(data, pos)
        if len(line) > _COLUMNS:
            raise HeaderError("stanza body line is longer than 64 columns")
        if not _B64_ALPHABET.issuperset(line):
            raise HeaderError("stanza body is missing its final short line or has a bad character")
        body_lines.append(line)
        if len(line) < _COLUMNS:
            break
    body = b64decode(b"".join(body_lines), "stanza body")
    stanza_type, *args = (word.decode("ascii") for word in words)
    return Stanza(stanza_type, tuple(args), body), pos


def _parse_mac_line(line: bytes) -> bytes:
    if not line.startswith(b"--- ") or len(line) != 4 + 43:
        raise HeaderError("header MAC line is malformed")
    return b64decode(line[4:], "header MAC")


def parse_header(data: bytes) -> tuple[Header, int]:
    """Parse an age v1 header strictly. Returns it and the offset where the payload starts."""
    if not data.startswith(_VERSION_PREFIX):
        raise HeaderError("not an age file: it does not start with 'age-encryption.org/'")
    version, pos = _read_line(data, 0)
    if version + b"\n" != VERSION_LINE:
        raise HeaderError(f"unsupported age version line {version[:40]!r}")
    stanzas: list[Stanza] = []
    while True:
        line_start = pos
        line, pos = _read_line(data, pos)
        if line.startswith(b"---"):
            break
        stanza, pos = _parse_stanza(data, line, pos)
        stanzas.append(stanza)
    mac = _parse_mac_line(line)
    if not stanzas:
        raise HeaderError("header has no recipient stanza")
    return Header(tuple(stanzas), mac, bytes(data[: line_start + 3])), pos


def encode_header(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """The header for `stanzas`, MAC included (the payload nonce is not part of it)."""
    mac_input = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    return mac_input + b" " + b64encode(_header_mac(file_key, mac_input)).encode() + b"\n"


def _check_scrypt_alone(stanzas: Sequence[Stanza]) -> None:
    # Passphrase encryption implies the file came from whoever knows the passphrase: that only
    # holds when nobody else could have been a recipient.
    if len(stanzas) > 1 and any(s.type == "scrypt" for s in stanzas):
        raise HeaderError("an scrypt stanza must be the only stanza in the header")


# --- the recipient and identity interfaces ----------------------------------------------------


class Recipient(Protocol):
    def wrap(self, file_key: bytes) -> list[Stanza]: ...


class Identity(Protocol):
    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key, None if no stanza is for this identity; HeaderError if one is malformed."""
        ...


# --- X25519 -----------------------------------------------------------------------------------


def _x25519(scalar: bytes, point: bytes) -> bytes:
    try:
        return crypto_scalarmult(scalar, point)
    except NaclRuntimeError:
        # libsodium refuses an all-zero shared secret (a low-order point): the spec says abort.
        raise HeaderError("X25519 share is a low-order point (all-zero shared secret)") from None


@dataclass(frozen=True)
class X25519Recipient:
    """An `age1...` public key."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise KeyFormatError(f"X25519 public key is {len(self.public_key)} bytes, expected 32")

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        try:
            hrp, data = bech32.decode(text)
        except KeyFormatError as exc:
            raise KeyFormatError(f"malformed age recipient {text[:80]!r}: {exc}") from None
        if hrp != X25519_PUBLIC_HRP:
            raise KeyFormatError(f"not an age X25519 recipient (prefix {hrp!r}, expected 'age1')")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode(X25519_PUBLIC_HRP, self.public_key)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = os.urandom(32)
        share = crypto_scalarmult_base(ephemeral)
        try:
            shared = _x25519(ephemeral, self.public_key)
        except HeaderError:
            raise KeyFormatError(f"recipient {self} is a low-order point") from None
        key = hkdf_sha256(shared, share + self.public_key, X25519_LABEL)
        return [Stanza("X25519", (b64encode(share),), _seal_file_key(key, file_key))]


class X25519Identity:
    """An `AGE-SECRET-KEY-1...` secret key. Its repr never shows the secret."""

    __slots__ = ("_public", "_secret")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise KeyFormatError(f"X25519 secret key is {len(secret)} bytes, expected 32")
        self._secret = bytes(secret)
        self._public = crypto_scalarmult_base(self._secret)

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_secret(cls, secret: bytes) -> X25519Identity:
        return cls(secret)

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        try:
            hrp, data = bech32.decode(text)
        except KeyFormatError as exc:  # the message must not quote the secret itself
            raise KeyFormatError(f"malformed age secret key: {exc}") from None
        if hrp != X25519_IDENTITY_HRP:
            raise KeyFormatError("not an age X25519 secret key (expected 'AGE-SECRET-KEY-1...')")
        return cls(data)

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self._public)

    def __str__(self) -> str:
        return bech32.encode(X25519_IDENTITY_HRP, self._secret)

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, X25519Identity):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "X25519":
                continue
            if len(stanza.args) != 1:
                raise HeaderError(f"X25519 stanza has {len(stanza.args) + 1} arguments, expected 2")
            share = b64decode(stanza.args[0], "X25519 share")
            if len(share) != 32:
                raise HeaderError(f"X25519 share is {len(share)} bytes, expected 32")
            _check_body(stanza)
            shared = _x25519(self._secret, share)
            key = hkdf_sha256(shared, share + self._public, X25519_LABEL)
            file_key = _open_file_key(key, stanza.body)
            if file_key is not None:
                return file_key
        return None


# --- scrypt (passphrase) ----------------------------------------------------------------------


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    raw = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not raw:
        raise KeyFormatError("the passphrase is empty")
    return raw


def scrypt_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    """scrypt(N=2**work_factor, r=8, p=1, dkLen=32, S=label||salt, P=passphrase).

    libsodium's scrypt rather than hashlib's: it is about twice as fast here and has no 2 GiB
    memory cap (hashlib's maxmem stops at work factor 20; age accepts up to 22).
    """
    n = 1 << work_factor
    maxmem = 128 * 8 * (n + 2) + 1024 * 1024  # the V and B buffers, with room to spare
    return crypto_pwhash_scryptsalsa208sha256_ll(
        passphrase, SCRYPT_LABEL + salt, n, 8, 1, 32, maxmem
    )


class ScryptRecipient:
    """Encrypts to a passphrase. Must be the only recipient of a file."""

    __slots__ = ("_passphrase", "work_factor")

    def __init__(self, passphrase: bytes | str, work_factor: int = 18) -> None:
        if not 1 <= work_factor <= _MAX_WRITE_WORK_FACTOR:
            raise KeyFormatError(f"scrypt work factor {work_factor} is out of range 1..22")
        self._passphrase = _passphrase_bytes(passphrase)
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(SCRYPT_SALT_SIZE)
        key = scrypt_key(self._passphrase, salt, self.work_factor)
        args = (b64encode(salt), str(self.work_factor))
        return [Stanza("scrypt", args, _seal_file_key(key, file_key))]


class ScryptIdentity:
    """Decrypts files encrypted to a passphrase, refusing work factors above the maximum."""

    __slots__ = ("_passphrase", "max_work_factor")

    def __init__(self, passphrase: bytes | str, max_work_factor: int = 22) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self.max_work_factor = max_work_factor

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != "scrypt":
                continue
            _check_scrypt_alone(stanzas)
            salt, work_factor = self._parse_args(stanza)
            _check_body(stanza)
            key = scrypt_key(self._passphrase, salt, work_factor)
            return _open_file_key(key, stanza.body)
        return None

    def _parse_args(self, stanza: Stanza) -> tuple[bytes, int]:
        if len(stanza.args) != 2:
            raise HeaderError(f"scrypt stanza has {len(stanza.args) + 1} arguments, expected 3")
        salt = b64decode(stanza.args[0], "scrypt salt")
        if len(salt) != SCRYPT_SALT_SIZE:
            raise HeaderError(f"scrypt salt is {len(salt)} bytes, expected 16")
        text = stanza.args[1]
        if not _WORK_FACTOR.fullmatch(text) or len(text) > 3:
            raise HeaderError(f"scrypt work factor {text[:8]!r} is not a plain decimal number")
        if int(text) > self.max_work_factor:
            raise HeaderError(
                f"scrypt work factor {text} is above the maximum {self.max_work_factor}"
            )
        return salt, int(text)


# --- files ------------------------------------------------------------------------------------


class Encryptor:
    """Push-style age encryption. Write `header` first, then every list update()/finalize() give.

    `header` is the age header followed by the 16-byte payload nonce: everything that comes
    before the first payload chunk. At most one 64 KiB chunk of plaintext is held at any time.
    """

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        if not recipients:
            raise HeaderError("an age file needs at least one recipient")
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = [stanza for recipient in recipients for stanza in recipient.wrap(file_key)]
        _check_scrypt_alone(stanzas)
        nonce = os.urandom(NONCE_SIZE)
        self.header: bytes = encode_header(stanzas, file_key) + nonce
        self._stream = StreamEncryptor(payload_key(file_key, nonce))

    @property
    def buffered(self) -> int:
        """Plaintext bytes held back, never more than one chunk."""
        return self._stream.buffered

    def update(self, data: bytes) -> list[bytes]:
        return self._stream.update(data)

    def finalize(self) -> list[bytes]:
        return self._stream.finalize()


def _unwrap_file_key(header: Header, identities: Sequence[Identity]) -> bytes:
    _check_scrypt_alone(header.stanzas)
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            break
    else:
        raise NoIdentityMatchError("no identity matched any of the file's recipients")
    if len(file_key) != FILE_KEY_SIZE:
        raise HeaderError(f"unwrapped file key is {len(file_key)} bytes, expected 16")
    if not hmac.compare_digest(_header_mac(file_key, header.mac_input), header.mac):
        raise HmacError("header MAC does not verify: the header was altered")
    return file_key


class Decryptor:
    """Push-style age decryption: update() and finalize() return authenticated plaintext only.

    Errors: HeaderError, NoIdentityMatchError, HmacError once the header is complete,
    PayloadError for a bad chunk or (in finalize) a truncated file. A caller that streams the
    plaintext somewhere must discard all of it if any call raises.
    """

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._identities = tuple(identities)
        self._pending = bytearray()  # bytes before the payload stream is set up
        self._file_key: bytes | None = None
        self._payload_offset = 0
        self._stream: StreamDecryptor | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back: the header while it is incomplete, then at most one sealed chunk."""
        return len(self._pending) if self._stream is None else self._stream.buffered

    def update(self, data: bytes) -> list[bytes]:
        if self._stream is not None:
            return self._stream.update(data)
        self._pending += data
        if not self._start(at_end=False):
            return []
        return self._stream_rest()

    def finalize(self) -> list[bytes]:
        opened: list[bytes] = []
        if self._stream is None:
            self._start(at_end=True)
            opened = self._stream_rest()
        assert self._stream is not None
        return opened + self._stream.finalize()

    def _stream_rest(self) -> list[bytes]:
        assert self._stream is not None
        rest = bytes(self._pending)
        self._pending = bytearray()
        return self._stream.update(rest)

    def _start(self, at_end: bool) -> bool:
        """Set up the payload stream once header and nonce are in; False if more is needed."""
        if self._file_key is None and not self._read_header(at_end):
            return False
        assert self._file_key is not None
        nonce_end = self._payload_offset + NONCE_SIZE
        if len(self._pending) < nonce_end:
            if at_end:
                raise HeaderError("file ends before the 16-byte payload nonce is complete")
            return False
        nonce = bytes(self._pending[self._payload_offset : nonce_end])
        del self._pending[:nonce_end]
        self._stream = StreamDecryptor(payload_key(self._file_key, nonce))
        return True

    def _read_header(self, at_end: bool) -> bool:
        pending = self._pending
        if not pending.startswith(_VERSION_PREFIX[: len(pending)]):
            raise HeaderError("not an age file: it does not start with 'age-encryption.org/'")
        # The first line starting with "---" is the MAC line of a well-formed header.
        mac_line = pending.find(b"\n---")
        end = pending.find(b"\n", mac_line + 1) if mac_line >= 0 else -1
        if end < 0:
            if len(pending) > MAX_HEADER_SIZE:
                raise HeaderError(f"header is larger than {MAX_HEADER_SIZE} bytes")
            if at_end:
                raise HeaderError("file ends before the header is complete")
            return False
        header, self._payload_offset = parse_header(bytes(pending[: end + 1]))
        self._file_key = _unwrap_file_key(header, self._identities)
        return True


def encrypt(plaintext: bytes, recipients: Sequence[Recipient]) -> bytes:
    encryptor = Encryptor(recipients)
    return b"".join([encryptor.header, *encryptor.update(plaintext), *encryptor.finalize()])


def decrypt(ciphertext: bytes, identities: Sequence[Identity]) -> bytes:
    """The whole plaintext, or an AgeError: never a partial result."""
    decryptor = Decryptor(identities)
    parts = decryptor.update(ciphertext)
    parts += decryptor.finalize()
    return b"".join(parts)


def decrypt_iter(chunks: Iterable[bytes], identities: Sequence[Identity]) -> Iterator[bytes]:
    """Decrypt a stream; see Decryptor for what an exception midway means."""
    decryptor = Decryptor(identities)
    for chunk in chunks:
        yield from decryptor.update(chunk)
    yield from decryptor.finalize()
