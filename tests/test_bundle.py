"""keys/bundle.py: round trips and every way a bundle can be refused."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from keys import bundle as b
from keys.errors import TransferError

RECIPIENT = "age1" + "q" * 58
KEY = SigningKey(b"\x01" * 32)
OTHER_KEY = SigningKey(b"\x02" * 32)


def _ct(name: str, kind: b.Kind, data: bytes) -> b.Ciphertext:
    return b.Ciphertext(name, kind, len(data), hashlib.sha256(data).hexdigest())


def _transfer(contents: dict[str, bytes]) -> b.TransferManifest:
    names = list(contents)
    items = []
    for i in range(0, len(names), 2):
        group = names[i : i + 2]
        kinds: list[b.Kind] = ["message", "file"]
        items.append(
            b.TransferItem(
                submission_id=f"sub{i}",
                day="2026-11-26",
                source_id=f"src{i % 3}",
                reply_recipient=RECIPIENT,
                ciphertexts=tuple(_ct(n, kinds[j], contents[n]) for j, n in enumerate(group)),
            )
        )
    return b.TransferManifest("inst1", b.new_bundle_id(), "2026-11-26", tuple(items))


CONTENTS = {"a.age": b"alpha" * 100, "b.age": b"", "c.age": os.urandom(70_000)}


def _build(contents: dict[str, bytes] = CONTENTS, key: SigningKey = KEY) -> bytes:
    manifest = _transfer(contents)
    out = io.BytesIO()
    files = [(n, io.BytesIO(d), len(d)) for n, d in contents.items()]
    n = b.write_bundle(out, manifest, files, key)
    assert n == len(out.getvalue())
    return out.getvalue()


def _read(data: bytes, key: SigningKey = KEY) -> b.VerifiedBundle:
    return b.read_bundle(io.BytesIO(data), b.transfer_key_lookup(key.verify_key))


def test_round_trip() -> None:
    data = _build()
    bundle = _read(data)
    assert isinstance(bundle.manifest, b.TransferManifest)
    assert [n for n, _, _ in bundle.manifest.files()] == list(CONTENTS)
    for name, content in CONTENTS.items():
        assert bundle.read_member(name) == content
    assert bundle.manifest.items[0].ciphertexts[0].kind == "message"


def test_bundle_is_deterministic_standard_tar() -> None:
    manifest = _transfer(CONTENTS)

    def build() -> bytes:
        out = io.BytesIO()
        b.write_bundle(
            out, manifest, [(n, io.BytesIO(d), len(d)) for n, d in CONTENTS.items()], KEY
        )
        return out.getvalue()

    assert build() == build()
    with tarfile.open(fileobj=io.BytesIO(build())) as tar:
        assert tar.getnames() == ["manifest.json", "manifest.sig", *CONTENTS]
        member = tar.extractfile("c.age")
        assert member is not None
        assert member.read() == CONTENTS["c.age"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar binary")
def test_gnu_tar_lists_it(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    path.write_bytes(_build())
    listing = subprocess.run(["tar", "tf", str(path)], check=True, capture_output=True, text=True)
    assert listing.stdout.split() == ["manifest.json", "manifest.sig", *CONTENTS]


def test_reply_round_trip_and_signer_lookup() -> None:
    data = b"reply ciphertext"
    reply = b.Reply(
        "r1",
        "src1",
        RECIPIENT,
        "r1.age",
        len(data),
        hashlib.sha256(data).hexdigest(),
        "Alice",
        "2026-11-26",
    )
    manifest = b.ReplyManifest("inst1", b.new_bundle_id(), "2026-11-26", "Alice", (reply,))
    out = io.BytesIO()
    b.write_bundle(out, manifest, [("r1.age", io.BytesIO(data), len(data))], KEY)
    raw = out.getvalue()
    got = b.read_bundle(io.BytesIO(raw), b.reply_key_lookup({"Alice": KEY.verify_key}))
    assert got.manifest == manifest
    assert got.read_member("r1.age") == data
    # Bob's key, a revoked (absent) Alice, and a transfer-only reader all refuse it.
    for lookup in (
        b.reply_key_lookup({"Alice": OTHER_KEY.verify_key}),
        b.reply_key_lookup({"Bob": KEY.verify_key}),
        b.transfer_key_lookup(KEY.verify_key),
    ):
        with pytest.raises(b.BundleSignatureError):
            b.read_bundle(io.BytesIO(raw), lookup)


def test_transfer_bundle_not_accepted_as_reply() -> None:
    with pytest.raises(b.BundleSignatureError, match="transfer"):
        b.read_bundle(io.BytesIO(_build()), b.reply_key_lookup({"Alice": KEY.verify_key}))


def test_write_streams_large_file_in_bounded_chunks() -> None:
    size = 21 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(21):
        digest.update(block)

    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self.left = size
            self.biggest = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            assert 0 < n <= 1024 * 1024, "write_bundle must read in bounded chunks"
            self.biggest = max(self.biggest, n)
            pos = size - self.left
            chunk = (block * 2)[pos % len(block) : pos % len(block) + min(n, self.left)]
            self.left -= len(chunk)
            return chunk

    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.total = 0
            self.digest = hashlib.sha256()

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.total += len(data)
            return len(data)

    ct = b.Ciphertext("big.age", "file", size, digest.hexdigest())
    item = b.TransferItem("s1", "2026-11-26", "src", RECIPIENT, (ct,))
    manifest = b.TransferManifest("i", "bid", "2026-11-26", (item,))
    sink = Sink()
    stream = Stream()
    b.write_bundle(sink, manifest, [("big.age", stream, size)], KEY)  # type: ignore[list-item]
    assert sink.total > size
    assert stream.biggest <= b.CHUNK


def test_writer_refuses_content_that_would_not_verify() -> None:
    manifest = _transfer(CONTENTS)
    files = [(n, io.BytesIO(d), len(d)) for n, d in CONTENTS.items()]
    files[0] = ("a.age", io.BytesIO(b"x" * 500), 500)
    with pytest.raises(b.BundleHashError):
        b.write_bundle(io.BytesIO(), manifest, files, KEY)
    with pytest.raises(b.BundleMalformedError, match="no file given"):
        b.write_bundle(io.BytesIO(), manifest, files[:1][:0], KEY)


def _members(data: bytes) -> list[tuple[int, str, int]]:
    """(header offset, name, size) of each member, parsed the simple way."""
    out, pos = [], 0
    while any(data[pos : pos + 512]):
        name = data[pos : pos + 100].rstrip(b"\0").decode()
        size = int(data[pos + 124 : pos + 135], 8)
        out.append((pos, name, size))
        pos += 512 + size + (-size % 512)
    return out


def _offset_of(data: bytes, member: str) -> int:
    return next(pos for pos, name, _ in _members(data) if name == member) + 512


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _reheader(data: bytes, member: str, patch: Callable[[bytearray], None]) -> bytes:
    pos = _offset_of(data, member) - 512
    header = bytearray(data[pos : pos + 512])
    patch(header)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return data[:pos] + bytes(header) + data[pos + 512 :]


def _rename(new: bytes) -> Callable[[bytearray], None]:
    def patch(header: bytearray) -> None:
        header[0:100] = new.ljust(100, b"\0")

    return patch


def test_flipped_ciphertext_byte_refused() -> None:
    data = _build()
    with pytest.raises(b.BundleHashError, match=r"c\.age"):
        _read(_flip(data, _offset_of(data, "c.age") + 1234))


def test_flipped_manifest_byte_refused() -> None:
    data = _build()
    at = (
        _offset_of(data, "manifest.json")
        + data[_offset_of(data, "manifest.json") :].index(b"sub0")
        + 3
    )
    tampered = data[:at] + b"9" + data[at + 1 :]  # still valid JSON, different submission id
    with pytest.raises(b.BundleSignatureError):
        _read(tampered)


def test_bad_signature_and_wrong_key_refused() -> None:
    data = _build()
    with pytest.raises(b.BundleSignatureError):
        _read(_flip(data, _offset_of(data, "manifest.sig") + 5))
    with pytest.raises(b.BundleSignatureError):
        _read(data, key=OTHER_KEY)
    with pytest.raises(b.BundleSignatureError):
        _read(_build(key=OTHER_KEY))


@pytest.mark.parametrize("cut", [0, 100, 512, 700, 1536, 4000, -1100, -1024, -512, -1])
def test_truncated_refused(cut: int) -> None:
    data = _build()
    with pytest.raises((b.BundleTruncatedError, b.BundleMalformedError)):
        _read(data[:cut])


def test_truncated_inside_ciphertext_is_truncated() -> None:
    data = _build()
    with pytest.raises(b.BundleTruncatedError):
        _read(data[: _offset_of(data, "c.age") + 100])


def test_missing_member_refused() -> None:
    data = _build()
    members = _members(data)
    pos_c = next(p for p, n, _ in members if n == "c.age")
    without_c = data[:pos_c] + b"\0" * 1024
    with pytest.raises(b.BundleMalformedError, match=r"without member 'c\.age'"):
        _read(without_c)


def test_extra_member_refused() -> None:
    data = _build()
    end = len(data) - 1024
    extra = b._ustar_header("d.age", 3) + b"abc" + b"\0" * 509
    with pytest.raises(b.BundleMalformedError, match=r"unexpected tar member 'd\.age'"):
        _read(data[:end] + extra + b"\0" * 1024)


def test_duplicate_member_refused() -> None:
    data = _build()
    end = len(data) - 1024
    pos_a = _offset_of(data, "a.age") - 512
    pos_b = _offset_of(data, "b.age") - 512
    dup = data[pos_a:pos_b]
    with pytest.raises(b.BundleMalformedError, match="twice"):
        _read(data[:end] + dup + b"\0" * 1024)


def test_trailing_garbage_refused_but_zero_padding_accepted() -> None:
    data = _build()
    _read(data + b"\0" * 8192)  # tar implementations pad to records; harmless
    with pytest.raises(b.BundleMalformedError, match="after the end"):
        _read(data + b"garbage")


@pytest.mark.parametrize(
    "name", [b"../a.age", b"/etc/a.age", b"x/a.age", b".hidden", b"a\\b", b"caf\xc3\xa9"]
)
def test_path_traversal_names_refused(name: bytes) -> None:
    data = _reheader(_build(), "a.age", _rename(name))
    with pytest.raises(b.BundleMalformedError):
        _read(data)


@pytest.mark.parametrize("typeflag", [b"1", b"2", b"3", b"5", b"x", b"L", b"\0"])
def test_links_and_special_members_refused(typeflag: bytes) -> None:
    def patch(header: bytearray) -> None:
        header[156:157] = typeflag
        header[157:163] = b"target"

    with pytest.raises(b.BundleMalformedError):
        _read(_reheader(_build(), "a.age", patch))


def test_bad_header_checksum_refused() -> None:
    data = _build()
    with pytest.raises(b.BundleMalformedError, match="checksum"):
        _read(_flip(data, _offset_of(data, "a.age") - 512 + 3))


def test_oversize_members_refused() -> None:
    data = _build()
    pos = _offset_of(data, "manifest.sig") - 512

    def big(header: bytearray) -> None:
        header[124:136] = b"%011o\0" % 65

    with pytest.raises(b.BundleMalformedError, match="over the limit"):
        _read(data[:pos] + _reheader(data[pos:], "manifest.sig", big))


def test_wrong_size_member_refused() -> None:
    def patch(header: bytearray) -> None:
        header[124:136] = b"%011o\0" % 499

    with pytest.raises(b.BundleHashError, match=r"a\.age is 499 bytes"):
        _read(_reheader(_build(), "a.age", patch))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.replace(b'"format":"amanat-transfer-bundle/1"', b'"format":"x"'),
        lambda d: d.replace(b'"kind":"message"', b'"kind":"script"', 1),
        lambda d: d.replace(b'"day":"2026-11-26"', b'"day":"yesterday"', 1),
        lambda d: d.replace(b'"name":"a.age"', b'"name":"../a.age"', 1),
        lambda d: d.replace(b'"name":"b.age"', b'"name":"a.age"', 1),
        lambda d: d.replace(b'"size":500', b'"size":-1', 1),
        lambda d: d.replace(b'"size":500', b'"size":true', 1),
        lambda d: d.replace(b'"items":[', b'"extra":1,"items":[', 1),
        lambda d: d.replace(b'{"bundle_id"', b'{"bundle_id":"x","bundle_id"', 1),
        lambda d: d[:-1],
        lambda d: b"[]",
        lambda d: b"\xff",
    ],
)
def test_malformed_manifest_refused(mutate: Callable[[bytes], bytes]) -> None:
    good = b.encode_manifest(_transfer(CONTENTS))
    with pytest.raises(b.BundleMalformedError):
        b.decode_manifest(mutate(good))


def test_errors_are_in_the_tree() -> None:
    assert issubclass(b.BundleHashError, TransferError)
    assert issubclass(b.BundleTruncatedError, ValueError)


def test_member_changed_after_verification_is_caught() -> None:
    buf = io.BytesIO(_build())
    bundle = b.read_bundle(buf, b.transfer_key_lookup(KEY.verify_key))
    at = _offset_of(buf.getvalue(), "a.age") + 10
    buf.seek(at)
    buf.write(b"!")
    with pytest.raises(b.BundleHashError, match="changed"):
        bundle.read_member("a.age")


def test_nonzero_padding_refused() -> None:
    data = _build()
    end_of_a = _offset_of(data, "a.age") + 500
    with pytest.raises(b.BundleMalformedError, match="padding"):
        _read(data[:end_of_a] + b"X" + data[end_of_a + 1 :])


def test_every_single_byte_flip_and_every_truncation_is_refused() -> None:
    """Exhaustive on a small bundle: headers carry checksums, the manifest a signature, members
    hashes, padding and the end marker must be zero; so no byte can change unnoticed."""
    small = {"m.age": b"message ciphertext", "f.age": b"x" * 600}
    data = _build(small)
    lookup = b.transfer_key_lookup(KEY.verify_key)
    for at in range(len(data)):
        with pytest.raises(b.BundleError):
            b.read_bundle(io.BytesIO(_flip(data, at)), lookup)
    for cut in range(len(data)):
        with pytest.raises(b.BundleError):
            b.read_bundle(io.BytesIO(data[:cut]), lookup)
