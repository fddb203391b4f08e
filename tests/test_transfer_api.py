"""The transfer API on its own real socket, next to the real intake server and its database: a
SQLite file, and a real PostgreSQL server (every test that uses `org` runs on both).

Submissions go in through the source pages (SourceClient); bundles come out signed; replies go
back and a source reads them; acknowledgements delete ciphertexts; every refusal is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import secrets
import sys
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from conftest import RunningServer, SourceClient, serve_org
from nacl.signing import SigningKey

from dropbox import transfer
from dropbox.app import start_site
from dropbox.config import Listen, load_config
from dropbox.demo import DemoOrg, create_demo_org
from dropbox.intake import intake_limits
from dropbox.transfer_api import STATE, create_transfer_app
from keys.age import X25519Recipient, decrypt, encrypt
from keys.bundle import (
    Reply,
    ReplyManifest,
    TransferManifest,
    read_bundle,
    transfer_key_lookup,
    write_bundle,
)
from keys.errors import ConfigError
from keys.identity_file import InvestigatorSecrets, TransferCredential
from keys.keyring import encode_key, load_keyring, parse_org_public_key, sign_keyring
from keys.transfer_auth import EMPTY_SHA256, HEADER_CONTENT_SHA256, sign_request
from workstation.cli import verified_submission_ids
from workstation.client import TransferClient, TransferClientError

BACKENDS = ("sqlite", "postgresql")  # conftest.py: tests using `database_url` run on both

@dataclasses.dataclass
class Pair:
    public: RunningServer
    url: str  # the transfer API
    app: web.Application


@pytest.fixture
def org(tmp_path: Path, database_url: str | None) -> DemoOrg:
    return create_demo_org(tmp_path / "org", port=0, cheap_kdf=True, database_url=database_url)


@contextlib.asynccontextmanager
async def servers(org: DemoOrg, **overrides: dict[str, Any]) -> AsyncIterator[Pair]:
    async with serve_org(org, **overrides) as web_server:
        app = create_transfer_app(web_server.config)
        runner, url = await start_site(app, Listen("127.0.0.1", 0))
        try:
            yield Pair(web_server, url, app)
        finally:
            await runner.cleanup()


def add_investigator(org: DemoOrg, label: str) -> tuple[InvestigatorSecrets, TransferCredential]:
    """A second investigator with both credentials, added to the org's keyring."""
    secrets_ = InvestigatorSecrets.generate(label)
    credential = TransferCredential.generate(label)
    ring = keyring_of(org).with_investigator(secrets_.public_entry(date.today(), credential))
    (org.root / "org" / "keyring.json").write_bytes(sign_keyring(ring, org.org_signing_key))
    return secrets_, credential


def keyring_of(org: DemoOrg) -> Any:
    org_pub = parse_org_public_key((org.root / "org" / "org.pub").read_bytes())
    return load_keyring((org.root / "org" / "keyring.json").read_bytes(), org_pub)


def client(pair: Pair, org: DemoOrg, key: SigningKey | None = None) -> TransferClient:
    return TransferClient(pair.url, key or org.credential.signing_key)


async def submit(pair: Pair, message: str, files: list[tuple[str, bytes, str]]) -> str:
    async with SourceClient(pair.public.url) as source:
        codename = await source.start()
        status, html = await source.submit(message, files)
        assert status == 200, html
    return codename


async def pull_bundle(pair: Pair, org: DemoOrg) -> Any:
    out = io.BytesIO()
    async with client(pair, org) as c:
        await c.pull(out)
    out.seek(0)
    return read_bundle(out, transfer_key_lookup(keyring_of(org).transfer_verify_key))


def reply_bundle(
    org: DemoOrg, item: Any, text: str, signer: InvestigatorSecrets | None = None,
    instance: str | None = None,
) -> bytes:
    signer = signer or org.investigator
    ciphertext = encrypt(text.encode(), [X25519Recipient.parse(item.reply_recipient)])
    reply_id = secrets.token_hex(16)
    reply = Reply(
        reply_id=reply_id, source_id=item.source_id, reply_recipient=item.reply_recipient,
        name=f"{reply_id}.age", size=len(ciphertext),
        sha256=hashlib.sha256(ciphertext).hexdigest(), investigator=signer.label,
        day=date.today().isoformat(),
    )
    manifest = ReplyManifest(
        instance or transfer.instance_id((org.root / "instance_salt").read_bytes()),
        secrets.token_hex(16), reply.day, signer.label, (reply,),
    )
    out = io.BytesIO()
    write_bundle(out, manifest, [(reply.name, io.BytesIO(ciphertext), reply.size)],
                 signer.signing_key)
    return out.getvalue()


async def raw(pair: Pair, method: str, path: str, headers: dict[str, str],
              body: bytes = b"") -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as http, http.request(
        method, pair.url + path, headers=headers, data=body or None
    ) as response:
        return response.status, await response.json(content_type=None), response.headers


# --- the happy path ---------------------------------------------------------------------------


async def test_pull_gives_a_signed_bundle_of_unacknowledged_items(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "first testimony", [("a.bin", b"A" * 70_000, "application/x-a")])
        await submit(pair, "second testimony", [])
        bundle = await pull_bundle(pair, org)
        manifest = bundle.manifest
        assert isinstance(manifest, TransferManifest)
        assert len(manifest.items) == 2
        # the intake's limits are signed in, for the review tool to check manifests against
        assert manifest.limits == intake_limits(pair.public.config.limits)
        names = [c.name for item in manifest.items for c in item.ciphertexts]
        # every age file the server holds for them, byte for byte
        for name in names:
            assert bundle.read_member(name) == pair.public.state.store.path(name).read_bytes()
        kinds = sorted(c.kind for item in manifest.items for c in item.ciphertexts)
        assert kinds.count("file") == 1
        assert kinds.count("message") == 2
        # source ids are the opaque database ids, never the lookup ids
        lookups = {r[0] for r in pair.public.query("SELECT lookup_id FROM sources")}
        assert not {item.source_id for item in manifest.items} & lookups
        message = next(c for c in manifest.items[1].ciphertexts if c.kind == "message")
        plain = decrypt(bundle.read_member(message.name), [org.investigator.identity])
        assert b"testimony" in plain


async def test_an_empty_server_gives_an_empty_signed_bundle(org: DemoOrg) -> None:
    async with servers(org) as pair:
        bundle = await pull_bundle(pair, org)
        assert bundle.manifest.items == ()


async def test_ack_deletes_files_and_rows_at_once_by_default(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "keep me safe", [("f.txt", b"hello", "text/plain")])
        await submit(pair, "not yet imported", [])
        bundle = await pull_bundle(pair, org)
        first = bundle.manifest.items[0]
        names = [c.name for c in first.ciphertexts]
        assert all(pair.public.state.store.path(n).exists() for n in names)
        async with client(pair, org) as c:
            answer = await c.ack([first.submission_id, "0" * 32])
        assert answer["acknowledged"] == [first.submission_id]
        assert answer["unknown"] == ["0" * 32]
        assert answer["deleted"] == len(names)
        assert answer["retention_days"] == 0
        assert not any(pair.public.state.store.path(n).exists() for n in names)
        for table, column in (("ciphertexts", "submission_id"), ("submissions", "id")):
            assert pair.public.query(
                f"SELECT count(*) FROM {table} WHERE {column} = ?", first.submission_id
            ) == [(0,)]
        # the other one is untouched and still pulled; the acknowledged one is not
        again = await pull_bundle(pair, org)
        assert [i.submission_id for i in again.manifest.items] == [
            bundle.manifest.items[1].submission_id
        ]
        async with client(pair, org) as c:
            repeat = await c.ack([first.submission_id])
        assert repeat["unknown"] == [first.submission_id]  # nothing of it is left to know
        assert repeat["already_acknowledged"] == []
        assert repeat["deleted"] == 0


async def test_retention_keeps_acknowledged_files_until_it_runs_out(org: DemoOrg) -> None:
    async with servers(org, transfer={"retention_days": 3}) as pair:
        await submit(pair, "retained", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        async with client(pair, org) as c:
            answer = await c.ack([item.submission_id])
        assert answer["deleted"] == 0
        assert answer["retention_days"] == 3
        name = item.ciphertexts[0].name
        state = pair.app[STATE]
        assert await transfer.purge_due(state.maker, state.store, "2999-01-01") >= 1
        assert not pair.public.state.store.path(name).exists()
        assert pair.public.query("SELECT count(*) FROM ciphertexts") == [(0,)]
        assert pair.public.query("SELECT count(*) FROM submissions") == [(0,)]


async def test_pushed_reply_is_stored_encrypted_and_the_source_reads_it(org: DemoOrg) -> None:
    async with servers(org) as pair:
        codename = await submit(pair, "please answer", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        text = "We received your testimony. — تشکر"
        data = reply_bundle(org, item, text)
        async with client(pair, org) as c:
            answer = await c.push(data)
            assert len(answer["stored"]) == 1
            assert answer["already_stored"] == []
            again = await c.push(data)
            assert again["stored"] == []
            assert len(again["already_stored"]) == 1
        rows = pair.public.query("SELECT name, investigator FROM replies")
        assert len(rows) == 1
        assert rows[0][1] == org.investigator.label
        stored = pair.public.state.store.path(rows[0][0]).read_bytes()
        assert text.encode() not in stored  # the server only holds ciphertext
        async with SourceClient(pair.public.url) as source:
            status, html = await source.login(codename)
        assert status == 200
        assert "We received your testimony." in html
        assert "تشکر" in html


# --- several investigators: acknowledgements, policy, retention, status ---------------------


async def status_of(pair: Pair, key: SigningKey) -> dict[str, Any]:
    async with TransferClient(pair.url, key) as c:
        return await c.status()


async def test_two_investigators_each_acknowledge_before_the_purge(org: DemoOrg) -> None:
    second, second_credential = add_investigator(org, "Second")
    async with servers(org, transfer={"retention_days": 2}) as pair:
        await submit(pair, "for both of you", [("f.bin", b"B" * 3000, "application/x-b")])
        first_bundle = await pull_bundle(pair, org)
        (item,) = first_bundle.manifest.items
        sizes = sum(c.size for c in item.ciphertexts)
        expected = {"submissions": 1, "files": len(item.ciphertexts), "bytes": sizes,
                    "replies": 0}
        assert await status_of(pair, org.credential.signing_key) == {
            "waiting": expected, "acknowledged_by_me": 0, "replies_deleted_by_sources": [],
        }
        async with client(pair, org) as c:
            answer = await c.ack([item.submission_id])
        assert answer["acknowledged"] == [item.submission_id]
        assert (answer["retention_started"], answer["deleted"]) == ([], 0)
        assert pair.public.query("SELECT acknowledged_day FROM submissions") == [(None,)]
        # the first one is done with it; the second can still pull it and open it
        assert (await pull_bundle(pair, org)).manifest.items == ()
        mine = await status_of(pair, org.credential.signing_key)
        assert mine["waiting"]["submissions"] == 0
        assert mine["acknowledged_by_me"] == 1
        theirs = await status_of(pair, second_credential.signing_key)
        assert theirs == {"waiting": expected, "acknowledged_by_me": 0,
                          "replies_deleted_by_sources": []}
        out = io.BytesIO()
        async with client(pair, org, second_credential.signing_key) as c:
            await c.pull(out)
            out.seek(0)
            again = read_bundle(out, transfer_key_lookup(keyring_of(org).transfer_verify_key))
            assert [i.submission_id for i in again.manifest.items] == [item.submission_id]
            message = next(c for c in again.manifest.items[0].ciphertexts if c.kind == "message")
            assert b"for both of you" in decrypt(again.read_member(message.name),
                                                 [second.identity])
            answer = await c.ack([item.submission_id])
        assert answer["retention_started"] == [item.submission_id]
        assert answer["deleted"] == 0  # two days of retention
        # the retention purge: nothing before its day, everything on it
        state = pair.app[STATE]
        today = date.today()
        assert await transfer.purge_due(state.maker, state.store, today.isoformat()) == 0
        later = (today + timedelta(days=2)).isoformat()
        assert await transfer.purge_due(state.maker, state.store, later) == len(item.ciphertexts)
        assert not any(state.store.path(c.name).exists() for c in item.ciphertexts)
        for table in ("submissions", "ciphertexts", "acknowledgements"):
            assert pair.public.query(f"SELECT count(*) FROM {table}") == [(0,)], table
        assert (await status_of(pair, org.credential.signing_key))["acknowledged_by_me"] == 0


async def test_a_policy_of_one_lets_the_first_acknowledgement_count(org: DemoOrg) -> None:
    _, second_credential = add_investigator(org, "Second")
    async with servers(org, transfer={"acknowledgements": 1}) as pair:
        await submit(pair, "one copy is enough here", [])
        (item,) = (await pull_bundle(pair, org)).manifest.items
        async with client(pair, org) as c:
            answer = await c.ack([item.submission_id])
        assert answer["retention_started"] == [item.submission_id]
        assert answer["deleted"] == len(item.ciphertexts)
        status = await status_of(pair, second_credential.signing_key)
        assert status["waiting"]["submissions"] == 0


async def test_a_revocation_releases_what_waited_for_the_revoked_investigator(
    org: DemoOrg,
) -> None:
    second, _ = add_investigator(org, "Second")
    async with servers(org) as pair:
        await submit(pair, "waiting for the second", [])
        (item,) = (await pull_bundle(pair, org)).manifest.items
        async with client(pair, org) as c:
            assert (await c.ack([item.submission_id]))["retention_started"] == []
    ring = keyring_of(org).with_revoked(second.label)
    (org.root / "org" / "keyring.json").write_bytes(sign_keyring(ring, org.org_signing_key))
    # the purge the transfer app runs at startup (and hourly) re-checks the policy
    async with servers(org) as pair:
        deadline = asyncio.get_running_loop().time() + 30
        files = [pair.public.state.store.path(c.name) for c in item.ciphertexts]
        # the purge deletes the files after it commits: wait for both
        while (pair.public.query("SELECT count(*) FROM submissions") != [(0,)]
               or any(path.exists() for path in files)):
            assert asyncio.get_running_loop().time() < deadline, "the purge never ran"
            await asyncio.sleep(0.05)
        assert pair.public.query("SELECT count(*) FROM ciphertexts") == [(0,)]


async def test_an_investigator_added_later_is_not_waited_for(org: DemoOrg) -> None:
    ring = keyring_of(org)
    policy = transfer.AckPolicy(required=None, retention_days=0)
    late = dataclasses.replace(
        InvestigatorSecrets.generate("Late").public_entry(date.today() + timedelta(days=1))
    )
    later = ring.with_investigator(late)
    today = date.today().isoformat()
    assert policy.met({org.investigator.label}, later, today)
    assert not policy.met({"Late"}, later, today)
    assert not policy.met(set(), later, today)
    assert not policy.met({"Nobody in the keyring"}, later, today)
    assert not transfer.AckPolicy(2, 0).met({org.investigator.label}, later, today)


async def test_status_counts_replies_and_downloads_nothing(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "answer me", [])
        (item,) = (await pull_bundle(pair, org)).manifest.items
        async with client(pair, org) as c:
            await c.push(reply_bundle(org, item, "an answer"))
        # status reads no ciphertext: remove the files and it still answers
        for (name,) in pair.public.query("SELECT name FROM ciphertexts"):
            pair.public.state.store.path(name).unlink()
        status = await status_of(pair, org.credential.signing_key)
        assert status["waiting"]["submissions"] == 1
        assert status["waiting"]["replies"] == 1
        # hostile: unsigned, a body where none belongs, the wrong method, a flood of requests
        code, body, _ = await raw(pair, "GET", "/v1/status", {})
        assert (code, body["error"]) == (401, "malformed_signature_headers")
        headers = signed_headers(org.credential.signing_key, "GET", "/v1/status", b"x" * 10)
        code, body, _ = await raw(pair, "GET", "/v1/status", headers, b"x" * 10)
        assert code == 413
        headers = signed_headers(org.credential.signing_key, "POST", "/v1/status")
        code, body, _ = await raw(pair, "POST", "/v1/status", headers)
        assert code == 405
        answers = await asyncio.gather(
            *(status_of(pair, org.credential.signing_key) for _ in range(40))
        )
        assert all(a == status for a in answers)


async def test_a_reply_its_source_deleted_shows_in_status_and_is_not_pushed_back(
    org: DemoOrg,
) -> None:
    """Issue 12, section 4: the source deletes a reply (row and ciphertext); its author's status
    names it, without a day; pushing the same bundle again does not bring it back."""
    second, second_credential = add_investigator(org, "Second")
    async with servers(org) as pair:
        codename = await submit(pair, "answer me", [])
        (item,) = (await pull_bundle(pair, org)).manifest.items
        data = reply_bundle(org, item, "read me, then delete me")
        async with client(pair, org) as c:
            (reply_id,) = (await c.push(data))["stored"]
        async with client(pair, org, second_credential.signing_key) as c:
            await c.push(reply_bundle(org, item, "keep me", signer=second))
        (row_id, name), = pair.public.query(
            "SELECT id, name FROM replies WHERE bundle_reply_id = ?", reply_id)
        async with SourceClient(pair.public.url) as source:
            _, page = await source.login(codename)
            assert f'id="delete-reply-{row_id}"' in page
            status, page = await source.post_form("/reply/delete", {"reply_id": row_id})
            assert status == 200
            assert "read me, then delete me" not in page
            assert "keep me" in page
        assert not pair.public.state.store.path(name).exists()
        mine = await status_of(pair, org.credential.signing_key)
        assert mine["replies_deleted_by_sources"] == [reply_id]
        assert mine["waiting"]["replies"] == 1
        assert reply_id not in json.dumps(await status_of(pair, second_credential.signing_key))
        assert pair.public.query("SELECT * FROM deleted_replies") == [
            (org.investigator.label, reply_id)]  # no day, no source
        async with client(pair, org) as c:
            again = await c.push(data)
        assert again == {"stored": [], "already_stored": [], "deleted_by_source": [reply_id]}
        assert len(pair.public.query("SELECT id FROM replies")) == 1


# --- refusals ---------------------------------------------------------------------------------


def signed_headers(key: SigningKey, method: str, path: str, body: bytes = b"",
                   now: float | None = None) -> dict[str, str]:
    import time

    digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    return sign_request(key, method, path, digest, time.time() if now is None else now)


async def test_unsigned_requests_are_refused_without_revealing_routes(org: DemoOrg) -> None:
    async with servers(org) as pair:
        for path in ("/v1/pull", "/nothing-here", "/"):
            status, body, headers = await raw(pair, "GET", path, {})
            assert status == 401
            assert body["error"] == "malformed_signature_headers"
            assert "Server" not in headers
            assert headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert headers["Cache-Control"] == "no-store"


async def test_stale_timestamp_is_refused(org: DemoOrg) -> None:
    import time

    async with servers(org) as pair:
        headers = signed_headers(org.credential.signing_key, "GET", "/v1/pull",
                                 now=time.time() - 3600)
        status, body, _ = await raw(pair, "GET", "/v1/pull", headers)
        assert (status, body["error"]) == (401, "stale_timestamp")


async def test_replayed_request_is_refused(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "replay target", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        body = json.dumps({"submission_ids": [item.submission_id]}).encode()
        headers = signed_headers(org.credential.signing_key, "POST", "/v1/ack", body)
        status, first, _ = await raw(pair, "POST", "/v1/ack", headers, body)
        assert status == 200
        assert first["acknowledged"] == [item.submission_id]
        status, second, _ = await raw(pair, "POST", "/v1/ack", headers, body)
        assert (status, second["error"]) == (401, "replayed_nonce")


async def test_unknown_key_is_refused(org: DemoOrg) -> None:
    async with servers(org) as pair, client(pair, org, SigningKey.generate()) as c:
        with pytest.raises(TransferClientError, match="401 unknown_key"):
            await c.pull(io.BytesIO())


async def test_the_offline_key_never_signs_transfer_requests(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "not for the offline key", [])
        async with client(pair, org, org.investigator.signing_key) as c:
            for attempt in (c.pull(io.BytesIO()), c.ack(["0" * 32]), c.status()):
                with pytest.raises(TransferClientError, match=r"401 offline_key.*review"):
                    await attempt
        assert pair.public.query("SELECT count(*) FROM acknowledgements") == [(0,)]


async def test_a_revoked_or_rotated_transfer_credential_stops_at_once(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await pull_bundle(pair, org)
        new = TransferCredential.generate(org.investigator.label)
        ring = keyring_of(org).with_investigator_transfer_key(
            org.investigator.label, new.signing_key.verify_key
        )
        (org.root / "org" / "keyring.json").write_bytes(sign_keyring(ring, org.org_signing_key))
        async with client(pair, org) as c:
            with pytest.raises(TransferClientError, match="401 unknown_key"):
                await c.pull(io.BytesIO())
        async with client(pair, org, new.signing_key) as c:
            await c.pull(io.BytesIO())  # the new one works, the offline identity unchanged
        ring = ring.with_investigator_transfer_key(org.investigator.label, None)
        (org.root / "org" / "keyring.json").write_bytes(sign_keyring(ring, org.org_signing_key))
        async with client(pair, org, new.signing_key) as c:
            with pytest.raises(TransferClientError, match="401 unknown_key"):
                await c.pull(io.BytesIO())


async def test_revocation_takes_effect_without_a_restart(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await pull_bundle(pair, org)  # allowed
        # the organization revokes the investigator and the new keyring is copied over
        revoked = keyring_of(org).with_revoked(org.investigator.label)
        (org.root / "org" / "keyring.json").write_bytes(
            sign_keyring(revoked, org.org_signing_key)
        )
        async with client(pair, org) as c:
            with pytest.raises(TransferClientError, match="403 revoked_key"):
                await c.pull(io.BytesIO())
            with pytest.raises(TransferClientError, match="403 revoked_key"):
                await c.ack(["0" * 32])


async def test_a_body_other_than_the_signed_one_is_refused(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "do not delete", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        signed = json.dumps({"submission_ids": ["0" * 32]}).encode()
        swapped = json.dumps({"submission_ids": [item.submission_id]}).encode()
        headers = signed_headers(org.credential.signing_key, "POST", "/v1/ack", signed)
        status, body, _ = await raw(pair, "POST", "/v1/ack", headers, swapped)
        assert (status, body["error"]) == (400, "body_hash_mismatch")
        assert pair.public.query("SELECT acknowledged_day FROM submissions") == [(None,)]


async def test_pull_with_a_body_hash_that_is_not_empty_is_refused(org: DemoOrg) -> None:
    async with servers(org) as pair:
        headers = signed_headers(org.credential.signing_key, "GET", "/v1/pull")
        headers[HEADER_CONTENT_SHA256] = "0" * 64  # breaks the signature too
        status, body, _ = await raw(pair, "GET", "/v1/pull", headers)
        assert (status, body["error"]) == (401, "bad_signature")


@pytest.mark.parametrize(
    "document",
    [[], {"submission_ids": []}, {"submission_ids": ["../x"]}, {"ids": ["a"]}, "nope"],
)
async def test_malformed_ack_lists_are_refused(org: DemoOrg, document: object) -> None:
    async with servers(org) as pair:
        body = json.dumps(document).encode()
        headers = signed_headers(org.credential.signing_key, "POST", "/v1/ack", body)
        status, answer, _ = await raw(pair, "POST", "/v1/ack", headers, body)
        assert (status, answer["error"]) == (400, "bad_request")


async def test_reply_bundles_that_cannot_be_stored_are_refused_whole(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "reply to me", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        other = InvestigatorSecrets.generate("Somebody else")
        good = reply_bundle(org, item, "hello")
        tampered = bytearray(good)
        tampered[-2048] ^= 1  # inside the reply's age file
        cases = {
            "signed by someone not in the keyring": reply_bundle(org, item, "x", signer=other),
            "for another instance": reply_bundle(org, item, "x", instance="f" * 32),
            "to an unknown source": reply_bundle(
                org, dataclasses.replace(item, source_id="e" * 32), "x"
            ),
            "tampered": bytes(tampered),
            "garbage": b"\x00garbage" * 100,
        }
        async with client(pair, org) as c:
            for what, data in cases.items():
                with pytest.raises(TransferClientError, match="400 reply_refused"):
                    await c.push(data)
                assert pair.public.query("SELECT count(*) FROM replies") == [(0,)], what


async def test_a_reply_bundle_must_be_signed_by_the_requesting_investigator(
    org: DemoOrg,
) -> None:
    second, second_credential = add_investigator(org, "Second")
    async with servers(org) as pair:
        await submit(pair, "reply to me", [])
        item = (await pull_bundle(pair, org)).manifest.items[0]
        by_first = reply_bundle(org, item, "from the first investigator")
        async with client(pair, org, second_credential.signing_key) as c:
            with pytest.raises(TransferClientError, match="reply_refused"):
                await c.push(by_first)
            # signed with the transfer credential instead of the offline key: refused too
            fake = InvestigatorSecrets(second.label, second.identity,
                                       second_credential.signing_key)
            with pytest.raises(TransferClientError, match="reply_refused"):
                await c.push(reply_bundle(org, item, "x", signer=fake))
            assert len((await c.push(reply_bundle(org, item, "ok", signer=second)))["stored"]) == 1


async def test_a_transfer_bundle_pushed_as_a_reply_is_refused(org: DemoOrg) -> None:
    async with servers(org) as pair:
        await submit(pair, "x", [])
        out = io.BytesIO()
        async with client(pair, org) as c:
            await c.pull(out)
            with pytest.raises(TransferClientError, match="reply_refused"):
                await c.push(out.getvalue())


async def test_ack_ids_come_only_from_a_bundle_that_verifies(
    org: DemoOrg, tmp_path: Path
) -> None:
    keyring, org_pub = org.root / "org" / "keyring.json", org.root / "org" / "org.pub"
    async with servers(org) as pair:
        await submit(pair, "one", [("f.bin", b"F" * 5000, "application/x-f")])
        out = io.BytesIO()
        async with client(pair, org) as c:
            await c.pull(out)
        path = tmp_path / "b.tar"
        path.write_bytes(out.getvalue())
        bundle = read_bundle(io.BytesIO(out.getvalue()),
                             transfer_key_lookup(keyring_of(org).transfer_verify_key))
        assert isinstance(bundle.manifest, TransferManifest)
        wanted = [bundle.manifest.items[0].submission_id]
        assert verified_submission_ids(path, keyring, org_pub) == wanted
        with pytest.raises(ValueError, match="--keyring FILE and --org-pub FILE"):
            verified_submission_ids(path, None, org_pub)
        # a damaged file (not the manifest) or a cut-off bundle acknowledges nothing
        damaged = bytearray(out.getvalue())
        damaged[len(damaged) // 2] ^= 1
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=r"SHA-256|does not match"):
            verified_submission_ids(path, keyring, org_pub)
        path.write_bytes(out.getvalue()[: len(out.getvalue()) // 2])
        with pytest.raises(ValueError, match=r"ends|truncated|short"):
            verified_submission_ids(path, keyring, org_pub)
        # a manifest signed by another key (a forged bundle) is refused
        forged = io.BytesIO()
        write_bundle(forged, dataclasses.replace(bundle.manifest, items=()), [],
                     SigningKey.generate())
        path.write_bytes(forged.getvalue())
        with pytest.raises(ValueError, match=r"signature|manifest\.sig"):
            verified_submission_ids(path, keyring, org_pub)


# --- configuration --------------------------------------------------------------------------


def test_the_transfer_app_refuses_an_unpinned_or_wrong_key(org: DemoOrg) -> None:
    config = load_config(org.config_path)
    ring = keyring_of(org)
    other = SigningKey.generate()
    (org.root / "org" / "keyring.json").write_bytes(
        sign_keyring(ring.with_transfer_key(other.verify_key), org.org_signing_key)
    )
    with pytest.raises(ConfigError, match="different transfer key"):
        create_transfer_app(config)


def test_the_transfer_app_needs_its_own_listener(org: DemoOrg) -> None:
    config = load_config(org.config_path)
    same = dataclasses.replace(
        config, transfer=dataclasses.replace(config.transfer, listen=Listen("127.0.0.1", 8080)),
        server=dataclasses.replace(config.server, listen=Listen("127.0.0.1", 8080)),
    )
    with pytest.raises(ConfigError, match="never the public"):
        create_transfer_app(same)
    unset = dataclasses.replace(config, transfer=dataclasses.replace(config.transfer, listen=None))
    with pytest.raises(ConfigError, match="listen is not set"):
        create_transfer_app(unset)


def test_the_client_never_leaves_loopback_without_tor() -> None:
    key = SigningKey.generate()
    for url in ("http://example.org", "http://abc.onion", "http://10.0.0.1:80"):
        with pytest.raises(ValueError, match="--socks"):
            TransferClient(url, key)
    with pytest.raises(ValueError, match="http://"):
        TransferClient("https://127.0.0.1:1", key)
    TransferClient("http://abc.onion", key, socks="127.0.0.1:9050")  # fine through tor


# --- through tor: a client-authorized onion and the real CLI on tor's SOCKS port -------------


async def _amanat(*args: object) -> tuple[int, str]:
    # asyncio's subprocess: the transfer app serving this test runs on the same event loop
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dropbox.cli", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.tor
async def test_pull_and_ack_through_a_client_authorized_onion(
    org: DemoOrg, tmp_path: Path, service_tor: Any, tor_network: Any
) -> None:
    from tornet import retry

    from onion.client_auth import ClientKeyPair, auth_private_line
    from onion.services import ServiceSpec, publish, unpublish

    pair_keys = ClientKeyPair.generate()
    key_file = tor_network.client_auth_dir / "amanat-transfer-test.auth_private"
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(org.passphrase + "\n")
    async with servers(org) as pair:
        await submit(pair, "carried over tor", [("a.txt", b"through the onion", "text/plain")])
        spec = ServiceSpec("transfer", tmp_path / "transfer-onion.key",
                           f"127.0.0.1:{urlsplit(pair.url).port}",
                           client_keys={"workstation": pair_keys.public})
        onion = await publish(service_tor, spec)
        key_file.write_text(auth_private_line(onion.address, pair_keys.private) + "\n")
        key_file.chmod(0o600)
        client_tor = await tor_network.connect_client()
        await client_tor.reload()
        common = ["--url", f"http://{onion.onion}", "--socks",
                  f"127.0.0.1:{tor_network.socks_port}", "--credential", org.credential_path,
                  "--passphrase-file", passphrase]
        bundle = tmp_path / "over-tor.tar"
        try:
            async def pull() -> None:
                code, out = await _amanat("transfer", "pull", *common, "--out", bundle)
                assert code == 0, out

            await retry(pull, timeout=60, what="pulling through the transfer onion")
            ids = verified_submission_ids(bundle, org.root / "org" / "keyring.json",
                                          org.root / "org" / "org.pub")
            assert len(ids) == 1
            code, out = await _amanat("transfer", "ack", *common, "--bundle", bundle,
                                      "--keyring", org.root / "org" / "keyring.json",
                                      "--org-pub", org.root / "org" / "org.pub")
            assert code == 0, out
            assert "acknowledged 1" in out
            assert pair.public.query("SELECT count(*) FROM ciphertexts") == [(0,)]
        finally:
            await client_tor.close()
            key_file.unlink(missing_ok=True)
            await unpublish(service_tor, onion.address)


# --- the online workstation: the transfer credential alone ---------------------------------


async def test_the_online_workstation_needs_only_the_transfer_credential(
    org: DemoOrg, tmp_path: Path
) -> None:
    """A workstation folder holding the credential, its passphrase and the public keyring:
    status, pull, ack --bundle and push all work, and nothing there can open a testimony."""
    import shutil

    work = tmp_path / "online"
    work.mkdir()
    credential = work / "transfer.cred"
    shutil.copy(org.credential_path, credential)
    passphrase = work / "passphrase"
    passphrase.write_text(org.passphrase + "\n")
    for name in ("keyring.json", "org.pub"):
        shutil.copy(org.root / "org" / name, work / name)
    for path in work.iterdir():  # no age identity anywhere on this machine
        assert b"AGE-SECRET-KEY" not in path.read_bytes().upper()
    async with servers(org) as pair:
        await submit(pair, "via the credential", [("a.txt", b"attached", "text/plain")])
        common = ["--url", pair.url, "--credential", credential, "--passphrase-file", passphrase]
        code, out = await _amanat("transfer", "status", *common, "--json")
        assert code == 0, out
        status = json.loads(out)
        assert status["waiting"]["submissions"] == 1
        assert status["waiting"]["files"] >= 2
        assert status["acknowledged_by_me"] == 0
        bundle = work / "in.tar"
        code, out = await _amanat("transfer", "pull", *common, "--out", bundle)
        assert code == 0, out
        code, out = await _amanat("transfer", "ack", *common, "--bundle", bundle,
                                  "--keyring", work / "keyring.json", "--org-pub", work / "org.pub")
        assert code == 0, out
        assert "acknowledged 1" in out
        assert pair.public.query("SELECT count(*) FROM submissions") == [(0,)]
        with bundle.open("rb") as src:
            item = read_bundle(
                src, transfer_key_lookup(keyring_of(org).transfer_verify_key)
            ).manifest.items[0]
        outbox = work / "outbox"
        outbox.mkdir()
        (outbox / "reply-1.tar").write_bytes(reply_bundle(org, item, "made offline"))
        code, out = await _amanat("transfer", "push", *common, outbox)
        assert code == 0, out
        assert "stored 1" in out
        code, out = await _amanat("transfer", "status", *common)
        assert code == 0, out
        assert "replies waiting for their sources: 1" in out


async def test_the_identity_file_is_refused_on_the_online_workstation(
    org: DemoOrg, tmp_path: Path
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(org.passphrase + "\n")
    plain = tmp_path / "decrypted-identity.txt"  # someone "helpfully" decrypted it
    from keys.identity_file import format_identity

    plain.write_text(format_identity(org.investigator))
    async with servers(org) as pair:
        await submit(pair, "never opened online", [])
        base = ["transfer", "pull", "--url", pair.url, "--passphrase-file", passphrase]
        for option, path in (("--identity", org.identity_path),
                             ("--credential", org.identity_path),
                             ("--credential", plain)):
            out_file = tmp_path / "never.tar"
            code, out = await _amanat(*base, option, path, "--out", out_file)
            assert code == 1, out
            assert "age" in out
            assert "review workstation" in out or "never be on an online machine" in out
            assert "AGE-SECRET-KEY" not in out.upper()
            assert not out_file.exists()
        code, out = await _amanat(*base[:4], "--out", tmp_path / "x.tar")
        assert code == 1
        assert "--credential FILE" in out
        assert pair.public.query("SELECT count(*) FROM acknowledgements") == [(0,)]


# --- server-side commands ---------------------------------------------------------------------


def test_init_key_writes_a_private_key_once_and_prints_its_public_half(
    org: DemoOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropbox.cli import main

    config = org.config_path.read_text().replace('signing_key = "transfer.key"',
                                                 'signing_key = "keys/new-transfer.key"')
    org.config_path.write_text(config)
    assert main(["transfer", "init-key", "--config", str(org.config_path)]) == 0
    path = org.root / "keys" / "new-transfer.key"
    assert path.stat().st_mode & 0o777 == 0o600
    key = transfer.parse_transfer_key(path.read_bytes(), str(path))
    printed = capsys.readouterr().out
    assert f"pin-transfer-key --dir ORG-DIR --key {encode_key(key.verify_key)}" in printed
    assert main(["transfer", "init-key", "--config", str(org.config_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert transfer.parse_transfer_key(path.read_bytes(), str(path)) == key
    # until the organization pins it, the server refuses to export with it
    with pytest.raises(ConfigError, match="different transfer key"):
        create_transfer_app(load_config(org.config_path))


def test_export_never_overwrites_and_leaves_nothing_on_failure(
    org: DemoOrg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropbox.cli import main

    out = tmp_path / "bundle.tar"
    assert main(["export", "--config", str(org.config_path), "--out", str(out)]) == 0
    assert "exported 0 submission(s)" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["export", "--config", str(org.config_path), "--out", str(out)]) == 1
    assert out.read_bytes() == first
    (org.root / "transfer.key").write_text("garbage\n")
    other = tmp_path / "other.tar"
    assert main(["export", "--config", str(org.config_path), "--out", str(other)]) == 1
    assert "not a transfer signing key" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("tar")) == ["bundle.tar"]


# --- streaming: damage on disk and clients that go away -----------------------------------------


async def test_a_ciphertext_damaged_on_disk_breaks_the_pull_instead_of_passing(
    org: DemoOrg, tmp_path: Path
) -> None:
    async with servers(org) as pair:
        await submit(pair, "will be damaged", [("f.bin", b"x" * 200_000, "application/x-f")])
        name = pair.public.query("SELECT name FROM ciphertexts WHERE kind = 'file'")[0][0]
        path = pair.public.state.store.path(name)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
        async with client(pair, org) as c:
            with pytest.raises(TransferClientError, match=r"broke off|incomplete"):
                await c.pull(io.BytesIO())
        # the CLI leaves no partial bundle behind
        work = tmp_path / "workstation"
        work.mkdir()
        passphrase = work / "pass"
        passphrase.write_text(org.passphrase)
        out = work / "b.tar"
        code, text = await _amanat("transfer", "pull", "--url", pair.url, "--credential",
                                   org.credential_path, "--passphrase-file", passphrase,
                                   "--out", out)
        assert code == 1, text
        assert "broke off" in text or "incomplete" in text
        assert list(work.iterdir()) == [passphrase]


async def test_a_client_that_goes_away_stops_the_bundle_writer() -> None:
    from dropbox.transfer_api import stream_from_thread

    finished = asyncio.Event()
    written = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1 << 30
        await response.prepare(request)
        loop = asyncio.get_running_loop()

        def produce(out: Any) -> None:
            nonlocal written
            try:
                for _ in range(1 << 14):  # 1 GiB in 64 KiB writes, far more than any buffer
                    out.write(b"\0" * 65536)
                    written += 65536
            finally:
                loop.call_soon_threadsafe(finished.set)

        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await stream_from_thread(response, produce)
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner, url = await start_site(app, Listen("127.0.0.1", 0))
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/") as response:
            await response.content.readexactly(1 << 20)
        await asyncio.wait_for(finished.wait(), 10)
        assert written < 64 << 20  # stopped long before the end
    finally:
        await runner.cleanup()


async def test_a_rolled_back_keyring_stops_the_transfer_api(org: DemoOrg) -> None:
    keyring_file = org.root / "org" / "keyring.json"
    old = keyring_file.read_bytes()
    async with servers(org) as pair:
        keyring_file.write_bytes(sign_keyring(keyring_of(org).bumped(), org.org_signing_key))
        await pull_bundle(pair, org)  # the newer keyring is accepted and remembered
        keyring_file.write_bytes(old)  # an attacker restores the older one
        async with client(pair, org) as c:
            with pytest.raises(TransferClientError, match="503 keyring_unusable"):
                await c.pull(io.BytesIO())


def test_serve_refuses_an_unpinned_transfer_key_before_listening(
    org: DemoOrg, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropbox.cli import main

    ring = keyring_of(org).with_transfer_key(SigningKey.generate().verify_key)
    (org.root / "org" / "keyring.json").write_bytes(sign_keyring(ring, org.org_signing_key))
    assert main(["serve", "--config", str(org.config_path)]) == 1
    captured = capsys.readouterr()
    assert "different transfer key" in captured.err
    assert "serving on" not in captured.out


def test_an_onion_for_a_transfer_listener_on_port_0_gets_the_bound_port(org: DemoOrg) -> None:
    from dropbox.serve_cli import _with_bound_transfer_port

    config = load_config(org.config_path)
    assert config.transfer.listen == Listen("127.0.0.1", 0)
    bound = _with_bound_transfer_port(config, "http://127.0.0.1:43210")
    assert bound.transfer.listen == Listen("127.0.0.1", 43210)
    assert _with_bound_transfer_port(bound, "http://127.0.0.1:1") == bound
