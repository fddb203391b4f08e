"""Signed transfer requests: the pure signer, verifier and replay cache, fed values directly."""

from __future__ import annotations

import base64
import hashlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from keys.age import X25519Identity
from keys.errors import TransferError
from keys.keyring import Investigator, Keyring
from keys.transfer_auth import (
    EMPTY_SHA256,
    HEADER_CONTENT_SHA256,
    HEADER_KEY_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNED_HEADERS,
    BodyHashMismatchError,
    MalformedRequestError,
    NonceCache,
    NonceCacheFullError,
    ReplayedRequestError,
    RequestSignatureError,
    RevokedKeyError,
    SignedRequest,
    StaleRequestError,
    UnknownKeyError,
    check_body,
    key_id,
    sign_request,
)
from keys.transfer_auth import (
    RequestVerifier as Verifier,
)

NOW = 1_795_000_000.0
PATH = "/v1/ack"


def make_keyring(*keys: tuple[str, SigningKey, bool]) -> Keyring:
    return Keyring(
        version=1,
        org_verify_key=SigningKey.generate().verify_key,
        investigators=tuple(
            Investigator(
                label=label,
                recipient=X25519Identity.generate().recipient(),
                verify_key=key.verify_key,
                added=date(2026, 11, 1),
                revoked=revoked,
            )
            for label, key, revoked in keys
        ),
    )


@pytest.fixture
def alice() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def verifier(alice: SigningKey) -> Verifier:
    ring = make_keyring(("Alice", alice, False))
    return Verifier(lambda k: ring.investigator_by_verify_key(k, include_revoked=True))


def signed(key: SigningKey, body: bytes = b"") -> dict[str, str]:
    return sign_request(key, "POST", PATH, hashlib.sha256(body).hexdigest(), NOW)


def test_a_signed_request_verifies_and_names_its_investigator(
    alice: SigningKey, verifier: Verifier
) -> None:
    headers = signed(alice, b'{"ids":["a"]}')
    who, request = verifier.verify("POST", PATH, headers, now=NOW + 2)
    assert who.label == "Alice"
    assert request.key_id == key_id(alice.verify_key)
    check_body(request, hashlib.sha256(b'{"ids":["a"]}').hexdigest())


def test_header_names_are_case_insensitive(alice: SigningKey, verifier: Verifier) -> None:
    headers = {k.lower(): v for k, v in signed(alice).items()}
    assert verifier.verify("POST", PATH, headers, now=NOW)[0].label == "Alice"


def test_canonical_string_is_exactly_specified() -> None:
    req = SignedRequest("GET", "/v1/pull", EMPTY_SHA256, 1795000000, "0" * 32, "A" * 43 + "=")
    assert req.canonical() == (
        b"amanat-transfer-request/1\nGET\n/v1/pull\n"
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        b"1795000000\n00000000000000000000000000000000\n"
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", PATH), ("POST", "/v1/push"), ("POST", PATH + "?x=1")],
)
def test_the_signature_covers_method_and_path(
    alice: SigningKey, verifier: Verifier, method: str, path: str
) -> None:
    with pytest.raises(RequestSignatureError):
        verifier.verify(method, path, signed(alice), now=NOW)


@pytest.mark.parametrize("header", [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_CONTENT_SHA256])
def test_changing_any_signed_header_breaks_the_signature(
    alice: SigningKey, verifier: Verifier, header: str
) -> None:
    headers = signed(alice)
    old = headers[header]
    if header == HEADER_TIMESTAMP:
        headers[header] = str(int(old) + 1)
    else:  # another hex digit in front: never the same value (a fixed "f" was 1 in 16)
        headers[header] = ("0" if old[0] != "0" else "1") + old[1:]
    assert headers[header] != old
    with pytest.raises(RequestSignatureError):
        verifier.verify("POST", PATH, headers, now=NOW)


def test_the_body_hash_is_enforced(alice: SigningKey, verifier: Verifier) -> None:
    _, request = verifier.verify("POST", PATH, signed(alice, b"[1]"), now=NOW)
    with pytest.raises(BodyHashMismatchError) as err:
        check_body(request, hashlib.sha256(b"[2]").hexdigest())
    assert err.value.status == 400


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_stale_or_future_timestamps_are_refused(
    alice: SigningKey, verifier: Verifier, offset: int
) -> None:
    with pytest.raises(StaleRequestError) as err:
        verifier.verify("POST", PATH, signed(alice), now=NOW + offset)
    assert err.value.status == 401
    assert err.value.code == "stale_timestamp"


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_inside_the_window_are_accepted(
    alice: SigningKey, verifier: Verifier, offset: int
) -> None:
    verifier.verify("POST", PATH, signed(alice), now=NOW + offset)


def test_a_replayed_request_is_refused(alice: SigningKey, verifier: Verifier) -> None:
    headers = signed(alice)
    verifier.verify("POST", PATH, headers, now=NOW)
    with pytest.raises(ReplayedRequestError) as err:
        verifier.verify("POST", PATH, headers, now=NOW + 1)
    assert err.value.code == "replayed_nonce"
    # and once the window has passed it is refused as stale, so forgetting the nonce is safe
    with pytest.raises(StaleRequestError):
        verifier.verify("POST", PATH, headers, now=NOW + 301)


def test_unknown_key_is_refused(verifier: Verifier) -> None:
    with pytest.raises(UnknownKeyError) as err:
        verifier.verify("POST", PATH, signed(SigningKey.generate()), now=NOW)
    assert err.value.status == 401


def test_revoked_key_is_refused_with_403() -> None:
    mallory = SigningKey.generate()
    ring = make_keyring(("Mallory", mallory, True))
    verifier = Verifier(lambda k: ring.investigator_by_verify_key(k, include_revoked=True))
    with pytest.raises(RevokedKeyError) as err:
        verifier.verify("POST", PATH, signed(mallory), now=NOW)
    assert err.value.status == 403
    assert "Mallory" in str(err.value)


def test_a_forged_signature_for_a_revoked_key_says_bad_signature_not_revoked() -> None:
    # Revocation is only reported to whoever holds the key.
    mallory = SigningKey.generate()
    ring = make_keyring(("Mallory", mallory, True))
    verifier = Verifier(lambda k: ring.investigator_by_verify_key(k, include_revoked=True))
    headers = sign_request(SigningKey.generate(), "POST", PATH, EMPTY_SHA256, NOW)
    headers[HEADER_KEY_ID] = key_id(mallory.verify_key)
    with pytest.raises(RequestSignatureError):
        verifier.verify("POST", PATH, headers, now=NOW)


def test_nonces_of_refused_requests_are_not_remembered(
    alice: SigningKey, verifier: Verifier
) -> None:
    headers = signed(alice)
    forged = dict(headers, **{HEADER_SIGNATURE: base64.b64encode(b"\0" * 64).decode()})
    with pytest.raises(RequestSignatureError):
        verifier.verify("POST", PATH, forged, now=NOW)
    assert len(verifier.nonces) == 0
    verifier.verify("POST", PATH, headers, now=NOW)  # the real one still goes through


@pytest.mark.parametrize("missing", SIGNED_HEADERS)
def test_each_header_is_required(alice: SigningKey, verifier: Verifier, missing: str) -> None:
    headers = signed(alice)
    del headers[missing]
    with pytest.raises(MalformedRequestError, match=missing):
        verifier.verify("POST", PATH, headers, now=NOW)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_TIMESTAMP, "1795000000.5"),
        (HEADER_TIMESTAMP, "-1"),
        (HEADER_TIMESTAMP, "01795000000"),
        (HEADER_NONCE, "ABCDEF" * 5 + "00"),
        (HEADER_NONCE, "00"),
        (HEADER_CONTENT_SHA256, "zz"),
        (HEADER_KEY_ID, "not a key"),
        (HEADER_SIGNATURE, "AAAA"),
    ],
)
def test_non_canonical_headers_are_malformed(
    alice: SigningKey, verifier: Verifier, header: str, value: str
) -> None:
    headers = signed(alice)
    headers[header] = value
    with pytest.raises(MalformedRequestError) as err:
        verifier.verify("POST", PATH, headers, now=NOW)
    assert isinstance(err.value, TransferError)
    assert isinstance(err.value, ValueError)


def test_signing_refuses_a_path_with_spaces_or_controls(alice: SigningKey) -> None:
    with pytest.raises(MalformedRequestError):
        sign_request(alice, "POST", "/v1/ack x", EMPTY_SHA256, NOW)
    with pytest.raises(MalformedRequestError):
        sign_request(alice, "POST", "/v1/ack\n", EMPTY_SHA256, NOW)


# --- the nonce cache on its own, fed times -----------------------------------------------------


def test_nonce_cache_forgets_nonces_once_their_window_passed() -> None:
    cache = NonceCache(skew_seconds=300, max_entries=10)
    cache.check_and_add("k", "n1", 1000, now=1000)
    cache.check_and_add("k", "n2", 1100, now=1100)
    assert len(cache) == 2
    cache.evict(now=1301)  # n1 (1000) is now stale; n2 (1100) is not
    assert len(cache) == 1
    with pytest.raises(ReplayedRequestError):
        cache.check_and_add("k", "n2", 1100, now=1301)
    cache.check_and_add("k", "n1", 1000, now=1301)  # (the verifier refuses it as stale first)


def test_same_nonce_from_two_keys_is_two_entries() -> None:
    cache = NonceCache(skew_seconds=300, max_entries=10)
    cache.check_and_add("k1", "n", 1000, now=1000)
    cache.check_and_add("k2", "n", 1000, now=1000)
    assert len(cache) == 2


def test_a_full_cache_refuses_rather_than_forgets_a_fresh_nonce() -> None:
    cache = NonceCache(skew_seconds=300, max_entries=3)
    for i in range(3):
        cache.check_and_add("k", f"n{i}", 1000, now=1000)
    with pytest.raises(NonceCacheFullError) as err:
        cache.check_and_add("k", "n3", 1000, now=1000)
    assert err.value.status == 503
    with pytest.raises(ReplayedRequestError):
        cache.check_and_add("k", "n0", 1000, now=1000)
    cache.check_and_add("k", "n3", 1400, now=1400)  # the old ones expired: room again
    assert len(cache) == 1


def test_a_full_sweep_finds_stale_entries_behind_fresh_ones() -> None:
    cache = NonceCache(skew_seconds=300, max_entries=2)
    cache.check_and_add("k", "future", 1200, now=1000)  # clock skew: stamped in the future
    cache.check_and_add("k", "old", 1000, now=1000)
    cache.check_and_add("k", "new", 1450, now=1450)  # "old" was behind "future" in order
    assert len(cache) == 2


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 7), st.integers(-400, 400), st.integers(0, 50)), max_size=40
    )
)
def test_nonce_cache_never_accepts_a_fresh_nonce_twice(
    events: list[tuple[int, int, int]],
) -> None:
    # Model: the verifier only feeds timestamps inside the window; a nonce accepted at time t
    # must be refused again for as long as its timestamp is inside the window.
    cache = NonceCache(skew_seconds=300, max_entries=1000)
    accepted: dict[str, int] = {}
    now = 10_000
    for nonce_no, skew, advance in events:
        now += advance
        ts = now + max(-300, min(300, skew))
        nonce = f"n{nonce_no}"
        fresh_before = nonce in accepted and accepted[nonce] >= now - 300
        try:
            cache.check_and_add("k", nonce, ts, now=now)
        except ReplayedRequestError:
            assert nonce in accepted
            continue
        assert not fresh_before
        accepted[nonce] = ts
