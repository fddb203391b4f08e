"""What several intake nodes behind one onion address share about sources: one cluster key.

A source's requests may land on any node (Onionbalance picks one per circuit, and Tor Browser
changes circuits). With `[server] session_key_file` set, every node holds the same 32-byte key
(a file the operator distributes like the keyring), and everything a node would otherwise keep
about a visitor in its own memory travels in the visitor's cookies instead, sealed with keys
derived from it:

- the logged-in session (`SealedSessions`): source id, reply identity, receipt key, CSRF token,
  the codename of a confirming session, and the moment it was last used. The secrets are never
  written to the database or any disk: a seized server yields the key but no cookie;
- the anonymous forms' signing key and the pending codename's key (form_tokens.py), so that a
  form loaded on one node is accepted by another.

Logout must end the session on every node although the cookie still opens: each source row holds
a random session epoch (db.py), copied into the cookie at login and replaced at logout; a cookie
whose epoch is no longer the source's is refused. The database thus learns nothing but a random
value per source (no session row, no time).

Times in sealed cookies are seconds on a clock all nodes share: the wall clock shifted by a
secret offset derived from the key (so a cookie or token shows neither the time of day nor, to
anyone without the key, anything at all). Nodes' clocks must agree within `CLOCK_SKEW_SECONDS`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.secret

from keys.age import X25519Identity
from keys.errors import ConfigError, KeyFormatError

KEY_BYTES = 32
CLOCK_SKEW_SECONDS = 30.0
# A session cookie is resealed (with a new last-use time) when its time is this old: often
# enough for the idle timeout, rarely enough that most responses set no cookie.
REFRESH_SECONDS = 60.0
MAX_SEALED_SESSION_CHARS = 1024  # the largest is 484 (a confirming session, 7 long words)
_VERSION = 1
_HEAD = struct.Struct(">BQ")  # version, last use (milliseconds on the shared clock)


def load_cluster_key(path: Path) -> bytes:
    """The cluster key: 64 hex digits (`openssl rand -hex 32`) in a file only its owner may
    read. Raises ConfigError otherwise, before anything listens."""
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[server] session_key_file {path}: {type(exc).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"[server] session_key_file {path} must be readable by its owner "
                          "only (chmod 600)")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"[server] session_key_file {path} must hold 64 hex digits "
                          "(openssl rand -hex 32)")
    return key


def subkey(key: bytes, purpose: str) -> bytes:
    """An independent key for one purpose (BLAKE2b keyed with the cluster key)."""
    return hashlib.blake2b(purpose.encode("ascii"), key=key, digest_size=32,
                           person=b"amanat-cluster").digest()


def shared_offset(key: bytes) -> float:
    """What to add to this process's monotonic clock to read the clock all nodes share (the
    wall clock plus a secret offset derived from `key`)."""
    secret = int.from_bytes(subkey(key, "clock-offset")[:8], "big") % 10**9 + 10**8
    return secret + time.time() - time.monotonic()


@dataclass(frozen=True)
class SessionClaims:
    """What a sealed session cookie holds. Secret: never log or persist it."""

    key: str  # the session's id: the value of the visitor cookie it is bound to
    source_id: str
    epoch: str  # the source's session epoch at login (db.py); logout replaces it
    csrf_token: str
    reply_identity: X25519Identity = field(repr=False)
    receipt_key: bytes = field(repr=False)
    codename: str | None = field(default=None, repr=False)


class SealedSessions:
    """Seals a session into a cookie (SecretBox: XSalsa20-Poly1305) and opens it again on any
    node. `now` is the caller's monotonic clock; `offset` maps it onto the shared clock."""

    def __init__(self, key: bytes, idle_timeout: float, offset: float | None = None) -> None:
        self._box = nacl.secret.SecretBox(subkey(key, "session"))
        self.idle_timeout = idle_timeout
        self._offset = shared_offset(key) if offset is None else offset

    def seal(self, claims: SessionClaims, now: float) -> str:
        stamp = int((now + self._offset) * 1000)
        text = "\n".join((claims.key, claims.source_id, claims.epoch, claims.csrf_token,
                          str(claims.reply_identity), claims.codename or ""))
        plain = _HEAD.pack(_VERSION, stamp) + claims.receipt_key + text.encode("ascii")
        return base64.urlsafe_b64encode(bytes(self._box.encrypt(plain))).decode().rstrip("=")

    def open(self, cookie: str | None, key: str | None, now: float) -> tuple[SessionClaims,
                                                                           float] | None:
        """The claims sealed in `cookie` and their age in seconds, if the cookie was sealed by
        a node of this cluster for the visitor cookie `key` and was used within the idle
        timeout; None for anything else (tampered, foreign, expired, another visitor's)."""
        if not cookie or not key or len(cookie) > MAX_SEALED_SESSION_CHARS \
                or not cookie.isascii():
            return None
        try:
            plain = self._box.decrypt(base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)))
            version, stamp = _HEAD.unpack_from(plain)
            receipt_key = plain[_HEAD.size:_HEAD.size + 32]
            fields = plain[_HEAD.size + 32:].decode("ascii").split("\n")
            sid, source_id, epoch, csrf, identity, codename = fields
            claims = SessionClaims(sid, source_id, epoch, csrf, X25519Identity.parse(identity),
                                   receipt_key, codename or None)
        except (binascii.Error, ValueError, struct.error, nacl.exceptions.CryptoError,
                KeyFormatError):
            return None
        age = now + self._offset - stamp / 1000
        if version != _VERSION or len(receipt_key) != 32 or sid != key:
            return None
        if not -CLOCK_SKEW_SECONDS <= age <= self.idle_timeout:
            return None
        return claims, age


def new_cluster_key() -> str:
    """A fresh key file's content (what `openssl rand -hex 32` prints)."""
    return os.urandom(KEY_BYTES).hex() + "\n"
