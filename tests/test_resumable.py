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


# --- hostile clients ------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "", "1e9", "+5", "5 5", "99999999999999999999",
                                    "0x10", "5,5", "\xb2"])
async def test_garbage_upload_length_is_400(running_server, length):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            answer = await tus.request("POST", "/uploads",
                                       tus.headers(**{"Upload-Length": length}), length=0)
            assert answer.status == 400
            assert len(server.state.resumable) == 0


async def test_huge_upload_length_and_deferred_length_are_refused(running_server):
    async with running_server(limits={"max_file_bytes": 10_000}) as server:
        source, tus = await logged_in(server)
        async with source:
            assert (await tus.create(10_001)).status == 413
            assert (await tus.create(2**62)).status == 413
            deferred = await tus.request("POST", "/uploads",
                                         tus.headers(**{"Upload-Defer-Length": "1"}), length=0)
            assert deferred.status == 400
            with_body = await tus.request("POST", "/uploads",
                                          tus.headers(**{"Upload-Length": "5"}), [b"hello"],
                                          length=5)
            assert with_body.status == 400
            assert len(server.state.resumable) == 0
            assert server.stored_files() == []


async def test_upload_length_over_the_free_disk_is_507(running_server):
    async with running_server(storage={"reserve_bytes": 2**60}) as server:
        source, tus = await logged_in(server)
        async with source:
            assert (await tus.create(1000)).status == 507
            assert len(server.state.resumable) == 0


@pytest.mark.parametrize("metadata", ["a YQ==x", "filename !!!", "a b c", "a YQ,a YQ",
                                      "filename /w==", ",".join(["k YQ"] * 9)])
async def test_garbage_metadata_is_400(running_server, metadata):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            answer = await tus.request("POST", "/uploads", tus.headers(**{
                "Upload-Length": "5", "Upload-Metadata": metadata}), length=0)
            assert answer.status == 400


@pytest.mark.parametrize("offset", ["-1", "x", "", "1.0", "99999999999999999999"])
async def test_garbage_upload_offset_is_400(running_server, offset):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(100)).headers["location"]
            answer = await tus.patch(location, 0, [b"x" * 10], 10, **{"Upload-Offset": offset})
            assert answer.status == 400
            assert (await tus.head(location)).offset() == 0


async def test_a_body_past_upload_length_is_refused_and_keeps_the_upload(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(100)).headers["location"]
            assert (await tus.patch(location, 0, [b"x" * 101], 101)).status == 413
            # Chunked, so the server learns it only while reading: the read that goes past the
            # end is refused, what came before it is kept.
            answer = await tus.request(
                "PATCH", location,
                tus.headers(**{"Content-Type": "application/offset+octet-stream",
                               "Upload-Offset": "0", "Transfer-Encoding": "chunked"}),
                [b"40\r\n" + b"y" * 64 + b"\r\n", b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"])
            assert answer.status == 413
            kept = (await tus.head(location)).offset()
            assert kept in (0, 64)
            finished = await tus.patch(location, kept, [b"y" * (100 - kept)], 100 - kept)
            assert (finished.status, finished.offset()) == (204, 100)


async def test_a_flood_of_creations_is_bounded_per_session_and_in_all(running_server):
    limits = {"max_resumable_uploads": 6, "max_resumable_uploads_per_session": 2}
    async with running_server(limits=limits) as server:
        sources = [await logged_in(server) for _ in range(4)]
        try:
            flood = sources[0][1]
            answers = await asyncio.gather(*(flood.create(1000) for _ in range(50)))
            statuses = sorted(a.status or 0 for a in answers)
            assert statuses.count(201) == 2
            assert set(statuses) == {201, 503}
            assert all(a.headers["retry-after"] for a in answers if a.status == 503)
            for _, tus in sources[1:3]:
                assert [(await tus.create(1000)).status for _ in range(2)] == [201, 201]
            # The pool is full with uploads that are all fresh: none gives way, the next waits.
            assert len(server.state.resumable) == 6
            assert (await sources[3][1].create(1000)).status == 503
            # Once the oldest has been idle long enough, a newcomer takes its place.
            server.state.resumable._uploads[next(iter(server.state.resumable._uploads))] \
                .active -= 3600
            assert (await sources[3][1].create(1000)).status == 201
            assert len(server.state.resumable) == 6
            await asyncio.sleep(0.1)
            assert len(partials(server)) <= 6
        finally:
            for source, _ in sources:
                await source.http.close()


async def test_a_stalled_patch_is_cut_at_the_idle_deadline_and_keeps_its_bytes(running_server):
    async with running_server(server={"body_idle_timeout_seconds": 1}) as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(1000)).headers["location"]

            def stalling() -> list[bytes]:
                return [b"s" * 300]

            loop = asyncio.get_running_loop()
            started = loop.time()
            # 300 bytes of a promised 1000, then silence: the server answers 408 and closes.
            answer = await tus.request(
                "PATCH", location,
                tus.headers(**{"Content-Type": "application/offset+octet-stream",
                               "Upload-Offset": "0"}),
                stalling(), length=1000, timeout=20)
            assert answer.status == 408
            assert loop.time() - started < 15
            assert (await tus.head(location)).offset() == 300
            assert server.state.uploads.active == 0


async def test_a_new_request_takes_over_from_a_half_open_patch(running_server):
    """A circuit that died without a word leaves its PATCH waiting for bytes: the client's
    next request must not wait for the idle deadline."""
    async with running_server(server={"body_idle_timeout_seconds": 60}) as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(1000)).headers["location"]
            hanging = asyncio.create_task(tus.request(
                "PATCH", location,
                tus.headers(**{"Content-Type": "application/offset+octet-stream",
                               "Upload-Offset": "0"}),
                [b"h" * 200], length=1000, timeout=60))
            for _ in range(100):
                if server.state.resumable._uploads[upload_id(location)].offset == 200:
                    break
                await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            started = loop.time()
            head = await tus.head(location)
            assert (head.status, head.offset()) == (200, 200)
            assert loop.time() - started < 5
            assert (await hanging).status is None  # its connection was closed
            done = await tus.patch(location, 200, [b"h" * 800], 800)
            assert (done.status, done.offset()) == (204, 1000)


async def test_naming_someone_elses_or_an_unfinished_upload_keeps_nothing(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        other_source, other = await logged_in(server)
        async with source, other_source:
            theirs = (await other.create(3)).headers["location"]
            assert (await other.patch(theirs, 0, [b"abc"], 3)).status == 204
            mine = (await tus.create(10)).headers["location"]
            for named in (theirs, mine, "/uploads/" + "0" * 32, "/uploads/../../etc"):
                status, _ = await source.submit("x", fields=[("uploads", upload_id(named))])
                assert status == 400, named
            assert server.submissions() == []
            # The other source's finished upload is still theirs to send.
            status, _ = await other_source.submit("", fields=[("uploads", upload_id(theirs))])
            assert status == 200
        assert len(server.submissions()) == 1


async def test_only_the_submit_page_may_run_its_own_script(running_server):
    async with running_server() as server:
        source, _tus = await logged_in(server)
        async with source:
            async with source.http.get(server.url + "/") as landing:
                landing_csp = landing.headers["Content-Security-Policy"]
                assert "<script" not in await landing.text()
            async with source.http.get(server.url + "/submit") as submit:
                submit_csp = submit.headers["Content-Security-Policy"]
                page = await submit.text()
            async with source.http.get(server.url + "/static/resumable.js") as script:
                assert script.status == 200
                assert "javascript" in script.content_type
                body = await script.text()
    assert "script-src" not in landing_csp
    assert "connect-src" not in landing_csp
    assert "script-src 'self'; connect-src 'self'" in submit_csp
    assert "default-src 'none'" in submit_csp
    assert '<script src="/static/resumable.js" defer></script>' in page
    assert 'id="resumable" data-endpoint="/uploads"' in page
    # Without the script the page says what it always said; the script swaps the two.
    assert '<p id="resume-off">If the connection breaks, nothing is kept.' in page
    assert '<p id="resume-on" hidden>If the connection breaks, the upload continues' in page
    # Self-contained: no other origin, no import, no eval.
    for forbidden in ("http://", "https://", "import(", "eval(", "new Function"):
        assert forbidden not in body


async def test_a_refused_submission_gives_its_uploads_back(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            location = (await tus.create(6)).headers["location"]
            assert (await tus.patch(location, 0, [b"kept!!"], 6)).status == 204
            # A date that cannot exist: the page asks again, and nothing was stored...
            status, page = await source.submit("x", fields=[("q_when", "31/2/2024"),
                                                            ("uploads", upload_id(location))])
            assert status == 400
            assert 'id="q-errors"' in page
            assert server.submissions() == []
            # ...but the finished upload is still there to be named again.
            status, page = await source.submit("x", fields=[("uploads", upload_id(location))])
            assert status == 200, page
        [(submission, _)] = server.submissions()
        assert server.decrypt(server.ciphertexts(submission)["file"][0]) == b"kept!!"


async def test_logout_deletes_the_sessions_uploads(running_server):
    async with running_server() as server:
        source, tus = await logged_in(server)
        async with source:
            unfinished = (await tus.create(1000)).headers["location"]
            assert (await tus.patch(unfinished, 0, [b"u" * 500], 500)).status == 204
            finished = (await tus.create(3)).headers["location"]
            assert (await tus.patch(finished, 0, [b"abc"], 3)).status == 204
            await source.logout()
            await asyncio.sleep(0.1)
        assert len(server.state.resumable) == 0
        assert server.stored_files() == []
