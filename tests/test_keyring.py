"""The signed keyring and the passphrase-protected investigator identity files."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from keys.age import X25519Identity, encrypt
from keys.errors import InputError, KeyringError, KeyringForkError, WrongPassphraseError
from keys.identity_file import (
    AgeIdentityOnlineError,
    CredentialFileError,
    IdentityFileError,
    InvestigatorSecrets,
    TransferCredential,
    format_credential,
    format_identity,
    open_credential,
    open_identity,
    parse_credential,
    parse_identity,
    protect_credential,
    protect_identity,
)
from keys.keyring import (
    Investigator,
    Keyring,
    canonical_json,
    check_label,
    empty_keyring,
    encode_key,
    format_org_public_key,
    format_org_signing_key,
    load_keyring,
    parse_org_public_key,
    parse_org_signing_key,
    parse_unsigned_keyring,
    sign_keyring,
)

DAY = date(2026, 11, 26)
LOW_WORK_FACTOR = 10  # scrypt N = 2**10: fast, and still the real code path


def investigator(label: str, revoked: bool = False) -> Investigator:
    return Investigator(
        label=label,
        recipient=X25519Identity.generate().recipient(),
        verify_key=SigningKey.generate().verify_key,
        added=DAY,
        revoked=revoked,
    )


@pytest.fixture
def org() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def keyring(org: SigningKey) -> Keyring:
    return (
        empty_keyring(org.verify_key)
        .with_investigator(investigator("alice"))
        .with_investigator(investigator("بصیر"))
        .with_transfer_key(SigningKey.generate().verify_key)
    )


def sign_raw(payload: dict[str, Any], org: SigningKey) -> bytes:
    """A document signed over an arbitrary payload, to reach the checks behind the signature."""
    signature = org.sign(canonical_json(payload)).signature
    return json.dumps(
        {"keyring": payload, "signature": base64.b64encode(signature).decode()}
    ).encode()


# --- round trip and signature ----------------------------------------------------------------


def test_round_trip(org: SigningKey, keyring: Keyring) -> None:
    document = sign_keyring(keyring, org)
    loaded = load_keyring(document, org.verify_key)
    assert loaded.payload() == keyring.payload()
    assert loaded.version == 4
    assert [i.label for i in loaded.investigators] == ["alice", "بصیر"]
    assert loaded.fingerprint() == keyring.fingerprint()
    assert "بصیر" in document.decode("utf-8")  # readable, not \u-escaped
    assert set(json.loads(document)) == {"keyring", "signature"}


def test_whitespace_and_key_order_are_not_signed(org: SigningKey, keyring: Keyring) -> None:
    parsed = json.loads(sign_keyring(keyring, org))
    reordered = {
        "signature": parsed["signature"],
        "keyring": dict(reversed(parsed["keyring"].items())),
    }
    compact = json.dumps(reordered, separators=(",", ":")).encode()  # \u-escapes non-ASCII too
    assert load_keyring(compact, org.verify_key).payload() == keyring.payload()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["keyring"]["investigators"][0].update(label="mallory"),
        lambda d: d["keyring"]["investigators"][0].update(revoked=True),
        lambda d: d["keyring"]["investigators"].pop(),
        lambda d: d["keyring"].update(version=d["keyring"]["version"] + 1),
        lambda d: d["keyring"].update(transfer_verify_key=None),
        lambda d: d.update(signature=base64.b64encode(bytes(64)).decode()),
    ],
)
def test_any_change_breaks_the_signature(org: SigningKey, keyring: Keyring, tamper: Any) -> None:
    document = json.loads(sign_keyring(keyring, org))
    tamper(document)
    with pytest.raises(KeyringError, match="signature does not verify"):
        load_keyring(json.dumps(document).encode(), org.verify_key)


def test_another_organization_is_refused(org: SigningKey, keyring: Keyring) -> None:
    with pytest.raises(KeyringError, match="pinned organization key"):
        load_keyring(sign_keyring(keyring, org), SigningKey.generate().verify_key)
    with pytest.raises(KeyringError, match="not this keyring's organization key"):
        sign_keyring(keyring, SigningKey.generate())


def test_rollback_is_refused(org: SigningKey, keyring: Keyring) -> None:
    old = sign_keyring(keyring, org)
    assert load_keyring(old, org.verify_key, min_version=keyring.version).version == 4
    with pytest.raises(KeyringError, match=r"older than version 5 .*rollback") as info:
        load_keyring(old, org.verify_key, min_version=5)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InputError)


def test_unknown_format_is_named(org: SigningKey, keyring: Keyring) -> None:
    payload = keyring.payload() | {"format": "amanat-keyring/v3"}
    with pytest.raises(KeyringError, match=r"unknown keyring format .amanat-keyring/v3."):
        load_keyring(sign_raw(payload, org), org.verify_key)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[]", "not an Amanat keyring document"),
        (b'{"keyring": {}, "signature": "", "extra": 1}', "not an Amanat keyring document"),
        (b'{"keyring": [], "signature": ""}', "'keyring' must be an object"),
        (b'{"keyring": {"format": "amanat-keyring/v1"}, "signature": "abc"}', "signature"),
        (b'{"keyring": {}, "keyring": {}, "signature": ""}', "appears twice"),
    ],
)
def test_garbage_documents(org: SigningKey, document: bytes, reason: str) -> None:
    with pytest.raises(KeyringError, match=reason):
        load_keyring(document, org.verify_key)


def _break(path: str, value: Any) -> Any:
    def apply(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_break("version", "4"), "'version' must be an integer"),
        (_break("version", True), "'version' must be an integer"),
        (_break("version", 0), "version must be an integer in 1"),
        (_break("version", 2**53), "version must be an integer in 1"),
        (_break("investigators", {}), "'investigators' must be a list"),
        (_break("extra", 1), "unknown extra"),
        (_break("transfer_verify_key", _DELETE), "missing transfer_verify_key"),
        (_break("transfer_verify_key", "AAAA"), "transfer_verify_key: expected 32 bytes"),
        (_break("investigators.0.label", ""), "non-empty"),
        (_break("investigators.0.label", "eve\u202e"), "invisible"),
        (_break("investigators.0.recipient", "age1notakey"), "bad age recipient"),
        (_break("investigators.0.recipient", 7), "recipient must be a string"),
        (_break("investigators.0.verify_key", "not base64!"), "verify_key: expected 32 bytes"),
        (_break("investigators.0.added", "2026-02-30"), "day YYYY-MM-DD"),
        (_break("investigators.0.added", "20261126"), "day YYYY-MM-DD"),
        (_break("investigators.0.revoked", "no"), "true or false"),
        (_break("investigators.0.colour", "red"), "unknown colour"),
        (_break("investigators.0.added", _DELETE), "missing added"),
    ],
)
def test_malformed_fields_are_named(
    org: SigningKey, keyring: Keyring, change: Any, reason: str
) -> None:
    payload = json.loads(json.dumps(keyring.payload()))
    change(payload)
    with pytest.raises(KeyringError, match=reason):
        load_keyring(sign_raw(payload, org), org.verify_key)


def test_floats_and_duplicates_are_refused(org: SigningKey, keyring: Keyring) -> None:
    payload = json.loads(json.dumps(keyring.payload()))
    payload["investigators"][1]["label"] = "ALICE"  # labels are unique regardless of case
    with pytest.raises(KeyringError, match="share the same label"):
        load_keyring(sign_raw(payload, org), org.verify_key)
    text = sign_keyring(keyring.bumped(), org).replace(b'"version": 5', b'"version": 5.0')
    with pytest.raises(KeyringError, match="integers"):
        load_keyring(text, org.verify_key)
    twin = investigator("twin")
    clone = Investigator("clone", twin.recipient, SigningKey.generate().verify_key, DAY)
    with pytest.raises(KeyringError, match="same age recipient"):
        keyring.with_investigator(twin).with_investigator(clone)


# --- queries -------------------------------------------------------------------------------


def test_revoked_investigators_are_excluded(org: SigningKey, keyring: Keyring) -> None:
    alice = keyring.investigators[0]
    revoked = load_keyring(sign_keyring(keyring.with_revoked("Alice"), org), org.verify_key)
    assert revoked.version == keyring.version + 1
    assert [str(r) for r in revoked.active_recipients()] == [
        str(keyring.investigators[1].recipient)
    ]
    assert [i.label for i in revoked.active_investigators()] == ["بصیر"]
    assert revoked.investigator_by_verify_key(alice.verify_key) is None
    found = revoked.investigator_by_verify_key(bytes(alice.verify_key), include_revoked=True)
    assert found is not None
    assert found.revoked
    assert keyring.investigator_by_verify_key(alice.verify_key) == alice
    with pytest.raises(KeyringError, match="already revoked"):
        revoked.with_revoked("alice")
    with pytest.raises(KeyringError, match="no investigator labelled 'bob'"):
        revoked.with_revoked("bob")


def test_fingerprint_is_stable_and_changes_with_everything(
    org: SigningKey, keyring: Keyring
) -> None:
    fingerprint = keyring.fingerprint()
    assert re.fullmatch(r"\d{4}( \d{4}){5}", fingerprint)
    assert load_keyring(sign_keyring(keyring, org), org.verify_key).fingerprint() == fingerprint
    variants = [
        keyring.bumped(),
        keyring.with_revoked("alice"),
        keyring.with_investigator(investigator("carol")),
        keyring.with_transfer_key(SigningKey.generate().verify_key),
        Keyring(
            keyring.version,
            SigningKey.generate().verify_key,
            keyring.investigators,
            keyring.transfer_verify_key,
        ),  # same payload, another organization
    ]
    prints = {fingerprint} | {k.fingerprint() for k in variants}
    assert len(prints) == len(variants) + 1


def test_fingerprint_known_answer() -> None:
    # Pinned: a second implementation of docs/format.md section 3.4 must reproduce it.
    org = SigningKey(bytes(range(32)))
    assert empty_keyring(org.verify_key).fingerprint() == "2595 6273 7482 8118 7821 2528"


EXAMPLE_DOCUMENT = """{
  "keyring": {
    "format": "amanat-keyring/v2",
    "investigators": [
      {
        "added": "2026-11-26",
        "label": "alice",
        "recipient": "age15nsf9y4k28p83wth93tf7hafhvfajp45d2mge80ems45gz0c5gys3me64l",
        "revoked": false,
        "transfer_key": "ypOsFwUYcHHWe4PH/w7+gQjo7EUwV113JoeTM9vavnw=",
        "verify_key": "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="
      }
    ],
    "transfer_verify_key": "7UkoxijRwsbq6QM4kFmVYSlZJzpcY/k2NsFGFKyHN9E=",
    "version": 3
  },
  "signature": "SIGNATURE"
}
""".replace(
    "SIGNATURE",
    "8sAg+gEViy3ot6EqEgvN+16wYYyw8e1kICGirhC+coHUPv0GBXUidDnG70B7XOKxCopeIPUPs6xKOR0HuQpNBw==",
)

# The same keyring as written before transfer credentials existed (format v1): still read.
EXAMPLE_DOCUMENT_V1 = """{
  "keyring": {
    "format": "amanat-keyring/v1",
    "investigators": [
      {
        "added": "2026-11-26",
        "label": "alice",
        "recipient": "age15nsf9y4k28p83wth93tf7hafhvfajp45d2mge80ems45gz0c5gys3me64l",
        "revoked": false,
        "verify_key": "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="
      }
    ],
    "transfer_verify_key": "7UkoxijRwsbq6QM4kFmVYSlZJzpcY/k2NsFGFKyHN9E=",
    "version": 3
  },
  "signature": "SIGNATURE"
}
""".replace(
    "SIGNATURE",
    "5OfDsyaEnlz4HuW2LOmwabIcAp8iC6RI2BjuDzdknoyiy9SaD/jQcmFCplfjErvD0t+hNeySmiLZ6UiI9YKWDg==",
)


def test_example_document_from_the_spec() -> None:
    """docs/format.md 3.7: Ed25519 is deterministic, so the whole document is a known answer."""
    org = SigningKey(bytes(range(32)))
    alice = Investigator(
        "alice",
        X25519Identity.from_secret(bytes([1] * 32)).recipient(),
        SigningKey(bytes([2] * 32)).verify_key,
        DAY,
        transfer_key=SigningKey(bytes([4] * 32)).verify_key,
    )
    keyring = (
        empty_keyring(org.verify_key)
        .with_investigator(alice)
        .with_transfer_key(SigningKey(bytes([3] * 32)).verify_key)
    )
    assert sign_keyring(keyring, org).decode() == EXAMPLE_DOCUMENT
    loaded = load_keyring(
        EXAMPLE_DOCUMENT.encode(),
        parse_org_public_key(b"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="),
    )
    assert loaded.fingerprint() == "9032 5922 7607 1063 8342 6746"


def test_a_v1_keyring_still_loads_and_any_change_writes_v2() -> None:
    """docs/format.md 3.8: a keyring signed before transfer credentials keeps its signature and
    fingerprint; its investigators have no transfer key until the organization issues one."""
    org = SigningKey(bytes(range(32)))
    loaded = load_keyring(EXAMPLE_DOCUMENT_V1.encode(), org.verify_key)
    assert loaded.fingerprint() == "9493 9728 8048 5349 3639 4736"
    assert loaded.format_id == "amanat-keyring/v1"
    (alice,) = loaded.investigators
    assert alice.transfer_key is None
    assert loaded.investigator_by_transfer_key(alice.verify_key) is None
    issued = loaded.with_investigator_transfer_key("alice", SigningKey(bytes([4] * 32)).verify_key)
    assert issued.version == 4
    assert issued.format_id == "amanat-keyring/v2"
    again = load_keyring(sign_keyring(issued, org), org.verify_key, min_version=3)
    assert again.format_id == "amanat-keyring/v2"
    owner = again.investigator_by_transfer_key(SigningKey(bytes([4] * 32)).verify_key)
    assert owner is not None
    assert (owner.label, owner.verify_key) == (alice.label, alice.verify_key)
    # a v1 document that smuggles in a transfer key is malformed, signature or not
    smuggled = json.loads(EXAMPLE_DOCUMENT_V1)["keyring"]
    smuggled["investigators"][0]["transfer_key"] = encode_key(SigningKey(bytes(32)).verify_key)
    with pytest.raises(KeyringError, match="unknown transfer_key"):
        load_keyring(sign_raw(smuggled, org), org.verify_key)


def test_transfer_and_offline_keys_are_revoked_and_rotated_apart(keyring: Keyring) -> None:
    alice = keyring.investigators[0]
    first, second = SigningKey.generate().verify_key, SigningKey.generate().verify_key
    issued = keyring.with_investigator_transfer_key(alice.label, first)
    rotated = issued.with_investigator_transfer_key(alice.label, second)
    assert rotated.investigator_by_transfer_key(first) is None
    owner = rotated.investigator_by_transfer_key(second)
    assert owner is not None
    assert bytes(owner.verify_key) == bytes(alice.verify_key)  # offline key untouched
    assert owner.recipient == alice.recipient
    revoked = rotated.with_investigator_transfer_key(alice.label, None)
    assert revoked.investigator_by_transfer_key(second) is None
    assert not revoked.investigators[0].revoked  # still reads and replies offline
    with pytest.raises(KeyringError, match="no transfer credential"):
        revoked.with_investigator_transfer_key(alice.label, None)
    new_identity = X25519Identity.generate()
    new_offline = SigningKey.generate().verify_key
    moved = rotated.with_rotated_identity(alice.label, new_identity.recipient(), new_offline)
    assert moved.active_recipients()[0] == new_identity.recipient()
    assert moved.investigator_by_transfer_key(second) is not None  # transfer key untouched
    assert moved.investigator_by_verify_key(alice.verify_key) is None
    # one key never serves both roles, even across investigators
    with pytest.raises(KeyringError, match="verify key"):
        keyring.with_investigator_transfer_key(alice.label, alice.verify_key)


# --- labels, unsigned payloads and key files -------------------------------------------------


@pytest.mark.parametrize(
    "label", ["", " alice", "alice ", "a" * 65, "al\nice", "al\u200bice", "x\u202ey"]
)
def test_bad_labels(label: str) -> None:
    with pytest.raises(KeyringError, match="label"):
        check_label(label)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(
        st.text(min_size=1, max_size=64), min_size=1, max_size=4, unique_by=str.casefold
    )
)
def test_any_valid_labels_round_trip(labels: list[str]) -> None:
    org = SigningKey(bytes(32))
    keyring = empty_keyring(org.verify_key)
    for label in labels:
        try:
            check_label(label)
        except KeyringError:
            continue
        keyring = keyring.with_investigator(investigator(label))
    loaded = load_keyring(sign_keyring(keyring, org), org.verify_key)
    assert loaded.payload() == keyring.payload()


def test_unsigned_payload(org: SigningKey, keyring: Keyring) -> None:
    text = json.dumps(keyring.payload(), indent=1).encode()
    assert parse_unsigned_keyring(text, org.verify_key).payload() == keyring.payload()
    with pytest.raises(KeyringError, match="unknown keyring format"):
        parse_unsigned_keyring(b'{"version": 3}', org.verify_key)


def test_org_key_files(org: SigningKey) -> None:
    secret_text = format_org_signing_key(org)
    public_text = format_org_public_key(org.verify_key)
    assert bytes(parse_org_signing_key(secret_text)) == bytes(org)
    assert bytes(parse_org_public_key(public_text)) == bytes(org.verify_key)
    bare = base64.b64encode(bytes(org.verify_key))
    assert bytes(parse_org_public_key(bare + b"\n")) == bytes(org.verify_key)
    with pytest.raises(KeyringError, match="not an organization key file"):
        parse_org_signing_key(public_text)  # the public file is never mistaken for the secret
    with pytest.raises(KeyringError, match="organization public key"):
        parse_org_public_key(secret_text)
    assert base64.b64encode(bytes(org)) not in public_text


# --- investigator identity files -------------------------------------------------------------


@pytest.fixture(scope="module")
def alice_keys() -> InvestigatorSecrets:
    return InvestigatorSecrets.generate("alice")


def test_identity_file_round_trip(alice_keys: InvestigatorSecrets) -> None:
    data = protect_identity(alice_keys, "correct horse battery", LOW_WORK_FACTOR)
    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert b"AGE-SECRET-KEY" not in data
    opened = open_identity(data, "correct horse battery")
    assert opened.label == "alice"
    assert str(opened.identity) == str(alice_keys.identity)
    assert bytes(opened.signing_key) == bytes(alice_keys.signing_key)
    entry = opened.public_entry(DAY)
    assert str(entry.recipient) == str(alice_keys.identity.recipient())
    assert bytes(entry.verify_key) == bytes(alice_keys.signing_key.verify_key)


def test_identity_file_refuses_a_wrong_passphrase(alice_keys: InvestigatorSecrets) -> None:
    data = protect_identity(alice_keys, "correct horse battery", LOW_WORK_FACTOR)
    with pytest.raises(WrongPassphraseError) as info:
        open_identity(data, "correct horse batterY")
    assert isinstance(info.value, ValueError)


def test_identity_file_refuses_garbage(alice_keys: InvestigatorSecrets) -> None:
    data = protect_identity(alice_keys, "correct horse battery", LOW_WORK_FACTOR)
    for garbage in (b"", b"\x00" * 100, b"hello world\n", data[: len(data) // 2]):
        with pytest.raises(IdentityFileError) as info:
            open_identity(garbage, "correct horse battery")
        assert isinstance(info.value, InputError)
    # An age file that decrypts but does not hold an identity.
    not_identity = protect_identity_plaintext(b"just a note\n")
    with pytest.raises(IdentityFileError, match="expected one label"):
        open_identity(not_identity, "correct horse battery")


def protect_identity_plaintext(plaintext: bytes) -> bytes:
    from keys.age import ScryptRecipient

    return encrypt(plaintext, [ScryptRecipient("correct horse battery", LOW_WORK_FACTOR)])


def test_identity_repr_and_text_form(alice_keys: InvestigatorSecrets) -> None:
    assert "AGE-SECRET-KEY" not in repr(alice_keys)
    assert base64.b64encode(bytes(alice_keys.signing_key)).decode() not in repr(alice_keys)
    text = format_identity(alice_keys)
    crlf = parse_identity(text.replace("\n", "\r\n"))
    assert (crlf.label, str(crlf.identity)) == ("alice", str(alice_keys.identity))
    assert crlf.signing_key == alice_keys.signing_key
    broken = text.replace("# AMANAT-SIGNING-KEY: ", "# ")
    with pytest.raises(IdentityFileError):
        parse_identity(broken)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("age") is None, reason="needs the age binary")
def test_identity_plaintext_is_an_age_identity_file(
    alice_keys: InvestigatorSecrets, tmp_path: Path
) -> None:
    """`age -d -i` accepts the plaintext, despite the signing-key comment line."""
    identity_path = tmp_path / "identity.txt"
    identity_path.write_text(format_identity(alice_keys))
    identity_path.chmod(0o600)
    ciphertext = encrypt(b"testimony", [alice_keys.identity.recipient()])
    out = subprocess.run(
        ["age", "-d", "-i", str(identity_path)], input=ciphertext, capture_output=True, check=True
    )
    assert out.stdout == b"testimony"


# --- transfer credentials ------------------------------------------------------------------


def test_a_credential_opens_to_a_signing_key_and_no_age_identity(tmp_path: Path) -> None:
    credential = TransferCredential.generate("alice")
    data = protect_credential(credential, "online passphrase", LOW_WORK_FACTOR)
    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    from keys.age import ScryptIdentity, decrypt

    plaintext = decrypt(data, [ScryptIdentity("online passphrase")])
    assert b"AGE-SECRET-KEY" not in plaintext.upper()
    assert b"AMANAT-SIGNING-KEY" not in plaintext  # not the offline reply key either
    opened = open_credential(data, "online passphrase")
    assert opened.label == "alice"
    assert bytes(opened.signing_key) == bytes(credential.signing_key)
    assert base64.b64encode(bytes(credential.signing_key)).decode() not in repr(credential)
    with pytest.raises(WrongPassphraseError):
        open_credential(data, "offline passphrase")


def test_an_identity_file_given_as_a_credential_is_refused_with_the_reason(
    alice_keys: InvestigatorSecrets,
) -> None:
    identity_file = protect_identity(alice_keys, "correct horse battery", LOW_WORK_FACTOR)
    with pytest.raises(AgeIdentityOnlineError, match=r"opens testimonies.*never be on an online"):
        open_credential(identity_file, "correct horse battery", "investigator.age")
    # shown in the clear (a decrypted identity file), it is refused before any passphrase
    for text in (format_identity(alice_keys), str(alice_keys.identity).lower() + "\n"):
        with pytest.raises(AgeIdentityOnlineError, match=r"investigator\.txt holds an age"):
            open_credential(text.encode(), "wrong anyway", "investigator.txt")
    # a credential text with an age identity pasted into it is refused too
    mixed = format_credential(TransferCredential.generate("alice")) + f"{alice_keys.identity}\n"
    with pytest.raises(AgeIdentityOnlineError):
        parse_credential(mixed)
    assert issubclass(AgeIdentityOnlineError, InputError)


def test_a_damaged_credential_is_refused() -> None:
    text = format_credential(TransferCredential.generate("alice"))
    for broken in (
        text.replace("AMANAT-TRANSFER-CREDENTIAL: ", "# "),
        text + "stray line\n",
        text.replace("# AMANAT-LABEL: alice\n", ""),
        text.replace("=\n", "A=\n"),
        "",
    ):
        with pytest.raises(CredentialFileError):
            parse_credential(broken)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), prefix=st.sampled_from(["", "# AMANAT-LABEL: a\n"]))
def test_any_text_is_a_credential_or_refused_as_input(text: str, prefix: str) -> None:
    try:
        parsed = parse_credential(prefix + text)
    except CredentialFileError:
        return
    assert len(bytes(parsed.signing_key)) == 32


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600))
def test_any_bytes_given_as_a_credential_are_refused_as_input(data: bytes) -> None:
    with pytest.raises((IdentityFileError, WrongPassphraseError)):
        open_credential(data, "a passphrase")


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("age") is None, reason="needs the age binary")
def test_the_age_binary_finds_no_identity_in_a_credential(tmp_path: Path) -> None:
    """Decrypted with its passphrase, a credential is no age identity file: `age -d -i` on it
    opens nothing."""
    credential_text = tmp_path / "credential.txt"
    credential_text.write_text(format_credential(TransferCredential.generate("alice")))
    credential_text.chmod(0o600)
    ciphertext = encrypt(b"testimony", [X25519Identity.generate().recipient()])
    out = subprocess.run(
        ["age", "-d", "-i", str(credential_text)], input=ciphertext, capture_output=True
    )
    assert out.returncode != 0
    assert b"testimony" not in out.stdout
    assert b"unknown identity type" in out.stderr  # the key line is nothing age can use


def test_same_version_other_content_is_a_fork(org: SigningKey, keyring: Keyring) -> None:
    first = load_keyring(sign_keyring(keyring, org), org.verify_key)
    other = replace(keyring, investigators=keyring.investigators[:1])
    document = sign_keyring(other, org)
    seen = (first.version, first.fingerprint())
    assert load_keyring(sign_keyring(keyring, org), org.verify_key, *seen) == first
    with pytest.raises(KeyringForkError, match=r"other content .* same version") as info:
        load_keyring(document, org.verify_key, *seen)
    assert isinstance(info.value, KeyringError)
    assert load_keyring(document, org.verify_key, first.version).version == first.version
