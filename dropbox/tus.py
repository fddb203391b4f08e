"""The tus 1.0.0 resumable upload protocol's headers (core, creation, expiration, termination):
pure parsing and checking, no I/O. `dropbox/resumable.py` keeps the uploads, the handlers in
`dropbox/handlers_tus.py` speak HTTP.

Every header a client sends is untrusted: numbers are plain ASCII digits of bounded length (no
sign, no spaces, no exponent), metadata is a short list of `key base64` pairs, and anything else
is refused with the status the protocol names (`TusError.status`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from email.utils import formatdate

from keys.errors import InputError

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,expiration,termination"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
CSRF_HEADER = "X-CSRF-Token"
MAX_DIGITS = 19  # every int64 fits; more is not a size anyone uploads
MAX_METADATA_PAIRS = 8


class TusError(InputError):
    """A tus request the protocol refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def check_version(headers: Mapping[str, str]) -> None:
    """Tus-Resumable must name the version we speak (412 otherwise, as the core protocol says)."""
    if headers.get("Tus-Resumable") != TUS_VERSION:
        raise TusError(412, "Tus-Resumable must be 1.0.0")


def parse_size(value: str | None, name: str) -> int:
    """A non-negative decimal integer header (Upload-Length, Upload-Offset); 400 otherwise."""
    if value is None or not value or len(value) > MAX_DIGITS or not value.isascii() \
            or not value.isdigit():
        raise TusError(400, f"{name} must be a non-negative integer")
    return int(value)


def parse_length(headers: Mapping[str, str], max_size: int) -> int:
    """The Upload-Length of a creation: 413 over `max_size`; deferred lengths are not offered."""
    if "Upload-Defer-Length" in headers:
        raise TusError(400, "Upload-Defer-Length is not supported")
    length = parse_size(headers.get("Upload-Length"), "Upload-Length")
    if length > max_size:
        raise TusError(413, "Upload-Length is over Tus-Max-Size")
    return length


def parse_metadata(value: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs (the value may be absent). Values
    are decoded as UTF-8 text; duplicate keys, bad base64 or too many pairs are a 400."""
    if value is None or not value.strip():
        return {}
    pairs = value.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise TusError(400, "too many Upload-Metadata pairs")
    found: dict[str, str] = {}
    for pair in pairs:
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or key in found or not key.isascii():
            raise TusError(400, "malformed Upload-Metadata")
        try:
            raw = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            found[key] = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TusError(400, "Upload-Metadata values must be base64 of UTF-8 text") from None
    return found


def http_date(moment: float) -> str:
    """An RFC 7231 date (Upload-Expires): only sent to the client, never stored."""
    return formatdate(moment, usegmt=True)


def common_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


def options_headers(max_size: int) -> dict[str, str]:
    """What OPTIONS tells a client about this server."""
    return {"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS, "Tus-Max-Size": str(max_size)}
