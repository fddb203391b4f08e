"""keys.age / keys.bech32 / keys.stream: encodings, header rules, streaming bounds, typed errors."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from keys import bech32
from keys.age import (
    MAX_HEADER_SIZE,
    Decryptor,
    Encryptor,
    ScryptIdentity,
    ScryptRecipient,
    Stanza,
    X25519Identity,
    X25519Recipient,
    decrypt,
    decrypt_iter,
    encrypt,
    parse_header,
    scrypt_key,
)
from keys.errors import (
    AgeError,
    AmanatError,
    HeaderError,
    HmacError,
    KeyFormatError,
    NoIdentityMatchError,
    PayloadError,
)
from keys.stream import CHUNK_SIZE, NONCE_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE

SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
# Curve25519 point of order 8 (a low-order public key; X25519 with it gives all zeros).
LOW_ORDER_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.fixture(scope="module")
def identity() -> X25519Identity:
    return X25519Identity.generate()


# --- bech32 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "A12UEL5L",
        "a12uel5l",
        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
        "?1ezyfcl",
        "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    ],
)
def test_bech32_bip173_valid_strings_decode_and_reencode(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert bech32.encode(hrp, data) == text


@pytest.mark.parametrize(
    "text",
    [
        "A12UeL5L",  # mixed case
        "a12uel5m",  # checksum
        "pzry9x0s0muk",  # no separator
        "1pzry9x0s0muk",  # empty human-readable part
        "x1b4n0q5v",  # invalid data character
        "li1dgmt3",  # checksum too short
        "a12uel5l" + "q",  # extra character breaks the checksum
        "age1qqqsyqcyq5rqwzqfpg9scrgwpugpzysnzs23v9ccrydpk8qarc0sgs8mme",  # bech32m, not bech32
    ],
)
def test_bech32_rejects_invalid_strings(text: str) -> None:
    with pytest.raises(KeyFormatError):
        bech32.decode(text)


def test_bech32_has_no_length_limit() -> None:
    data = bytes(range(256)) * 4
    text = bech32.encode("age1pq", data)
    assert len(text) > 90
    assert bech32.decode(text) == ("age1pq", data)


def test_bech32_uppercase_hrp_gives_uppercase_string() -> None:
    text = bech32.encode("AGE-SECRET-KEY-", bytes(32))
    assert text == text.upper()
    assert bech32.decode(text) == ("AGE-SECRET-KEY-", bytes(32))


# --- keys ---------------------------------------------------------------------------------------


def test_spec_example_identity_and_recipient() -> None:
    identity = X25519Identity.parse(SPEC_IDENTITY)
    assert str(identity) == SPEC_IDENTITY
    assert str(identity.recipient()) == SPEC_RECIPIENT
    assert X25519Recipient.parse(SPEC_RECIPIENT) == identity.recipient()
    assert identity == X25519Identity.from_secret(b"\x42" * 32)


def test_generated_keys_round_trip_through_strings(identity: X25519Identity) -> None:
    assert X25519Identity.parse(str(identity)) == identity
    recipient = identity.recipient()
    assert X25519Recipient.parse(str(recipient)).public_key == recipient.public_key
    assert str(identity).startswith("AGE-SECRET-KEY-1")
    assert str(recipient).startswith("age1")


def test_identity_repr_never_shows_the_secret(identity: X25519Identity) -> None:
    assert str(identity) not in repr(identity)
    assert str(identity)[16:] not in repr(identity).upper()
    assert "hunter2" not in repr(ScryptIdentity("hunter2"))
    assert "hunter2" not in repr(ScryptRecipient("hunter2"))


@pytest.mark.parametrize(
    "text",
    [
        SPEC_RECIPIENT.upper(),  # recipients are lowercase
        SPEC_IDENTITY,  # an identity is not a recipient
        SPEC_RECIPIENT[:-1] + "q",  # checksum
        bech32.encode("age", bytes(31)),  # wrong length
        "",
    ],
)
def test_recipient_parse_rejects(text: str) -> None:
    with pytest.raises(KeyFormatError):
        X25519Recipient.parse(text)


@pytest.mark.parametrize(
    "text",
    [SPEC_IDENTITY.lower(), SPEC_RECIPIENT, bech32.encode("AGE-SECRET-KEY-", bytes(33))],
)
def test_identity_parse_rejects_without_quoting_the_secret(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        X25519Identity.parse(text)
    assert text not in str(info.value)


def test_low_order_recipient_cannot_be_encrypted_to() -> None:
    with pytest.raises(KeyFormatError, match="low-order"):
        encrypt(b"x", [X25519Recipient(LOW_ORDER_POINT)])


def test_low_order_share_is_a_header_error(identity: X25519Identity) -> None:
    # pynacl raises a bare RuntimeError here: it must surface as a HeaderError.
    stanza = Stanza("X25519", (_b64(LOW_ORDER_POINT),), bytes(32))
    with pytest.raises(HeaderError, match="low-order"):
        identity.unwrap([stanza])


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode().rstrip("=")


# --- header encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body_size", "lines"), [(0, [""]), (32, [43]), (48, [64, ""]), (49, [64, 2])]
)
def test_stanza_body_wraps_at_64_columns_and_ends_short(
    body_size: int, lines: list[object]
) -> None:
    encoded = Stanza("test", ("a", "b"), bytes(body_size)).encode().decode()
    arg_line, *body_lines, tail = encoded.split("\n")
    assert arg_line == "-> test a b"
    assert tail == ""
    assert [
        len(line) if isinstance(n, int) else line for line, n in zip(body_lines, lines, strict=True)
    ] == lines


@pytest.mark.parametrize("args", [("",), ("a b",), ("caf\u00e9",), ("tab\t",)])
def test_stanza_with_bad_arguments_is_not_encoded(args: tuple[str, ...]) -> None:
    with pytest.raises(HeaderError):
        Stanza("test", args, b"").encode()


def test_header_parses_back_and_payload_offset_points_after_it(identity: X25519Identity) -> None:
    encryptor = Encryptor([identity.recipient(), X25519Identity.generate().recipient()])
    header, offset = parse_header(encryptor.header)
    assert len(encryptor.header) == offset + NONCE_SIZE
    assert encryptor.header.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert [s.type for s in header.stanzas] == ["X25519", "X25519"]
    assert header.mac_input.endswith(b"\n---")
    assert identity.unwrap(header.stanzas) is not None


def test_parse_header_is_strict_about_truncation(identity: X25519Identity) -> None:
    header = Encryptor([identity.recipient()]).header
    _, offset = parse_header(header)
    for cut in range(offset):
        with pytest.raises(HeaderError):
            parse_header(header[:cut])


def test_scrypt_recipient_must_be_alone(identity: X25519Identity) -> None:
    with pytest.raises(HeaderError, match="only stanza"):
        Encryptor([ScryptRecipient("pw", work_factor=2), identity.recipient()])


def test_no_recipient_is_refused() -> None:
    with pytest.raises(HeaderError):
        Encryptor([])


# --- payload ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_sizes"),
    [
        (0, [TAG_SIZE]),
        (1, [1 + TAG_SIZE]),
        (CHUNK_SIZE, [SEALED_CHUNK_SIZE]),
        (CHUNK_SIZE + 1, [SEALED_CHUNK_SIZE, 1 + TAG_SIZE]),
        (2 * CHUNK_SIZE, [SEALED_CHUNK_SIZE, SEALED_CHUNK_SIZE]),
    ],
)
def test_chunking_at_boundaries(
    identity: X25519Identity, size: int, chunk_sizes: list[int]
) -> None:
    plaintext = os.urandom(size)
    encryptor = Encryptor([identity.recipient()])
    chunks = encryptor.update(plaintext) + encryptor.finalize()
    assert [len(c) for c in chunks] == chunk_sizes
    assert decrypt(encryptor.header + b"".join(chunks), [identity]) == plaintext


def test_encryptor_holds_at_most_one_chunk(identity: X25519Identity) -> None:
    rng = random.Random(7)
    plaintext = rng.randbytes(10 * 1024 * 1024)
    encryptor = Encryptor([identity.recipient()])
    decryptor = Decryptor([identity])
    recovered = decryptor.update(encryptor.header)
    offset = 0
    while offset < len(plaintext):
        piece = plaintext[offset : offset + rng.choice([1, 777, 8191, CHUNK_SIZE - 1, 100_003])]
        offset += len(piece)
        chunks = encryptor.update(piece)
        assert encryptor.buffered <= CHUNK_SIZE
        assert all(len(c) == SEALED_CHUNK_SIZE for c in chunks)
        for chunk in chunks:
            recovered += decryptor.update(chunk)
            assert decryptor.buffered <= SEALED_CHUNK_SIZE
    final = encryptor.finalize()
    assert len(final) == 1
    assert len(final[0]) <= SEALED_CHUNK_SIZE
    recovered += decryptor.update(final[0]) + decryptor.finalize()
    assert b"".join(recovered) == plaintext


def test_decryptor_accepts_one_byte_at_a_time(identity: X25519Identity) -> None:
    plaintext = os.urandom(CHUNK_SIZE + 5)
    ciphertext = encrypt(plaintext, [identity.recipient()])
    assert b"".join(decrypt_iter((bytes([b]) for b in ciphertext), [identity])) == plaintext


def test_decryptor_refuses_garbage_at_once(identity: X25519Identity) -> None:
    with pytest.raises(HeaderError, match="not an age file"):
        Decryptor([identity]).update(b"\x89PNG\r\n\x1a\n")


def test_decryptor_bounds_the_header(identity: X25519Identity) -> None:
    decryptor = Decryptor([identity])
    decryptor.update(b"age-encryption.org/v1\n")
    line = b"-> x " + b"a" * 994 + b"\n"
    for _ in range(MAX_HEADER_SIZE // len(line)):
        assert decryptor.update(line) == []
    with pytest.raises(HeaderError, match="larger than"):
        decryptor.update(line)


def test_update_after_finalize_is_an_error(identity: X25519Identity) -> None:
    encryptor = Encryptor([identity.recipient()])
    encryptor.finalize()
    with pytest.raises(PayloadError):
        encryptor.update(b"more")


def test_wrong_identity_is_no_match(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"secret", [identity.recipient()])
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [X25519Identity.generate()])
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [])


def test_second_identity_is_tried(identity: X25519Identity) -> None:
    ciphertext = encrypt(b"secret", [identity.recipient()])
    assert decrypt(ciphertext, [X25519Identity.generate(), identity]) == b"secret"


def test_scrypt_round_trip_wrong_passphrase_and_work_factor_limit() -> None:
    ciphertext = encrypt(b"identity file", [ScryptRecipient("correct horse", work_factor=10)])
    assert decrypt(ciphertext, [ScryptIdentity("correct horse")]) == b"identity file"
    assert decrypt(ciphertext, [ScryptIdentity(b"correct horse")]) == b"identity file"
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [ScryptIdentity("wrong horse")])
    with pytest.raises(HeaderError, match="above the maximum"):
        decrypt(ciphertext, [ScryptIdentity("correct horse", max_work_factor=9)])


def test_scrypt_key_matches_hashlib_scrypt() -> None:
    salt = bytes(range(16))
    expected = hashlib.scrypt(
        b"pw", salt=b"age-encryption.org/v1/scrypt" + salt, n=2**10, r=8, p=1, dklen=32
    )
    assert scrypt_key(b"pw", salt, 10) == expected


def test_altered_header_is_an_hmac_error(identity: X25519Identity) -> None:
    other = X25519Identity.generate()
    ciphertext = encrypt(b"secret", [identity.recipient(), other.recipient()])
    header, _ = parse_header(ciphertext)
    # Swap the two stanzas: both still unwrap, but the MAC covers their order.
    first, second = (s.encode() for s in header.stanzas)
    swapped = ciphertext.replace(first + second, second + first)
    with pytest.raises(HmacError):
        decrypt(swapped, [identity])


def test_truncated_and_extended_payloads_are_payload_errors(identity: X25519Identity) -> None:
    ciphertext = encrypt(os.urandom(2 * CHUNK_SIZE), [identity.recipient()])
    with pytest.raises(PayloadError, match="not marked as the final"):
        decrypt(ciphertext[:-SEALED_CHUNK_SIZE], [identity])
    with pytest.raises(PayloadError, match="final but more data follows"):
        decrypt(ciphertext + ciphertext[-SEALED_CHUNK_SIZE:], [identity])


def test_errors_are_typed_value_errors() -> None:
    for error in (HeaderError, HmacError, PayloadError, NoIdentityMatchError, KeyFormatError):
        assert issubclass(error, AgeError)
        assert issubclass(error, ValueError)
        assert issubclass(error, AmanatError)
