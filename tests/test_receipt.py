"""keys/receipt.py: a source's receipt opens only with its key and says nothing in clear."""

from __future__ import annotations

import json

import nacl.secret
import pytest

from keys.errors import InputError
from keys.receipt import (
    PAD_BYTES,
    Receipt,
    ReceiptError,
    open_receipt,
    receipt_file,
    seal_receipt,
)

KEY = bytes(range(32))


def test_a_receipt_round_trips_and_keeps_only_the_hash_prefix() -> None:
    receipt = Receipt(True, (receipt_file("صورة.jpg", 12345, "ABCDEF0123456789" * 4),
                             receipt_file("n" * 400, 0, "0" * 64)))
    sealed = seal_receipt(KEY, receipt)
    opened = open_receipt(KEY, sealed)
    assert opened.message is True
    assert opened.files[0].name == "صورة.jpg"
    assert opened.files[0].sha256_prefix == "abcdef01"
    assert opened.files[1].name == "n" * 255
    assert "صورة".encode() not in sealed
    assert b"abcdef01" not in sealed


def test_the_padding_hides_the_length_of_names() -> None:
    short = seal_receipt(KEY, Receipt(False, (receipt_file("a", 1, "0" * 64),)))
    long = seal_receipt(KEY, Receipt(False, (receipt_file("a" * 150, 1, "0" * 64),)))
    assert len(short) == len(long) == PAD_BYTES + 40


@pytest.mark.parametrize("damage", ["other key", "flipped", "truncated", "empty", "garbage"])
def test_anything_but_a_receipt_sealed_with_this_key_is_refused(damage: str) -> None:
    sealed = bytearray(seal_receipt(KEY, Receipt(False, ())))
    key = KEY
    if damage == "other key":
        key = bytes(32)
    elif damage == "flipped":
        sealed[-1] ^= 1
    elif damage == "truncated":
        sealed = sealed[:30]
    elif damage == "empty":
        sealed = bytearray()
    else:
        sealed = bytearray(b"\xff" * 300)
    with pytest.raises(ReceiptError) as caught:
        open_receipt(key, bytes(sealed))
    assert isinstance(caught.value, InputError)


@pytest.mark.parametrize("document", [
    [], {"v": 2, "message": False, "files": []}, {"v": 1, "message": 1, "files": []},
    {"v": 1, "message": False, "files": {}},
    {"v": 1, "message": False, "files": [["a", -1, "00000000"]]},
    {"v": 1, "message": False, "files": [["a", True, "00000000"]]},
    {"v": 1, "message": False, "files": [["a", 1, "0000000"]]},
    {"v": 1, "message": False, "files": [["a", 1, "ABCDEF01"]]},
    {"v": 1, "message": False, "files": [["a" * 256, 1, "00000000"]]},
    {"v": 1, "message": False, "files": [["a", 1]]},
])
def test_a_sealed_document_of_the_wrong_shape_is_refused(document: object) -> None:
    sealed = nacl.secret.SecretBox(KEY).encrypt(json.dumps(document).encode())
    with pytest.raises(ReceiptError):
        open_receipt(KEY, bytes(sealed))
