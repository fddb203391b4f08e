"""Hypothesis properties of keys.age: round trips whatever the splits, and no silent tampering."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.age import Encryptor, X25519Identity, decrypt, decrypt_iter, encrypt
from keys.errors import AgeError
from keys.stream import CHUNK_SIZE, SEALED_CHUNK_SIZE

IDENTITIES = [X25519Identity.generate() for _ in range(3)]
OUTSIDER = X25519Identity.generate()

# Sizes cluster around the chunk boundaries, where off-by-one bugs live.
BOUNDARY_SIZES = st.sampled_from([0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE])
SIZES = st.one_of(BOUNDARY_SIZES, st.integers(0, 3 * CHUNK_SIZE + 17))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, rng: random.Random, max_piece: int) -> list[bytes]:
    pieces = []
    offset = 0
    while offset < len(data):
        size = rng.randint(0, max_piece)  # empty pieces are legal input too
        pieces.append(data[offset : offset + size])
        offset += size
    return pieces


@SETTINGS
@given(size=SIZES, seed=st.integers(0, 2**32), recipients=st.integers(1, 3))
def test_round_trip_with_random_splits(size: int, seed: int, recipients: int) -> None:
    rng = random.Random(seed)
    plaintext = rng.randbytes(size)
    encryptor = Encryptor([i.recipient() for i in IDENTITIES[:recipients]])
    chunks = [encryptor.header]
    for piece in split(plaintext, rng, 3 * CHUNK_SIZE // 2):
        produced = encryptor.update(piece)
        assert all(len(c) == SEALED_CHUNK_SIZE for c in produced)
        assert encryptor.buffered <= CHUNK_SIZE
        chunks += produced
    chunks += encryptor.finalize()
    ciphertext = b"".join(chunks)
    # Every recipient can open it, whichever way the ciphertext arrives.
    reader = IDENTITIES[rng.randrange(recipients)]
    assert decrypt(ciphertext, [OUTSIDER, reader]) == plaintext
    pieces = split(ciphertext, rng, 2 * SEALED_CHUNK_SIZE)
    assert b"".join(decrypt_iter(pieces, [reader])) == plaintext


def _ciphertext(size: int, seed: int) -> bytes:
    return encrypt(random.Random(seed).randbytes(size), [IDENTITIES[0].recipient()])


@SETTINGS
@given(size=SIZES, seed=st.integers(0, 2**32), data=st.data())
def test_truncation_always_raises(size: int, seed: int, data: st.DataObject) -> None:
    ciphertext = _ciphertext(size, seed)
    cut = data.draw(st.integers(0, len(ciphertext) - 1), label="cut")
    with pytest.raises(AgeError):
        decrypt(ciphertext[:cut], IDENTITIES[:1])


@SETTINGS
@given(size=SIZES, seed=st.integers(0, 2**32), data=st.data())
def test_bit_flip_always_raises(size: int, seed: int, data: st.DataObject) -> None:
    ciphertext = bytearray(_ciphertext(size, seed))
    position = data.draw(st.integers(0, len(ciphertext) - 1), label="position")
    ciphertext[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(AgeError):
        decrypt(bytes(ciphertext), IDENTITIES[:1])


@SETTINGS
@given(size=SIZES, seed=st.integers(0, 2**32), extra=st.binary(min_size=1, max_size=40))
def test_trailing_data_always_raises(size: int, seed: int, extra: bytes) -> None:
    with pytest.raises(AgeError):
        decrypt(_ciphertext(size, seed) + extra, IDENTITIES[:1])


@SETTINGS
@given(data=st.data())
def test_bit_flip_in_header_or_nonce_always_raises(data: st.DataObject) -> None:
    encryptor = Encryptor([i.recipient() for i in IDENTITIES])
    ciphertext = bytearray(encryptor.header + b"".join(encryptor.finalize()))
    position = data.draw(st.integers(0, len(encryptor.header) - 1), label="position")
    ciphertext[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(AgeError):
        decrypt(bytes(ciphertext), IDENTITIES)
