"""Signed transfer requests (docs/format.md, section 6).

Every request to the transfer API carries five headers: the signer's key id (its Ed25519 verify
key), a Unix timestamp, a random nonce, the SHA-256 of the body and an Ed25519 signature over a
canonical string made of the method, the path, those three values and the key id. The server
refuses a request whose timestamp is outside a clock-skew window, whose nonce it has seen inside
that window, whose key is not an unrevoked investigator's, or whose signature does not verify.

This module is pure in the magic-wormhole way: no clock, no network, no randomness it does not
take as an argument when a test needs to fix it. `RequestVerifier.verify` is fed the request's
method, path and headers and the current time, and returns who signed it or raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from keys.errors import TransferError
from keys.keyring import Investigator, Keyring, encode_key

SCHEME = "amanat-transfer-request/1"
HEADER_KEY_ID = "Amanat-Key-Id"
HEADER_TIMESTAMP = "Amanat-Timestamp"
HEADER_NONCE = "Amanat-Nonce"
HEADER_CONTENT_SHA256 = "Amanat-Content-SHA256"
HEADER_SIGNATURE = "Amanat-Signature"
SIGNED_HEADERS = (
    HEADER_KEY_ID,
    HEADER_TIMESTAMP,
    HEADER_NONCE,
    HEADER_CONTENT_SHA256,
    HEADER_SIGNATURE,
)

DEFAULT_SKEW_SECONDS = 300
DEFAULT_MAX_NONCES = 100_000
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_PATH_RE = re.compile(r"/[\x21-\x7e]{0,2047}")  # printable ASCII, no spaces: never ambiguous
_KEY_ID_RE = re.compile(r"[A-Za-z0-9+/]{43}=")
_TIMESTAMP_RE = re.compile(r"0|[1-9][0-9]{0,11}")
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SIGNATURE_RE = re.compile(r"[A-Za-z0-9+/]{86}==")


# --- errors -----------------------------------------------------------------------------------


class RequestAuthError(TransferError):
    """A transfer request was refused. Never raised directly.

    `code` is a stable machine-readable reason; `status` the HTTP status an API answers with."""

    code = "unauthorized"
    status = 401


class MalformedRequestError(RequestAuthError, ValueError):
    """A signing header is missing or not in its canonical form."""

    code = "malformed_signature_headers"


class StaleRequestError(RequestAuthError):
    """The timestamp is outside the allowed clock skew (a delayed or replayed request)."""

    code = "stale_timestamp"


class ReplayedRequestError(RequestAuthError):
    """The nonce was already used inside the skew window."""

    code = "replayed_nonce"


class UnknownKeyError(RequestAuthError):
    """The key id is not an investigator's transfer key in the keyring."""

    code = "unknown_key"


class OfflineKeyError(UnknownKeyError):
    """The request was signed with an investigator's offline key, which never signs requests:
    that key belongs on the review workstation only."""

    code = "offline_key"


class RequestSignatureError(RequestAuthError):
    """The signature does not verify over this method, path, body hash, timestamp and nonce."""

    code = "bad_signature"


class RevokedKeyError(RequestAuthError):
    """The key belongs to an investigator the keyring marks revoked."""

    code = "revoked_key"
    status = 403


class NonceCacheFullError(RequestAuthError):
    """Too many fresh nonces to remember: refuse rather than forget one (fail closed)."""

    code = "too_many_requests"
    status = 503


# --- the canonical string ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """The signed values of one request, all in canonical text form."""

    method: str
    path: str
    content_sha256: str
    timestamp: int
    nonce: str
    key_id: str

    def canonical(self) -> bytes:
        """The exact bytes that are signed: seven lines, each ending in LF."""
        lines = (
            SCHEME,
            self.method,
            self.path,
            self.content_sha256,
            str(self.timestamp),
            self.nonce,
            self.key_id,
        )
        return "".join(line + "\n" for line in lines).encode("ascii")


def key_id(verify_key: VerifyKey) -> str:
    """The key id sent in requests: the verify key in standard padded base64."""
    return encode_key(verify_key)


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_request(
    signing_key: SigningKey,
    method: str,
    path: str,
    content_sha256: str,
    now: float,
    nonce: str | None = None,
) -> dict[str, str]:
    """The five headers that sign one request, made at time `now` (Unix seconds)."""
    request = SignedRequest(
        method=method.upper(),
        path=path,
        content_sha256=content_sha256,
        timestamp=int(now),
        nonce=nonce if nonce is not None else new_nonce(),
        key_id=key_id(signing_key.verify_key),
    )
    _check_syntax(request)
    signature = signing_key.sign(request.canonical()).signature
    return {
        HEADER_KEY_ID: request.key_id,
        HEADER_TIMESTAMP: str(request.timestamp),
        HEADER_NONCE: request.nonce,
        HEADER_CONTENT_SHA256: request.content_sha256,
        HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
    }


def _check_syntax(request: SignedRequest) -> None:
    checks = (
        (_METHOD_RE, request.method, "method"),
        (_PATH_RE, request.path, "path"),
        (_SHA256_RE, request.content_sha256, HEADER_CONTENT_SHA256),
        (_NONCE_RE, request.nonce, HEADER_NONCE),
        (_KEY_ID_RE, request.key_id, HEADER_KEY_ID),
    )
    for pattern, value, what in checks:
        if not pattern.fullmatch(value):
            raise MalformedRequestError(f"{what} {value[:80]!r} is not in canonical form")


def parse_signed_request(method: str, path: str, headers: Mapping[str, str]) -> SignedRequest:
    """Read the signing headers of a request (case-insensitive names); raise if any is bad."""
    folded = {name.lower(): value for name, value in headers.items()}
    values = {}
    for name in SIGNED_HEADERS:
        value = folded.get(name.lower())
        if value is None:
            raise MalformedRequestError(f"the request is not signed: header {name} is missing")
        values[name] = value
    if not _TIMESTAMP_RE.fullmatch(values[HEADER_TIMESTAMP]):
        raise MalformedRequestError(f"{HEADER_TIMESTAMP} must be whole Unix seconds")
    if not _SIGNATURE_RE.fullmatch(values[HEADER_SIGNATURE]):
        raise MalformedRequestError(f"{HEADER_SIGNATURE} must be 64 bytes in padded base64")
    request = SignedRequest(
        method=method,
        path=path,
        content_sha256=values[HEADER_CONTENT_SHA256],
        timestamp=int(values[HEADER_TIMESTAMP]),
        nonce=values[HEADER_NONCE],
        key_id=values[HEADER_KEY_ID],
    )
    _check_syntax(request)
    return request


def _signature(headers: Mapping[str, str]) -> bytes:
    folded = {name.lower(): value for name, value in headers.items()}
    try:
        return base64.b64decode(folded[HEADER_SIGNATURE.lower()], validate=True)
    except (KeyError, binascii.Error) as exc:  # pragma: no cover - parse_signed_request checks
        raise MalformedRequestError("the signature is not base64") from exc


# --- the replay cache -------------------------------------------------------------------------


class NonceCache:
    """Nonces seen inside the skew window, forgotten once their timestamp leaves it.

    A nonce older than the window needs no memory: its request is refused as stale anyway. The
    cache is bounded; when it is full of fresh nonces it refuses new ones instead of evicting a
    fresh one (which would let that request be replayed)."""

    def __init__(
        self, skew_seconds: int = DEFAULT_SKEW_SECONDS, max_entries: int = DEFAULT_MAX_NONCES
    ) -> None:
        self.skew_seconds = skew_seconds
        self.max_entries = max_entries
        # (key id, nonce) -> request timestamp, in insertion order
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def evict(self, now: float, *, full: bool = False) -> None:
        """Forget nonces whose timestamp is now outside the window.

        Entries arrive roughly in timestamp order, so popping stale ones off the front is cheap
        and usually enough; `full=True` sweeps them all (done before refusing for lack of room).
        """
        horizon = now - self.skew_seconds
        if full:
            for entry in [e for e, ts in self._seen.items() if ts < horizon]:
                del self._seen[entry]
            return
        while self._seen:
            entry, ts = next(iter(self._seen.items()))
            if ts >= horizon:
                break
            del self._seen[entry]

    def check_and_add(self, key: str, nonce: str, timestamp: int, now: float) -> None:
        """Remember this nonce, or raise ReplayedRequestError if it was seen before."""
        self.evict(now)
        if (key, nonce) in self._seen:
            raise ReplayedRequestError(
                "this request was already received (its nonce was used before): refusing a replay"
            )
        if len(self._seen) >= self.max_entries:
            self.evict(now, full=True)
            if len(self._seen) >= self.max_entries:
                raise NonceCacheFullError("too many requests in the last minutes; try again later")
        self._seen[(key, nonce)] = timestamp


# --- verification -----------------------------------------------------------------------------

# Given a verify key, the investigator whose transfer key it is, revoked ones included, or None
# (or raise an UnknownKeyError that says more).
InvestigatorLookup = Callable[[VerifyKey], Investigator | None]


def transfer_key_owner(keyring: Keyring, verify_key: VerifyKey) -> Investigator | None:
    """The `InvestigatorLookup` of the transfer API: only transfer credentials sign requests. An
    offline key gets a refusal that says so (its owner has the wrong file on the online side)."""
    owner = keyring.investigator_by_transfer_key(verify_key)
    if owner is None and keyring.investigator_by_verify_key(verify_key, include_revoked=True):
        raise OfflineKeyError(
            "this request is signed with an investigator's offline key, which never leaves the "
            "review workstation; sign transfer requests with the transfer credential"
        )
    return owner


class RequestVerifier:
    """Checks signed requests against a keyring and remembers their nonces."""

    def __init__(
        self,
        lookup: InvestigatorLookup,
        skew_seconds: int = DEFAULT_SKEW_SECONDS,
        max_nonces: int = DEFAULT_MAX_NONCES,
    ) -> None:
        self.lookup = lookup
        self.skew_seconds = skew_seconds
        self.nonces = NonceCache(skew_seconds, max_nonces)

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], now: float
    ) -> tuple[Investigator, SignedRequest]:
        """Who signed this request, after every check passed. The body is not seen here: the
        caller compares the SHA-256 of the body it reads with `SignedRequest.content_sha256`
        (see `check_body`) before acting on it.

        Order matters: cheap syntax and clock checks first; the nonce is only remembered once the
        signature verified, so unsigned junk cannot fill the cache."""
        request = parse_signed_request(method, path, headers)
        if abs(now - request.timestamp) > self.skew_seconds:
            raise StaleRequestError(
                f"the request timestamp is {int(now - request.timestamp)} s away from the "
                f"server clock (allowed: {self.skew_seconds} s); check the workstation clock"
            )
        verify_key = VerifyKey(base64.b64decode(request.key_id))
        investigator = self.lookup(verify_key)
        if investigator is None:
            raise UnknownKeyError(
                "the signing key is not an investigator's transfer key in the keyring"
            )
        try:
            verify_key.verify(request.canonical(), _signature(headers))
        except BadSignatureError:
            raise RequestSignatureError(
                "the request signature does not verify (altered request, or wrong key)"
            ) from None
        if investigator.revoked:
            raise RevokedKeyError(f"investigator {investigator.label!r} has been revoked")
        self.nonces.check_and_add(request.key_id, request.nonce, request.timestamp, now)
        return investigator, request


class BodyHashMismatchError(RequestAuthError, ValueError):
    """The body received is not the one the request signature covers."""

    code = "body_hash_mismatch"
    status = 400


def check_body(request: SignedRequest, body_sha256: str) -> None:
    """Raise unless the body read has the SHA-256 the signed headers promised."""
    if not secrets.compare_digest(body_sha256, request.content_sha256):
        raise BodyHashMismatchError(
            "the request body does not match its signed SHA-256 (altered in transit?)"
        )
