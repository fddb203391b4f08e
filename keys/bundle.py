"""Transfer bundles and reply bundles (docs/format.md, section 5).

A bundle is a strict POSIX ustar archive: `manifest.json`, `manifest.sig` (a detached Ed25519
signature over the exact manifest bytes), then every age file the manifest lists, in manifest
order. The server's transfer key signs transfer bundles; an investigator's key signs reply bundles.

This module is pure: it reads from and writes to the binary streams it is given and nothing else.
`read_bundle` verifies the signature and the size and SHA-256 of every ciphertext before it returns,
so a caller never sees anything from a bundle that does not verify whole.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Literal

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from keys.errors import TransferError
from keys.manifest import IntakeLimits, IntakeManifestError

TRANSFER_FORMAT = "amanat-transfer-bundle/1"
REPLY_FORMAT = "amanat-reply-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
KINDS = ("message", "file", "manifest")
Kind = Literal["message", "file", "manifest"]

BLOCK = 512
CHUNK = 64 * 1024
MAX_MANIFEST_SIZE = 64 * 1024 * 1024
MAX_MEMBER_SIZE = 8**11 - 1  # the largest size an 11-digit octal ustar field can hold (8 GiB - 1)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RECIPIENT_RE = re.compile(r"age1[02-9ac-hj-np-z]{58}")
_LABEL_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,128}")


# --- errors -----------------------------------------------------------------------------------


class BundleError(TransferError, ValueError):
    """A bundle was refused. Never raised directly."""


class BundleMalformedError(BundleError):
    """The archive or manifest breaks the format (links, odd names, extra or missing members)."""


class BundleTruncatedError(BundleError):
    """The archive ends before the format says it does."""


class BundleSignatureError(BundleError):
    """The manifest signature is missing, invalid, or made by a key we do not trust."""


class BundleHashError(BundleError):
    """A ciphertext's size or SHA-256 differs from what the signed manifest says."""


# --- manifest model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ciphertext:
    """One age file in a transfer bundle."""

    name: str
    kind: Kind
    size: int
    sha256: str


@dataclass(frozen=True)
class TransferItem:
    """One submission: its age files and where replies to its source go."""

    submission_id: str
    day: str
    source_id: str
    reply_recipient: str
    ciphertexts: tuple[Ciphertext, ...]


@dataclass(frozen=True)
class TransferManifest:
    instance_id: str
    bundle_id: str
    created_day: str
    items: tuple[TransferItem, ...]
    # The intake limits the server enforced; the review tool checks submission manifests against
    # them. None: not signed (older servers), and the reader assumes the defaults.
    limits: IntakeLimits | None = None

    def files(self) -> list[tuple[str, int, str]]:
        """(name, size, sha256) of every member after the signature, in archive order."""
        return [(c.name, c.size, c.sha256) for i in self.items for c in i.ciphertexts]


@dataclass(frozen=True)
class Reply:
    """One age-encrypted reply to a source, written by an investigator."""

    reply_id: str
    source_id: str
    reply_recipient: str
    name: str
    size: int
    sha256: str
    investigator: str
    day: str


@dataclass(frozen=True)
class ReplyManifest:
    instance_id: str
    bundle_id: str
    created_day: str
    investigator: str
    replies: tuple[Reply, ...]

    def files(self) -> list[tuple[str, int, str]]:
        return [(r.name, r.size, r.sha256) for r in self.replies]


Manifest = TransferManifest | ReplyManifest
# Given the manifest (parsed, not yet verified), the key that must have signed it, or None.
VerifyKeyLookup = Callable[[Manifest], VerifyKey | None]


def new_bundle_id() -> str:
    return secrets.token_hex(16)


def transfer_key_lookup(transfer_verify_key: VerifyKey) -> VerifyKeyLookup:
    """Accept only transfer bundles signed by the pinned server transfer key."""

    def lookup(manifest: Manifest) -> VerifyKey | None:
        return transfer_verify_key if isinstance(manifest, TransferManifest) else None

    return lookup


def reply_key_lookup(investigator_keys: Mapping[str, VerifyKey]) -> VerifyKeyLookup:
    """Accept only reply bundles signed by one of these (label -> key; pass only unrevoked)."""

    def lookup(manifest: Manifest) -> VerifyKey | None:
        if not isinstance(manifest, ReplyManifest):
            return None
        return investigator_keys.get(manifest.investigator)

    return lookup


# --- manifest encoding ------------------------------------------------------------------------


def encode_manifest(manifest: Manifest) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    if isinstance(manifest, TransferManifest):
        doc: dict[str, object] = {
            "format": TRANSFER_FORMAT,
            "instance_id": manifest.instance_id,
            "bundle_id": manifest.bundle_id,
            "created_day": manifest.created_day,
            "items": [_item_doc(i) for i in manifest.items],
        }
        if manifest.limits is not None:
            doc["limits"] = manifest.limits.to_json()
    else:
        doc = {
            "format": REPLY_FORMAT,
            "instance_id": manifest.instance_id,
            "bundle_id": manifest.bundle_id,
            "created_day": manifest.created_day,
            "investigator": manifest.investigator,
            "replies": [_reply_doc(r) for r in manifest.replies],
        }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    decode_manifest(data)  # never write what we would refuse to read
    return data


def _item_doc(item: TransferItem) -> dict[str, object]:
    return {
        "submission_id": item.submission_id,
        "day": item.day,
        "source_id": item.source_id,
        "reply_recipient": item.reply_recipient,
        "ciphertexts": [
            {"name": c.name, "kind": c.kind, "size": c.size, "sha256": c.sha256}
            for c in item.ciphertexts
        ],
    }


def _reply_doc(reply: Reply) -> dict[str, object]:
    return {
        "reply_id": reply.reply_id,
        "source_id": reply.source_id,
        "reply_recipient": reply.reply_recipient,
        "name": reply.name,
        "size": reply.size,
        "sha256": reply.sha256,
        "investigator": reply.investigator,
        "day": reply.day,
    }


def decode_manifest(data: bytes) -> Manifest:
    """Parse and strictly check a manifest. Says nothing about its signature."""
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleMalformedError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleMalformedError("manifest.json is not a JSON object")
    fmt = doc.get("format")
    if fmt == TRANSFER_FORMAT:
        manifest: Manifest = _decode_transfer(doc)
    elif fmt == REPLY_FORMAT:
        manifest = _decode_reply(doc)
    else:
        raise BundleMalformedError(f"unknown bundle format {fmt!r}")
    names = [n for n, _, _ in manifest.files()]
    if len(set(names)) != len(names):
        raise BundleMalformedError("manifest lists the same member name twice")
    return manifest


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise BundleMalformedError(f"manifest.json repeats the key {key!r}")
        out[key] = value
    return out


def _decode_transfer(doc: dict[str, object]) -> TransferManifest:
    base = {"format", "instance_id", "bundle_id", "created_day", "items"}
    _keys(doc, base | ({"limits"} if "limits" in doc else set()), "manifest")
    try:
        limits = IntakeLimits.from_json(doc["limits"]) if "limits" in doc else None
    except IntakeManifestError as exc:
        raise BundleMalformedError(f"manifest: {exc}") from None
    items = []
    for raw in _list(doc["items"], "items"):
        item = _obj(raw, "item")
        _keys(item, {"submission_id", "day", "source_id", "reply_recipient", "ciphertexts"}, "item")
        cts = []
        for raw_ct in _list(item["ciphertexts"], "ciphertexts"):
            ct = _obj(raw_ct, "ciphertext")
            _keys(ct, {"name", "kind", "size", "sha256"}, "ciphertext")
            kind = _str(ct["kind"], "kind")
            if kind not in KINDS:
                raise BundleMalformedError(f"unknown ciphertext kind {kind!r}")
            cts.append(
                Ciphertext(
                    name=_name(ct["name"]),
                    kind=kind,  # type: ignore[arg-type]  # checked against KINDS just above
                    size=_size(ct["size"]),
                    sha256=_match(_SHA256_RE, ct["sha256"], "sha256"),
                )
            )
        items.append(
            TransferItem(
                submission_id=_match(_ID_RE, item["submission_id"], "submission_id"),
                day=_match(_DAY_RE, item["day"], "day"),
                source_id=_match(_ID_RE, item["source_id"], "source_id"),
                reply_recipient=_match(_RECIPIENT_RE, item["reply_recipient"], "reply_recipient"),
                ciphertexts=tuple(cts),
            )
        )
    ids = [i.submission_id for i in items]
    if len(set(ids)) != len(ids):
        raise BundleMalformedError("manifest lists the same submission twice")
    return TransferManifest(
        instance_id=_match(_ID_RE, doc["instance_id"], "instance_id"),
        bundle_id=_match(_ID_RE, doc["bundle_id"], "bundle_id"),
        created_day=_match(_DAY_RE, doc["created_day"], "created_day"),
        items=tuple(items),
        limits=limits,
    )


_REPLY_KEYS = {"reply_id", "source_id", "reply_recipient", "name", "size", "sha256"}


def _decode_reply(doc: dict[str, object]) -> ReplyManifest:
    _keys(
        doc,
        {"format", "instance_id", "bundle_id", "created_day", "investigator", "replies"},
        "manifest",
    )
    signer = _match(_LABEL_RE, doc["investigator"], "investigator")
    replies = []
    for raw in _list(doc["replies"], "replies"):
        rep = _obj(raw, "reply")
        _keys(rep, _REPLY_KEYS | {"investigator", "day"}, "reply")
        if rep["investigator"] != signer:
            raise BundleMalformedError("a reply names another investigator than the bundle's")
        replies.append(
            Reply(
                reply_id=_match(_ID_RE, rep["reply_id"], "reply_id"),
                source_id=_match(_ID_RE, rep["source_id"], "source_id"),
                reply_recipient=_match(_RECIPIENT_RE, rep["reply_recipient"], "reply_recipient"),
                name=_name(rep["name"]),
                size=_size(rep["size"]),
                sha256=_match(_SHA256_RE, rep["sha256"], "sha256"),
                investigator=signer,
                day=_match(_DAY_RE, rep["day"], "day"),
            )
        )
    ids = [r.reply_id for r in replies]
    if len(set(ids)) != len(ids):
        raise BundleMalformedError("manifest lists the same reply twice")
    return ReplyManifest(
        instance_id=_match(_ID_RE, doc["instance_id"], "instance_id"),
        bundle_id=_match(_ID_RE, doc["bundle_id"], "bundle_id"),
        created_day=_match(_DAY_RE, doc["created_day"], "created_day"),
        investigator=signer,
        replies=tuple(replies),
    )


def _keys(obj: dict[str, object], expected: set[str], what: str) -> None:
    if set(obj) != expected:
        extra, missing = sorted(set(obj) - expected), sorted(expected - set(obj))
        raise BundleMalformedError(f"{what}: unexpected keys {extra}, missing keys {missing}")


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise BundleMalformedError(f"{what} is not a JSON object")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise BundleMalformedError(f"{what} is not a JSON array")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise BundleMalformedError(f"{what} is not a string")
    return value


def _match(pattern: re.Pattern[str], value: object, what: str) -> str:
    text = _str(value, what)
    if not pattern.fullmatch(text):
        raise BundleMalformedError(f"{what} {text[:80]!r} is malformed")
    return text


def _name(value: object) -> str:
    name = _match(_NAME_RE, value, "member name")
    if name in (MANIFEST_NAME, SIGNATURE_NAME):
        raise BundleMalformedError(f"a ciphertext may not be called {name}")
    return name


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MEMBER_SIZE:
        raise BundleMalformedError(f"size {value!r} is not an integer in range")
    return value


# --- ustar members ----------------------------------------------------------------------------


def _ustar_header(name: str, size: int) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name.encode("ascii")
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _parse_header(block: bytes) -> tuple[str, int]:
    """The (name, size) of a regular-file ustar header, or BundleMalformedError."""
    stored = block[148:156]
    if sum(block[:148]) + 32 * 8 + sum(block[156:]) != _octal(stored, "checksum"):
        raise BundleMalformedError("a tar header checksum is wrong")
    if block[257:265] != b"ustar\x0000":
        raise BundleMalformedError("a tar header is not POSIX ustar")
    if block[156:157] != b"0":
        raise BundleMalformedError(
            f"tar member type {block[156:157]!r} refused: only regular files are allowed"
        )
    if any(block[345:500]) or any(block[157:257]):
        raise BundleMalformedError("tar member has a path prefix or a link name")
    raw_name = block[0:100].split(b"\0", 1)[0]
    if block[len(raw_name) : 100].strip(b"\0"):
        raise BundleMalformedError("tar member name has bytes after its end")
    try:
        name = raw_name.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BundleMalformedError("tar member name is not ASCII") from exc
    if name not in (MANIFEST_NAME, SIGNATURE_NAME) and not _NAME_RE.fullmatch(name):
        raise BundleMalformedError(f"tar member name {name!r} refused (paths are not allowed)")
    return name, _octal(block[124:136], "size")


def _octal(field: bytes, what: str) -> int:
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if not digits or not re.fullmatch(rb"[0-7]+", digits):
        raise BundleMalformedError(f"tar header field {what} is not octal")
    return int(digits, 8)


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise BundleTruncatedError(f"bundle ends inside {what}")
    return data


class _Reader:
    """Reads ustar members in order from a stream, refusing everything the format forbids."""

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.seen: set[str] = set()

    def next_header(self, expected: str | None) -> tuple[str, int] | None:
        """The next member's (name, size); None at the end-of-archive marker."""
        what = f"the header of {expected}" if expected else "the end-of-archive marker"
        block = _read_exact(self.src, BLOCK, what)
        if not any(block):
            if any(_read_exact(self.src, BLOCK, "the end-of-archive marker")):
                raise BundleMalformedError("the end-of-archive marker is not two zero blocks")
            self._check_trailer()
            return None
        name, size = _parse_header(block)
        if name in self.seen:
            raise BundleMalformedError(f"tar member {name!r} appears twice")
        self.seen.add(name)
        if name != expected:
            raise BundleMalformedError(
                f"unexpected tar member {name!r} (expected {expected or 'the end of the archive'})"
            )
        return name, size

    def _check_trailer(self) -> None:
        while chunk := self.src.read(CHUNK):
            if any(chunk):
                raise BundleMalformedError("data after the end-of-archive marker")

    def read_small(self, name: str, size: int, limit: int) -> bytes:
        if size > limit:
            raise BundleMalformedError(f"{name} is {size} bytes, over the limit of {limit}")
        data = _read_exact(self.src, size, name)
        self.skip_padding(name, size)
        return data

    def hash_member(self, name: str, size: int) -> str:
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = _read_exact(self.src, min(CHUNK, left), name)
            digest.update(chunk)
            left -= len(chunk)
        self.skip_padding(name, size)
        return digest.hexdigest()

    def skip_padding(self, name: str, size: int) -> None:
        if any(_read_exact(self.src, -size % BLOCK, f"the padding of {name}")):
            raise BundleMalformedError(f"the padding after {name} is not all zero bytes")


# --- writing ----------------------------------------------------------------------------------


def sign_manifest(manifest_bytes: bytes, signing_key: SigningKey) -> bytes:
    return bytes(signing_key.sign(manifest_bytes).signature)


def write_bundle(
    out: BinaryIO,
    manifest: Manifest,
    files: Iterable[tuple[str, BinaryIO, int]],
    signing_key: SigningKey,
) -> int:
    """Stream a signed bundle to `out`; returns the number of bytes written.

    `files` yields (name, stream, size) in manifest order; each stream is read in chunks and
    checked against the manifest's size and SHA-256 as it goes, so a bundle that would not verify
    raises (BundleHashError, BundleMalformedError) instead of being finished. On any error the
    caller must discard what was written.
    """
    manifest_bytes = encode_manifest(manifest)
    signature = sign_manifest(manifest_bytes, signing_key)
    written = _write_member(out, MANIFEST_NAME, manifest_bytes)
    written += _write_member(out, SIGNATURE_NAME, signature)
    expected = iter(manifest.files())
    for name, stream, size in files:
        want = next(expected, None)
        if want is None or want[0] != name or want[1] != size:
            raise BundleMalformedError(f"file {name!r} ({size} bytes) is not next in the manifest")
        written += _copy_member(out, name, stream, size, want[2])
    if (missing := next(expected, None)) is not None:
        raise BundleMalformedError(f"no file given for manifest member {missing[0]!r}")
    out.write(b"\0" * (2 * BLOCK))
    return written + 2 * BLOCK


def _write_member(out: BinaryIO, name: str, data: bytes) -> int:
    out.write(_ustar_header(name, len(data)))
    out.write(data)
    out.write(_padding(len(data)))
    return BLOCK + len(data) + len(_padding(len(data)))


def _copy_member(out: BinaryIO, name: str, stream: BinaryIO, size: int, sha256: str) -> int:
    out.write(_ustar_header(name, size))
    digest = hashlib.sha256()
    left = size
    while left:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise BundleHashError(f"{name}: the stream ended {left} bytes short of its size")
        digest.update(chunk)
        out.write(chunk)
        left -= len(chunk)
    if stream.read(1):
        raise BundleHashError(f"{name}: the stream is longer than its size {size}")
    if digest.hexdigest() != sha256:
        raise BundleHashError(f"{name}: content does not match the manifest's SHA-256")
    out.write(_padding(size))
    return BLOCK + size + len(_padding(size))


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and every ciphertext hash verified.

    Members are read back from the same (seekable) stream; `iter_member` hashes again as it reads
    and raises BundleHashError at the end if the stream changed since it was verified, so a caller
    that streams a member somewhere must discard it on any exception.
    """

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    signer: VerifyKey
    _src: BinaryIO
    _offsets: Mapping[str, tuple[int, int, str]]  # name -> (offset, size, sha256)

    def offset(self, name: str) -> int:
        """Where the member's bytes start in the bundle (for callers that keep the bundle)."""
        return self._offsets[name][0]

    def iter_member(self, name: str) -> Iterator[bytes]:
        offset, size, sha256 = self._offsets[name]
        self._src.seek(offset)
        digest = hashlib.sha256()
        left = size
        while left:
            chunk = _read_exact(self._src, min(CHUNK, left), name)
            digest.update(chunk)
            left -= len(chunk)
            yield chunk
        if digest.hexdigest() != sha256:
            raise BundleHashError(f"{name} changed after the bundle was verified")

    def read_member(self, name: str) -> bytes:
        return b"".join(self.iter_member(name))


def read_bundle(src: BinaryIO, verify_key_lookup: VerifyKeyLookup) -> VerifiedBundle:
    """Verify a whole bundle from a seekable binary stream, then return it.

    Checks, in order: archive structure (ustar, regular files, safe names, no duplicates, members
    exactly manifest.json, manifest.sig, then the manifest's files in order), the manifest's
    syntax, its Ed25519 signature against the key `verify_key_lookup` names, then the size and
    SHA-256 of every ciphertext. Raises a BundleError subclass naming the first problem found.
    """
    reader = _Reader(src)
    header = reader.next_header(MANIFEST_NAME)
    if header is None:
        raise BundleMalformedError("bundle is empty")
    manifest_bytes = reader.read_small(MANIFEST_NAME, header[1], MAX_MANIFEST_SIZE)
    header = reader.next_header(SIGNATURE_NAME)
    if header is None:
        raise BundleMalformedError("bundle has no manifest.sig")
    signature = reader.read_small(SIGNATURE_NAME, header[1], 64)
    manifest = decode_manifest(manifest_bytes)
    key = verify_key_lookup(manifest)
    if key is None:
        raise BundleSignatureError(_unknown_signer(manifest))
    try:
        key.verify(manifest_bytes, signature)
    except BadSignatureError as exc:
        raise BundleSignatureError("manifest.sig does not verify with the expected key") from exc
    offsets = {}
    for name, size, sha256 in manifest.files():
        header = reader.next_header(name)
        if header is None:
            raise BundleMalformedError(f"bundle ends without member {name!r}")
        if header[1] != size:
            raise BundleHashError(f"{name} is {header[1]} bytes, the manifest says {size}")
        offsets[name] = (src.tell(), size, sha256)
        if reader.hash_member(name, size) != sha256:
            raise BundleHashError(f"{name} does not match the SHA-256 in the signed manifest")
    if reader.next_header(None) is not None:  # pragma: no cover - next_header raises instead
        raise BundleMalformedError("bundle has members the manifest does not list")
    return VerifiedBundle(manifest, manifest_bytes, signature, key, src, offsets)


def _unknown_signer(manifest: Manifest) -> str:
    if isinstance(manifest, ReplyManifest):
        return (
            f"no trusted key for a reply bundle from {manifest.investigator!r} "
            "(unknown or revoked investigator, or reply bundles are not accepted here)"
        )
    return "no trusted key for a transfer bundle (transfer bundles are not accepted here)"

