"""What an attachment's metadata says about the person who made it, and copies cleaned of it.

A photo can carry the GPS position where it was taken and the phone that took it; a PDF or an
Office file the name of its author. On import each attachment is read with exiftool in the
sandbox (review/sandbox.py) and the findings kept in the vault's encrypted state:

    gps     [lat, lon]                     where the file says it was made
    device  "Make Model"                   the camera or phone
    times   {tag: value}                   capture, creation and modification times
    author  {tag: value}                   author, creator, producer, company, last editor
    unreadable  "why"                      the parser failed or was stopped at a limit

each key present only where found. A perceptual hash of each photo (imagehash's difference
hash, in the same sandbox) finds near-duplicates (review/duplicates.py). `clean_copy` makes a
working copy with mat2 in the sandbox, and exiftool reads both again to say what went.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from review.sandbox import MIB, WORKDIR, Limits, Sandbox, SandboxError
from review.state import CiphertextRecord, FileRecord, Findings, SubmissionRecord

if TYPE_CHECKING:
    from review.content import Attachment

Plaintext = Callable[[], Iterable[bytes]]  # a fresh iterator of the attachment's bytes per call

TIME_TAGS = ("DateTimeOriginal", "CreateDate", "ModifyDate", "MetadataDate", "GPSDateTime",
             "DateTimeDigitized", "DateCreated", "TrackCreateDate", "MediaCreateDate")
AUTHOR_TAGS = ("Author", "Creator", "Artist", "Producer", "LastModifiedBy", "Company",
               "Manager", "OwnerName", "Copyright", "CameraOwnerName", "XPAuthor")
MAX_VALUE = 200  # characters kept of one hostile value
HASH_MAX_BYTES = 64 * MIB  # larger images are not hashed (decoding would need too much memory)
CLEAN_MAX_BYTES = 256 * MIB  # larger files get no working copy (it is made in memory)
PARSE_LIMITS = Limits(memory_bytes=512 * MIB, cpu_seconds=20, wall_seconds=30.0)
HASH_LIMITS = Limits(memory_bytes=768 * MIB, cpu_seconds=20, wall_seconds=30.0)

EXIFTOOL = ["exiftool", "-json", "-n", "-G0", "--System:all"]
# exiftool reads Office files (ZIP) and MP4s with the index at the end only from a file it can
# seek in: a file up to this size is written to the sandbox's private tmpfs (memory) first;
# a larger one is read from the pipe, as far as the memory limit lets it.
SEEKABLE_MAX_BYTES = 256 * MIB
# Runs inside the sandbox with the review tool's Python (Pillow and imagehash from the `review`
# extra): the photo comes on stdin; Pillow's own decompression-bomb check stays on. The
# difference hash: stable under resizing and recompression, and it needs no scipy at run time
# (the DCT hash imports it: a second of start-up per photo; bench/bench_metadata.py).
PHASH_SCRIPT = (
    "import io,sys\n"
    "from PIL import Image\n"
    "import imagehash\n"
    "print(imagehash.dhash(Image.open(io.BytesIO(sys.stdin.buffer.read()))))\n"
)


@dataclass(frozen=True)
class Cleaned:
    data: bytes
    sha256: str
    tool: str  # "mat2 0.13.3"
    removed: list[str]  # the metadata tags exiftool saw before and not after
    left: Findings  # findings still there after cleaning (should be empty)


class Reading(TypedDict):
    """What exiftool (and the perceptual hash) made of one attachment."""

    tool: str
    metadata: Findings
    filetype: NotRequired[str | None]
    phash: NotRequired[str]


def read_attachment(sandbox: Sandbox, plaintext: Plaintext, size: int) -> Reading:
    """The vault's record of one attachment's metadata: `metadata` (findings), `filetype` (what
    exiftool recognised), `phash` (photos) and the tool that read it."""
    tool = exiftool_version(sandbox)
    try:
        tags = exif_tags(sandbox, plaintext, size)
    except SandboxError as exc:
        return {"tool": tool, "metadata": {"unreadable": f"metadata unreadable: {exc}"}}
    found = findings(tags)
    record: Reading = {"tool": tool, "metadata": found, "filetype": _extension(tags)}
    if str(tags.get("File:MIMEType", "")).startswith("image/") and size <= HASH_MAX_BYTES:
        try:
            record["phash"] = perceptual_hash(sandbox, plaintext)
        except SandboxError as exc:
            unreadable = f"metadata unreadable: the image: {exc}"
            record["metadata"] = {**found, "unreadable": unreadable}
    return record


def exif_tags(sandbox: Sandbox, plaintext: Plaintext, size: int) -> dict[str, Any]:
    """exiftool's tags (group:name -> value) of one file of `size` bytes."""
    if size > SEEKABLE_MAX_BYTES:
        output = sandbox.run([*EXIFTOOL, "-"], plaintext(), PARSE_LIMITS)
    else:
        path = f"{WORKDIR}/attachment"
        script = f'cat > "{path}" && exec {" ".join(EXIFTOOL)} "{path}"'
        limits = replace(PARSE_LIMITS, file_bytes=size + MIB)
        output = sandbox.run(["/bin/sh", "-c", script], plaintext(), limits)
    try:
        documents = json.loads(output)
        tags = documents[0]
    except (ValueError, IndexError, KeyError, TypeError):
        raise SandboxError("exiftool's answer is not the JSON it writes") from None
    if not isinstance(tags, dict):
        raise SandboxError("exiftool's answer is not the JSON it writes")
    return tags


def perceptual_hash(sandbox: Sandbox, plaintext: Plaintext) -> str:
    output = sandbox.run([sys.executable, "-I", "-c", PHASH_SCRIPT], plaintext(), HASH_LIMITS)
    text = output.decode("ascii", errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise SandboxError("the perceptual hash is not 64 bits of hex")
    return text


def findings(tags: dict[str, Any]) -> Findings:
    """gps, device, times, author: each only where the file carries it."""
    by_name: dict[str, Any] = {}
    for key, value in tags.items():
        group, _, name = str(key).rpartition(":")
        if group not in ("File", "ExifTool", "SourceFile") and name not in by_name:
            by_name[name] = value
    found: Findings = {}
    gps = _gps(by_name)
    if gps is not None:
        found = {**found, "gps": gps}
    device = " ".join(_text(by_name[k]) for k in ("Make", "Model") if _text(by_name.get(k)))
    if device:
        found = {**found, "device": device[:MAX_VALUE]}
    times = {n: _text(by_name[n]) for n in TIME_TAGS if _text(by_name.get(n))}
    if times:
        found = {**found, "times": times}
    author = {n: _text(by_name[n]) for n in AUTHOR_TAGS if _text(by_name.get(n))}
    if author:
        found = {**found, "author": author}
    return found


def _gps(tags: dict[str, Any]) -> list[float] | None:
    """Signed degrees; exiftool -n gives the composite GPSPosition as "lat lon"."""
    position = str(tags.get("GPSPosition", "")).split()
    try:
        if len(position) == 2:
            lat, lon = float(position[0]), float(position[1])
        else:
            lat, lon = float(tags["GPSLatitude"]), float(tags["GPSLongitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return [round(lat, 6), round(lon, 6)]


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return "" if value is None else str(value).strip()[:MAX_VALUE]


def _extension(tags: dict[str, Any]) -> str | None:
    ext = str(tags.get("File:FileTypeExtension", "")).lower()
    return ext if re.fullmatch(r"[a-z0-9]{1,8}", ext) else None


# --- working copies ------------------------------------------------------------------------


def clean_copy(sandbox: Sandbox, plaintext: Plaintext, size: int) -> Cleaned:
    """A copy cleaned by mat2 in the sandbox (mat2 picks its parser by the file's extension: the
    type exiftool recognises, not the name the source gave), read again by exiftool to say what
    went. SandboxError if it cannot be made."""
    if size > CLEAN_MAX_BYTES:
        raise SandboxError(f"over {CLEAN_MAX_BYTES // MIB} MiB: no working copy is made")
    before = exif_tags(sandbox, plaintext, size)
    filetype = _extension(before)
    if filetype is None:
        raise SandboxError("the file's type was not recognised: mat2 cannot clean it")
    path = f"{WORKDIR}/attachment.{filetype}"
    script = (f'cat > "{path}" && mat2 --no-sandbox --inplace "{path}" >/dev/null 2>&1 '
              f'&& cat "{path}"')
    limits = Limits(file_bytes=2 * CLEAN_MAX_BYTES)
    try:
        data = sandbox.run(["/bin/sh", "-c", script], plaintext(), limits, 2 * CLEAN_MAX_BYTES)
    except SandboxError as exc:
        raise SandboxError(f"mat2 could not clean this {filetype} file ({exc})") from None
    after = exif_tags(sandbox, lambda: [data], len(data))
    return Cleaned(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        tool=mat2_version(sandbox),
        removed=sorted(k for k in _meta_keys(before) if k not in after),
        left=findings(after),
    )


def _meta_keys(tags: dict[str, Any]) -> list[str]:
    return [k for k in tags if not str(k).startswith(("File:", "ExifTool:", "Composite:"))
            and k != "SourceFile"]


@cache
def exiftool_version(sandbox: Sandbox) -> str:
    return f"exiftool {_version(sandbox, ['exiftool', '-ver'])}"


@cache
def mat2_version(sandbox: Sandbox) -> str:
    return _version(sandbox, ["mat2", "--version"])


def _version(sandbox: Sandbox, argv: list[str]) -> str:
    try:
        text = sandbox.run(argv, [], PARSE_LIMITS).decode("utf-8", errors="replace")
    except SandboxError as exc:
        return f"unknown ({exc})"
    return " ".join(text.split())[:80]


def read_files(
    sandbox: Sandbox,
    attachments: Iterable[Attachment],
    decrypt: Callable[[CiphertextRecord], Iterable[bytes]],
) -> list[FileRecord]:
    """What the vault keeps per attachment (with its intake SHA-256, for duplicates): one
    record each, in the manifest's order. `decrypt(ciphertext_record)` gives its plaintext."""
    records: list[FileRecord] = []
    for att in attachments:
        ct = att["ciphertext"]

        def plaintext(ct: CiphertextRecord = ct) -> Iterable[bytes]:
            return decrypt(ct)

        records.append({"ciphertext": ct["name"], "sha256": att["sha256"], "size": att["size"],
                        **read_attachment(sandbox, plaintext, att["size"])})
    return records


# --- what the review commands show -----------------------------------------------------------

IDENTIFYING = ("gps", "device", "author", "unreadable")  # what warrants a warning in `list`


def warnings(sub: SubmissionRecord) -> list[str]:
    """The identifying findings in any of a submission's attachments (and unreadable ones)."""
    found = {key for record in sub.get("files", ()) for key in record["metadata"]}
    return [key for key in IDENTIFYING if key in found]


def by_ciphertext(sub: SubmissionRecord) -> dict[str, Findings]:
    """Each attachment's findings by its ciphertext name ({} for one imported before metadata
    was read)."""
    return {r["ciphertext"]: r["metadata"] for r in sub.get("files", ())}
