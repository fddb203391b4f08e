"""Resumable uploads (issue 12 §3): tus 1.0.0 on a real server over real sockets, hostile
clients, connections cut in the middle of PATCH bodies, expiry, and the files joining the form.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RunningServer, SourceClient
from tus_client import Tus, session_cookie

ONE_MIB = 1024 * 1024


async def logged_in(server: RunningServer) -> tuple[SourceClient, Tus]:
    source = SourceClient(server.url)
    await source.start()
    return source, Tus(server.url, session_cookie(source.http), source.csrf)


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def partials(server: RunningServer) -> list[Path]:
    return sorted((server.store_dir / "tmp").iterdir())


async def test_options_tells_version_extensions_and_max_size(running_server):
    async with running_server(limits={"max_file_bytes": 5000}) as server:
        tus = Tus(server.url, "", "")
        answer = await tus.options()
    assert answer.status == 204
    assert answer.headers["tus-version"] == "1.0.0"
    assert answer.headers["tus-resumable"] == "1.0.0"
    assert set(answer.headers["tus-extension"].split(",")) == {
        "creation", "expiration", "termination"}
    assert answer.headers["tus-max-size"] == "5000"


async def test_create_patch_head_and_submit(running_server):
    data = os.urandom(300_000)
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            created = await tus.create(len(data), filename="ص.pdf", filetype="application/pdf")
            assert created.status == 201
            assert created.headers["tus-resumable"] == "1.0.0"
            assert "upload-expires" in created.headers
            location = created.headers["location"]
            assert location.startswith("/uploads/")
            first = await tus.patch(location, 0, [data[:100_000]], 100_000)
            assert (first.status, first.offset()) == (204, 100_000)
            head = await tus.head(location)
            assert (head.status, head.offset()) == (200, 100_000)
            assert head.headers["upload-length"] == str(len(data))
            assert head.headers["cache-control"] == "no-store"
            rest = await tus.patch(location, 100_000, [data[100_000:]], len(data) - 100_000)
            assert (rest.status, rest.offset()) == (204, len(data))
            status, page = await source.submit("with an upload",
                                               fields=[("uploads", upload_id(location))])
        assert status == 200, page
        assert 'id="submitted"' in page
        [(submission, _)] = server.submissions()
        names = server.ciphertexts(submission)
        assert server.decrypt(names["file"][0]) == data
        manifest = json.loads(server.decrypt(names["manifest"][0]))
        [entry] = manifest["files"]
        assert (entry["filename"], entry["content_type"], entry["size"]) == (
            "ص.pdf", "application/pdf", len(data))
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert partials(server) == []
        # Submitted once: the upload now belongs to the submission and cannot be named again.
        assert (await tus.head(location)).status == 404


async def test_offset_mismatch_is_409_and_changes_nothing(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(1000)).headers["location"]
            assert (await tus.patch(location, 0, [b"a" * 400], 400)).status == 204
            assert (await tus.patch(location, 0, [b"b" * 400], 400)).status == 409
            assert (await tus.patch(location, 500, [b"b" * 100], 100)).status == 409
            assert (await tus.head(location)).offset() == 400


async def test_wrong_session_sees_404_and_missing_token_403(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        other_source, other = await logged_in(server)
        async with source, other_source:
            location = (await tus.create(1000)).headers["location"]
            for method in ("HEAD", "PATCH", "DELETE"):
                headers = other.headers(**{"Content-Type": "application/offset+octet-stream",
                                           "Upload-Offset": "0"})
                answer = await other.request(method, location, headers, [b"x" * 10], length=10)
                assert answer.status == 404, method
            no_token = Tus(server.url, tus.cookie, "")
            wrong_token = Tus(server.url, tus.cookie, other.csrf)
            no_cookie = Tus(server.url, "", tus.csrf)
            for client in (no_token, wrong_token, no_cookie):
                assert (await client.head(location)).status == 403
                assert (await client.create(10)).status == 403
                assert (await client.patch(location, 0, [b"x"], 1)).status == 403
                assert (await client.delete(location)).status == 403
            assert (await tus.head(location)).offset() == 0


async def test_version_and_content_type_are_checked(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(100)).headers["location"]
            old = await tus.request("HEAD", location, {**tus.headers(), "Tus-Resumable": "0.2.2"})
            assert old.status == 412
            assert old.headers["tus-version"] == "1.0.0"
            headers = tus.headers()
            del headers["Tus-Resumable"]
            assert (await tus.request("HEAD", location, headers)).status == 412
            wrong_type = await tus.patch(location, 0, [b"x" * 10], 10,
                                         **{"Content-Type": "application/octet-stream"})
            assert wrong_type.status == 415
            assert (await tus.head(location)).offset() == 0


async def test_termination_deletes_the_ciphertext(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(500_000)).headers["location"]
            assert (await tus.patch(location, 0, [os.urandom(300_000)], 300_000)).status == 204
            assert len(partials(server)) == 1
            assert (await tus.delete(location)).status == 204
            assert (await tus.head(location)).status == 404
            assert (await tus.patch(location, 300_000, [b"x"], 1)).status == 404
            assert partials(server) == []
            finished = (await tus.create(10)).headers["location"]
            assert (await tus.patch(finished, 0, [b"0123456789"], 10)).status == 204
            assert len(server.stored_files()) == 1
            assert (await tus.delete(finished)).status == 204
            assert server.stored_files() == []


async def test_expired_upload_is_gone_with_nothing_left_on_disk(running_server):
    async with running_server(limits={"resumable_expiry_seconds": 2}) as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(1_000_000)).headers["location"]
            assert (await tus.patch(location, 0, [os.urandom(200_000)], 200_000)).status == 204
            assert len(partials(server)) == 1
            # The periodic sweep (every quarter of the expiry) deletes it, untouched by anyone.
            for _ in range(100):
                if not server.stored_files():
                    break
                await asyncio.sleep(0.1)
            assert server.stored_files() == []
            assert len(server.state.resumable) == 0
            assert (await tus.head(location)).status == 404
            # A finished upload that no submission named within the expiry goes too.
            finished = (await tus.create(5)).headers["location"]
            assert (await tus.patch(finished, 0, [b"hello"], 5)).status == 204
            assert len(server.stored_files()) == 1
            for _ in range(100):
                if not server.stored_files():
                    break
                await asyncio.sleep(0.1)
            assert server.stored_files() == []
            status, _page = await source.submit("late", fields=[("uploads", upload_id(finished))])
            assert status == 400
        assert server.submissions() == []


@pytest.mark.skipif(shutil.which("age") is None, reason="the age binary is not installed")
async def test_cut_connections_resume_until_done_and_stock_age_decrypts(running_server,
                                                                       tmp_path):
    data = os.urandom(3 * ONE_MIB + 12345)
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            # Cut in the middle of PATCH bodies, at places that are and are not chunk-aligned.
            location, cut = await tus.upload(data, cuts=[700_001, 65_536, 1_000_000, 3, 131_072])
            assert cut == 5
            status, page = await source.submit("", fields=[("uploads", upload_id(location))])
        assert status == 200, page
        [(submission, _)] = server.submissions()
        name = server.ciphertexts(submission)["file"][0]
    identity = tmp_path / "identity.txt"
    identity.write_text(str(server.org.investigator.identity) + "\n")
    plain = subprocess.run(["age", "-d", "-i", str(identity), str(server.state.store.path(name))],
                           check=True, capture_output=True).stdout
    assert hashlib.sha256(plain).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_head_after_a_drop_reports_what_was_kept(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(ONE_MIB)).headers["location"]
            cut = await tus.patch(location, 0, [b"z" * ONE_MIB], ONE_MIB, cut_after=400_000)
            assert cut.status is None
            kept = (await tus.head(location)).offset()
            # Whatever the server held when the connection broke, and never more than was sent.
            assert 0 <= kept <= 400_000
            rest = await tus.patch(location, kept, [b"z" * (ONE_MIB - kept)], ONE_MIB - kept)
            assert (rest.status, rest.offset()) == (204, ONE_MIB)
