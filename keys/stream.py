"""The age v1 payload: STREAM over ChaCha20-Poly1305 in 64 KiB chunks (pure, no I/O).

Chunk i (from 0) is sealed with the payload key and the 12-byte nonce `i` (11 bytes, big endian)
followed by 0x01 for the final chunk and 0x00 before it. The final chunk may be short but is
empty only when the whole plaintext is empty. Both classes are push-style and hold at most one
chunk: the encryptor keeps back the last full chunk until it knows whether more data follows.
"""

from __future__ import annotations

import hashlib
import hmac

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from keys.errors import PayloadError

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
_PAYLOAD_INFO = b"payload"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869) with a 32-byte output, the only length age uses."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf_sha256(file_key, nonce, _PAYLOAD_INFO)


def _chunk_nonce(counter: int, final: bool) -> bytes:
    return ((counter << 8) | final).to_bytes(12, "big")


class StreamEncryptor:
    """Seals plaintext pushed in pieces of any size into age payload chunks."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        # Plaintext not yet sealed: at most CHUNK_SIZE bytes in total. Immutable `bytes` pieces
        # are kept by reference, so chunk-aligned input is never copied before sealing.
        self._held: list[bytes] = []
        self._held_len = 0
        self._finished = False

    @property
    def buffered(self) -> int:
        """Plaintext bytes held back (never more than one chunk)."""
        return self._held_len

    def update(self, data: bytes) -> list[bytes]:
        if self._finished:
            raise PayloadError("cannot encrypt more data: the stream is already finalized")
        size = len(data)
        if self._held_len + size <= CHUNK_SIZE:
            self._hold(data if type(data) is bytes else bytes(data))
            return []
        sealed: list[bytes] = []
        view = memoryview(data)
        offset = 0
        if self._held_len:
            offset = CHUNK_SIZE - self._held_len
            self._hold(view[:offset].tobytes())
            sealed.append(self._seal(self._take_held(), final=False))
        while size - offset > CHUNK_SIZE:
            sealed.append(self._seal(view[offset : offset + CHUNK_SIZE].tobytes(), final=False))
            offset += CHUNK_SIZE
        # The rest (1..CHUNK_SIZE bytes) waits: it may turn out to be the final chunk.
        self._hold(data if offset == 0 and type(data) is bytes else view[offset:].tobytes())
        return sealed

    def finalize(self) -> list[bytes]:
        if self._finished:
            raise PayloadError("the stream is already finalized")
        self._finished = True
        return [self._seal(self._take_held(), final=True)]

    def _hold(self, piece: bytes) -> None:
        if piece:
            self._held.append(piece)
            self._held_len += len(piece)

    def _take_held(self) -> bytes:
        held = self._held
        chunk = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_len = 0
        return chunk

    def _seal(self, chunk: bytes, final: bool) -> bytes:
        nonce = _chunk_nonce(self._counter, final)
        self._counter += 1
        return crypto_aead_chacha20poly1305_ietf_encrypt(chunk, None, nonce, self._key)


class StreamDecryptor:
    """Opens age payload chunks pushed in pieces of any size; yields only authenticated data."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buffer = bytearray()
        self._finished = False

    @property
    def buffered(self) -> int:
        """Ciphertext bytes held back: at most one sealed chunk after each update."""
        return len(self._buffer)

    def update(self, data: bytes) -> list[bytes]:
        if self._finished:
            raise PayloadError("cannot decrypt more data: the stream is already finalized")
        buffer = self._buffer
        buffer += data
        opened: list[bytes] = []
        offset = 0
        # Strictly more than one sealed chunk buffered: the first one cannot be the final chunk.
        with memoryview(buffer) as view:
            while len(buffer) - offset > SEALED_CHUNK_SIZE:
                chunk = view[offset : offset + SEALED_CHUNK_SIZE].tobytes()
                opened.append(self._open(chunk, final=False))
                offset += SEALED_CHUNK_SIZE
        del buffer[:offset]
        return opened

    def finalize(self) -> list[bytes]:
        if self._finished:
            raise PayloadError("the stream is already finalized")
        self._finished = True
        rest = bytes(self._buffer)
        self._buffer = bytearray()
        if not rest:
            raise PayloadError("payload is truncated: it has no final chunk")
        if len(rest) < TAG_SIZE:
            raise PayloadError(f"payload is truncated: final chunk is only {len(rest)} bytes")
        if len(rest) == TAG_SIZE and self._counter > 0:
            raise PayloadError("payload ends with an empty final chunk after a full chunk")
        return [self._open(rest, final=True)]

    def _open(self, chunk: bytes, final: bool) -> bytes:
        nonce = _chunk_nonce(self._counter, final)
        try:
            plaintext = crypto_aead_chacha20poly1305_ietf_decrypt(chunk, None, nonce, self._key)
        except CryptoError:
            raise PayloadError(self._why_not(chunk, final)) from None
        self._counter += 1
        return plaintext

    def _why_not(self, chunk: bytes, final: bool) -> str:
        """Say why a chunk failed; trying the other final flag tells truncation from tampering."""
        where = f"payload chunk {self._counter}"
        try:
            nonce = _chunk_nonce(self._counter, not final)
            crypto_aead_chacha20poly1305_ietf_decrypt(chunk, None, nonce, self._key)
        except CryptoError:
            return f"{where} does not authenticate: the file was altered"
        if final:
            return f"payload is truncated: {where} is not marked as the final chunk"
        return f"{where} is marked final but more data follows it"
