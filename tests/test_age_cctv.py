"""CCTV age test vectors (tests/vectors/age, see PROVENANCE.md): each gives exactly its `expect`.

Armored vectors (we do not implement ASCII armor) and ML-KEM hybrid vectors (no post-quantum
identity type) are skipped; `test_cctv_summary` prints how many ran, passed and were skipped.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from keys.age import Identity, ScryptIdentity, X25519Identity, decrypt
from keys.errors import AgeError, HeaderError, HmacError, NoIdentityMatchError, PayloadError

VECTORS = Path(__file__).parent / "vectors" / "age"
OUTCOMES: dict[type[AgeError], str] = {
    HeaderError: "header failure",
    HmacError: "HMAC failure",
    PayloadError: "payload failure",
    NoIdentityMatchError: "no match",
}


@dataclass(frozen=True)
class Vector:
    name: str
    expect: str
    payload_sha256: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    armored: bool
    age_file: bytes

    @property
    def skip_reason(self) -> str | None:
        if self.armored:
            return "ASCII armor is not implemented"
        if any(i.startswith("AGE-SECRET-KEY-PQ-") for i in self.identities):
            return "ML-KEM hybrid identities are not implemented"
        return None


def load_vector(path: Path) -> Vector:
    meta_block, _, body = path.read_bytes().partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in meta_block.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload_sha256=fields.get("payload", [None])[0],
        identities=tuple(fields.get("identity", [])),
        passphrases=tuple(fields.get("passphrase", [])),
        armored=fields.get("armored") == ["yes"],
        age_file=body,
    )


ALL_VECTORS = [load_vector(p) for p in sorted(VECTORS.iterdir()) if p.name != "PROVENANCE.md"]


def outcome(vector: Vector) -> str:
    """What our implementation does with the vector, in the vocabulary of `expect`."""
    identities: list[Identity] = [X25519Identity.parse(i) for i in vector.identities]
    identities += [ScryptIdentity(p) for p in vector.passphrases]
    try:
        plaintext = decrypt(vector.age_file, identities)
    except AgeError as exc:
        return OUTCOMES[type(exc)]
    if hashlib.sha256(plaintext).hexdigest() != vector.payload_sha256:
        return "success with a wrong payload"
    return "success"


def test_vectors_are_all_there() -> None:
    assert len(ALL_VECTORS) == 143
    assert {v.expect for v in ALL_VECTORS} >= {
        "success",
        "no match",
        "HMAC failure",
        "header failure",
        "payload failure",
    }


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=[v.name for v in ALL_VECTORS])
def test_vector(vector: Vector) -> None:
    if vector.skip_reason:
        pytest.skip(vector.skip_reason)
    assert outcome(vector) == vector.expect


def test_cctv_summary(capsys: pytest.CaptureFixture[str]) -> None:
    runnable = [v for v in ALL_VECTORS if not v.skip_reason]
    failed = [v.name for v in runnable if outcome(v) != v.expect]
    skipped = len(ALL_VECTORS) - len(runnable)
    with capsys.disabled():
        print(
            f"\nCCTV age vectors: ran {len(runnable)}, passed {len(runnable) - len(failed)}, "
            f"skipped {skipped} (armored or ML-KEM)"
        )
    assert not failed
    assert len(runnable) >= 90
