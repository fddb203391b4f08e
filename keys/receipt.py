"""A source's receipt: what one submission brought, sealed with a key only the codename derives.

The server must show a returning source what arrived (per file its name, size and the first
digits of its SHA-256) without keeping any of that readable: file names are the content's
business. So the receipt is sealed (XSalsa20-Poly1305, pynacl's SecretBox) with the source's
receipt key (keys/codename.py, derived from the same Argon2id output as the lookup id), which the
server holds only in the memory of a logged-in session. Whoever seizes the database sees a
padded blob per submission; whoever also knows the codename could log in anyway.

Format: JSON `{"v": 1, "message": bool, "files": [[name, size, sha256_prefix], ...]}`, padded
with spaces to a multiple of `PAD_BYTES` (so the blob tells the number of files only roughly,
never the length of a name), then sealed. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret

from keys.errors import InputError

PAD_BYTES = 256
SHA256_PREFIX_CHARS = 8
MAX_NAME_CHARS = 255
MAX_FILES = 10_000
_PREFIX = re.compile(r"[0-9a-f]{8}")


class ReceiptError(InputError):
    """A sealed receipt does not open with this key, or is not a receipt."""


@dataclass(frozen=True)
class ReceiptFile:
    name: str
    size: int
    sha256_prefix: str  # the first 8 hex digits of the plaintext's SHA-256


@dataclass(frozen=True)
class Receipt:
    message: bool
    files: tuple[ReceiptFile, ...]


def receipt_file(name: str, size: int, sha256_hex: str) -> ReceiptFile:
    """A file's line: the name cut to `MAX_NAME_CHARS`, the hash cut to its first 8 digits."""
    return ReceiptFile(name[:MAX_NAME_CHARS], size, sha256_hex[:SHA256_PREFIX_CHARS].lower())


def seal_receipt(key: bytes, receipt: Receipt) -> bytes:
    document = {"v": 1, "message": receipt.message,
                "files": [[f.name, f.size, f.sha256_prefix] for f in receipt.files]}
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    padded = text + b" " * (-len(text) % PAD_BYTES)
    return bytes(nacl.secret.SecretBox(key).encrypt(padded))


def open_receipt(key: bytes, sealed: bytes) -> Receipt:
    """The receipt, or ReceiptError for anything that is not one sealed with `key`."""
    try:
        plain = nacl.secret.SecretBox(key).decrypt(sealed)
        document = json.loads(plain.decode("utf-8"))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise ReceiptError("the receipt does not open with this key") from None
    if (not isinstance(document, dict) or document.get("v") != 1
            or not isinstance(document.get("message"), bool)
            or not isinstance(document.get("files"), list)
            or len(document["files"]) > MAX_FILES):
        raise ReceiptError("not a receipt")
    return Receipt(document["message"], tuple(_file(item) for item in document["files"]))


def _file(item: object) -> ReceiptFile:
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and len(item[0]) <= MAX_NAME_CHARS and isinstance(item[1], int)
            and not isinstance(item[1], bool) and item[1] >= 0 and isinstance(item[2], str)
            and _PREFIX.fullmatch(item[2])):
        raise ReceiptError("not a receipt's file line")
    return ReceiptFile(item[0], item[1], item[2])
