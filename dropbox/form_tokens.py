"""Signed, time-stamped form tokens: CSRF protection for visitors the server keeps no state for.

Nobody gets a server-side session before logging in (a flood of page loads must not be able to
fill a pool that logged-in sources live in). The login and codename forms carry instead a token
signed with a key that exists only in this process's memory. It binds:

- the visitor's cookie value, so a form loaded in one browser is useless in another (CSRF; the
  cookie is SameSite=Strict, so another site cannot send it);
- the moment the form was issued, so the token expires, and a codename attempt shows how long ago
  its form was loaded: the Argon2id queue serves forms that waited a few seconds before fresh ones
  (a flood of fresh sessions queues behind itself);
- optionally a value the form must return unchanged: the codename shown on the start page travels
  back in its token rather than in a server-side session that could be evicted or lost.

The codename in a start token is as visible as the codename printed on the same page; the token
is sent nowhere but back to this server. So that a reload of the start page shows the same
codename (issue 12), the pending codename also travels in a cookie of its own, sealed
(encrypted and authenticated) with another key of this process (`PendingCodenames`): still no
server-side state per visitor, so a flood of start pages stores nothing.

Times are seconds on the monotonic clock shifted by a random offset, so a token reveals neither
the time of day nor the process's uptime. A restart changes the keys: forms loaded before it ask
to be reloaded, as sessions did, and a pending codename is replaced. Several nodes of one service
(dropbox/cluster.py) share instead keys and a clock derived from their cluster key, so a form
loaded on one node is accepted by another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TypeGuard

import nacl.exceptions
import nacl.secret
import nacl.utils

from keys.codename import normalize_codename
from keys.errors import CodenameError

MAC_BYTES = 18
MAX_TOKEN_CHARS = 512
MAX_SEALED_CHARS = 256
_CLIENT = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def new_client_key() -> str:
    """A fresh random value for the visitor's cookie."""
    return secrets.token_urlsafe(32)


def valid_client_key(value: str | None) -> TypeGuard[str]:
    """True for a cookie value this server could have issued (anything else is replaced)."""
    return value is not None and _CLIENT.fullmatch(value) is not None


@dataclass(frozen=True)
class FormProof:
    """What a valid token proves: when its form was issued (the caller's clock) and the value it
    was bound to ("" for none)."""

    issued: float
    bound: str


class FormTokens:
    """Issues and checks form tokens; `now` is the caller's monotonic clock, in seconds."""

    def __init__(self, max_age: float, secret: bytes | None = None, offset: float | None = None,
                 skew: float = 1.0) -> None:
        """Alone, a random key and clock offset of this process; in a cluster (cluster.py) the
        key and offset every node shares, and `skew` the seconds their clocks may disagree."""
        self.max_age = max_age
        self._secret = secret or secrets.token_bytes(32)
        self._offset = float(secrets.randbelow(10**9) + 10**8) if offset is None else offset
        self._skew = skew

    def issue(self, client: str, now: float, bound: str = "") -> str:
        """A token for a form shown to `client` at `now`, carrying `bound` (ASCII) back."""
        stamp = str(int((now + self._offset) * 1000))
        payload = base64.urlsafe_b64encode(bound.encode("ascii")).decode("ascii").rstrip("=")
        return f"{stamp}.{payload}.{self._mac(client, stamp, payload)}"

    def check(self, token: str | None, client: str | None, now: float) -> FormProof | None:
        """The token's proof if it was issued by this process to `client`, less than `max_age`
        ago; None for anything else (forged, altered, expired, another visitor's, garbage)."""
        if not token or not client or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 20:
            return None
        stamp, payload, mac = parts
        if not hmac.compare_digest(mac, self._mac(client, stamp, payload)):
            return None
        issued = int(stamp) / 1000 - self._offset
        if not -self._skew <= now - issued <= self.max_age:
            return None
        try:
            bound = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return FormProof(issued=issued, bound=bound)

    def _mac(self, client: str, stamp: str, payload: str) -> str:
        message = "\0".join(("amanat-form-v1", client, stamp, payload)).encode("utf-8")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")


class PendingCodenames:
    """A codename shown on the start page but not confirmed yet, sealed into the visitor's
    cookie with a key that exists only in this process's memory (SecretBox: XSalsa20-Poly1305).
    A tampered, foreign or pre-restart cookie simply opens to nothing, and a new codename is
    shown."""

    def __init__(self, key: bytes | None = None) -> None:
        self._box = nacl.secret.SecretBox(key or nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))

    def seal(self, codename: str) -> str:
        sealed = self._box.encrypt(normalize_codename(codename).encode("ascii"))
        return base64.urlsafe_b64encode(bytes(sealed)).decode("ascii").rstrip("=")

    def open(self, cookie: str | None) -> str | None:
        """The canonical codename sealed in `cookie`, or None for anything else."""
        if not cookie or len(cookie) > MAX_SEALED_CHARS or not cookie.isascii():
            return None
        try:
            sealed = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            return normalize_codename(self._box.decrypt(sealed).decode("ascii"))
        except (binascii.Error, ValueError, nacl.exceptions.CryptoError, CodenameError):
            return None
