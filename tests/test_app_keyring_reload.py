"""The public app re-reads the keyring when its file changes: a revocation signed by the
organization applies to the next submission without a restart, and a changed keyring that does
not verify leaves the last verified one in force."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from dropbox.config import load_config
from dropbox.demo import DemoOrg
from dropbox.server_keys import KEYRING_SEEN_FILE, load_verified_keyring
from keys.age import parse_header
from keys.errors import ConfigError, KeyringError
from keys.identity_file import InvestigatorSecrets
from keys.keyring import load_keyring, parse_org_public_key, sign_keyring
from tests.conftest import SourceClient, serve_org


def _rewrite_keyring(org: DemoOrg, change: Callable[[Any], Any]) -> None:
    config_dir = org.config_path.parent
    org_pub = parse_org_public_key((config_dir / "org" / "org.pub").read_bytes())
    path = config_dir / "org" / "keyring.json"
    keyring = change(load_keyring(path.read_bytes(), org_pub))
    path.write_bytes(sign_keyring(keyring, org.org_signing_key))


def _recipient_count(server: Any, submission_id: str) -> int:
    [message] = server.ciphertexts(submission_id)["message"]
    header, _ = parse_header(server.state.store.path(message).read_bytes())
    return sum(1 for stanza in header.stanzas if stanza.type == "X25519")


async def _submit(server: Any, text: str) -> str:
    before = {sid for sid, _ in server.submissions()}
    async with SourceClient(server.url) as source:
        await source.start()
        status, _ = await source.submit(text, [])
    assert status == 200
    [new] = [sid for sid, _ in server.submissions() if sid not in before]
    return new


async def test_revocation_applies_to_the_next_submission(demo_org: DemoOrg) -> None:
    second = InvestigatorSecrets.generate("second-investigator")
    today = datetime.now(UTC).date()
    _rewrite_keyring(demo_org, lambda k: k.with_investigator(second.public_entry(today)))
    async with serve_org(demo_org) as server:
        both = await _submit(server, "to both investigators")
        _rewrite_keyring(demo_org, lambda k: k.with_revoked("second-investigator"))
        one = await _submit(server, "to the one left")
        assert _recipient_count(server, both) == 2
        assert _recipient_count(server, one) == 1
        assert server.decrypt(server.ciphertexts(one)["message"][0]) == b"to the one left"


async def test_a_tampered_keyring_leaves_the_last_verified_one(demo_org: DemoOrg) -> None:
    async with serve_org(demo_org) as server:
        fingerprint = server.state.keyring.fingerprint()
        path = demo_org.config_path.parent / "org" / "keyring.json"
        path.write_bytes(path.read_bytes().replace(b'"version": ', b'"version": 9'))
        assert server.state.keyring.fingerprint() == fingerprint
        sid = await _submit(server, "still received")
        assert server.decrypt(server.ciphertexts(sid)["message"][0]) == b"still received"


def test_same_version_other_content_is_refused_at_start(demo_org: DemoOrg) -> None:
    """Two signed documents under one version number: the one accepted first stays the only one."""
    config = load_config(demo_org.config_path)
    accepted = load_verified_keyring(config)
    seen = config.storage.data_dir / KEYRING_SEEN_FILE
    assert seen.read_text() == f"{accepted.version}\n{accepted.fingerprint()}\n"
    extra = InvestigatorSecrets.generate("added-without-a-new-version")
    forked = replace(
        accepted,
        investigators=(*accepted.investigators, extra.public_entry(datetime.now(UTC).date())),
    )
    path = demo_org.config_path.parent / "org" / "keyring.json"
    path.write_bytes(sign_keyring(forked, demo_org.org_signing_key))
    with pytest.raises(KeyringError, match="other content than the keyring of the same version"):
        load_verified_keyring(config)
    path.write_bytes(sign_keyring(forked.bumped(), demo_org.org_signing_key))
    assert load_verified_keyring(config).version == accepted.version + 1  # a new version is fine


def test_the_record_of_the_accepted_version_is_never_read_as_zero(demo_org: DemoOrg) -> None:
    config = load_config(demo_org.config_path)
    accepted = load_verified_keyring(config)
    seen = config.storage.data_dir / KEYRING_SEEN_FILE
    seen.write_text(f"{accepted.version}\n")  # as written before fingerprints were recorded
    assert load_verified_keyring(config).fingerprint() == accepted.fingerprint()
    assert seen.read_text().endswith(f"{accepted.fingerprint()}\n")
    seen.write_text("")  # damaged: a rollback would pass if this counted as version 0
    with pytest.raises(ConfigError, match="damaged"):
        load_verified_keyring(config)
