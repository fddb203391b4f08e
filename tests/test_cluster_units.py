"""The cluster's shared keys, without HTTP: sealed session cookies (roundtrip between nodes
whose monotonic clocks differ, tampering, expiry, size), form tokens checked on another node,
the cluster key file, and the per-visitor login limit shared out among nodes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dropbox.cluster import (
    CLOCK_SKEW_SECONDS,
    MAX_SEALED_SESSION_CHARS,
    SealedSessions,
    SessionClaims,
    load_cluster_key,
    new_cluster_key,
)
from dropbox.form_tokens import FormTokens, PendingCodenames, new_client_key
from dropbox.sessions import LoginLimiter
from keys.age import X25519Identity
from keys.codename import wordlist
from keys.errors import ConfigError

KEY = bytes(range(32))
IDLE = 1800.0
VISITOR = new_client_key()
# Node A's monotonic clock reads 1000 when node B's reads 5000: the same shared moment.
A_OFFSET, B_OFFSET = 4000.0, 0.0
A_NOW, B_NOW = 1000.0, 5000.0


def claims(codename: str | None = None) -> SessionClaims:
    return SessionClaims(VISITOR, "ab" * 16, "0123456789abcdef", "c" * 43,
                         X25519Identity.generate(), os.urandom(32), codename)


def nodes(key: bytes = KEY) -> tuple[SealedSessions, SealedSessions]:
    return SealedSessions(key, IDLE, A_OFFSET), SealedSessions(key, IDLE, B_OFFSET)


def test_a_session_sealed_on_one_node_opens_on_another() -> None:
    a, b = nodes()
    sealed = claims("1234 5678")
    opened = b.open(a.seal(sealed, A_NOW), VISITOR, B_NOW + 90)
    assert opened is not None
    got, age = opened
    assert got == sealed
    assert got.reply_identity == sealed.reply_identity
    assert age == pytest.approx(90, abs=0.01)


def test_a_sealed_session_shows_nothing_readable() -> None:
    a, _ = nodes()
    sealed = claims()
    cookie = a.seal(sealed, A_NOW)
    for secret in (str(sealed.reply_identity), sealed.source_id, sealed.csrf_token, VISITOR):
        assert secret not in cookie
    assert a.seal(sealed, A_NOW) != cookie  # a fresh nonce each time


@pytest.mark.parametrize("change", ["flip", "truncate", "extend", "garbage", "empty", "huge",
                                    "unicode"])
def test_a_tampered_session_cookie_is_refused(change: str) -> None:
    a, b = nodes()
    cookie = a.seal(claims(), A_NOW)
    middle = len(cookie) // 2
    tampered = {
        "flip": cookie[:middle] + ("A" if cookie[middle] != "A" else "B") + cookie[middle + 1:],
        "truncate": cookie[:-4],
        "extend": cookie + "AAAA",
        "garbage": "not-a-cookie!",
        "empty": "",
        "huge": "A" * (MAX_SEALED_SESSION_CHARS * 10),
        "unicode": cookie[:-1] + "é",
    }[change]
    assert b.open(tampered, VISITOR, B_NOW) is None


def test_a_session_cookie_opens_only_for_its_own_visitor_and_cluster() -> None:
    a, b = nodes()
    cookie = a.seal(claims(), A_NOW)
    assert b.open(cookie, new_client_key(), B_NOW) is None  # copied next to another cookie
    assert b.open(cookie, None, B_NOW) is None
    other, _ = nodes(bytes(32))
    assert other.open(cookie, VISITOR, B_NOW) is None  # another cluster's key


def test_a_session_cookie_expires_after_the_idle_timeout_and_never_comes_from_the_future() -> None:
    a, b = nodes()
    cookie = a.seal(claims(), A_NOW)
    assert b.open(cookie, VISITOR, B_NOW + IDLE - 1) is not None
    assert b.open(cookie, VISITOR, B_NOW + IDLE + 1) is None
    assert b.open(cookie, VISITOR, B_NOW - CLOCK_SKEW_SECONDS + 1) is not None
    assert b.open(cookie, VISITOR, B_NOW - CLOCK_SKEW_SECONDS - 1) is None


def test_the_largest_session_cookie_stays_small() -> None:
    longest = max(wordlist(), key=len)
    a, _ = nodes()
    cookie = a.seal(claims(" ".join([longest] * 7)), A_NOW)
    assert len(cookie) < MAX_SEALED_SESSION_CHARS
    assert len(cookie) < 1024  # far below the 4096 bytes a browser keeps per cookie


def test_a_form_token_issued_on_one_node_is_accepted_on_another() -> None:
    secret = os.urandom(32)
    a = FormTokens(IDLE, secret, offset=A_OFFSET + 10**8, skew=CLOCK_SKEW_SECONDS)
    b = FormTokens(IDLE, secret, offset=B_OFFSET + 10**8, skew=CLOCK_SKEW_SECONDS)
    token = a.issue(VISITOR, A_NOW, bound="12345678901234567890")
    proof = b.check(token, VISITOR, B_NOW + 5)
    assert proof is not None
    assert proof.bound == "12345678901234567890"
    assert proof.issued == pytest.approx(B_NOW, abs=0.01)  # in B's own clock: "5 s old"
    assert b.check(token, new_client_key(), B_NOW + 5) is None
    alone = FormTokens(IDLE)  # a node without the cluster key
    assert alone.check(token, VISITOR, B_NOW + 5) is None


def test_a_pending_codename_sealed_on_one_node_opens_on_another() -> None:
    key = os.urandom(32)
    cookie = PendingCodenames(key).seal("1234 5678 9012 3456 7890")
    assert PendingCodenames(key).open(cookie) == "12345678901234567890"
    assert PendingCodenames().open(cookie) is None


def test_attempts_spread_over_the_nodes_are_limited_as_on_one() -> None:
    """Five a minute for the service: two nodes allow 2.5 each; a visitor alternating between
    them gets no more than five at once, and five a minute after that."""
    alone = LoginLimiter(5, 100)
    assert sum(alone.allow(VISITOR, 0.0) for _ in range(20)) == 5
    a, b = LoginLimiter(5, 100, nodes=2), LoginLimiter(5, 100, nodes=2)
    assert sum((a if i % 2 else b).allow(VISITOR, 0.0) for i in range(20)) <= 5
    # A minute later, five more at most; a visitor on one node alone gets its share.
    assert sum((a if i % 2 else b).allow(VISITOR, 60.0) for i in range(20)) <= 5
    c = LoginLimiter(5, 100, nodes=8)  # more nodes than attempts: one at a time, no lockout
    assert c.allow(VISITOR, 0.0)
    assert not c.allow(VISITOR, 0.0)
    assert c.allow(VISITOR, 60 * 8 / 5)
    assert c.expire(60 * 8 / 5 * 2 + 1) == 1


def test_the_cluster_key_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    path.write_text(new_cluster_key())
    path.chmod(0o600)
    assert len(load_cluster_key(path)) == 32
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_cluster_key(path)
    path.chmod(0o600)
    for bad in ("", "00" * 31, "zz" * 32, "00" * 33):
        path.write_text(bad)
        with pytest.raises(ConfigError, match="64 hex digits"):
            load_cluster_key(path)
    with pytest.raises(ConfigError):
        load_cluster_key(tmp_path / "missing.key")
