"""The intake's bounds, in process over real sockets: the message streams into its encryptor
and is stored whole however long it is, every part counts against the limits (empty ones too),
uploads are capped per session, and a refused questionnaire never shows a message cut short."""

from __future__ import annotations

import asyncio
import io
import re
from html import unescape
from typing import Any

import pytest
from conftest import SourceClient

from dropbox.intake import MESSAGE_ECHO_BYTES
from dropbox.load import UploadSlots
from keys.errors import BusyError


async def test_a_long_message_is_stored_whole(running_server: Any) -> None:
    message = ("شب آمدند. " * 170_000).encode()[: 3 * 1024 * 1024]  # cut inside a character
    async with running_server() as server, SourceClient(server.url) as source:
        await source.start()
        status, page = await post_multipart(source, message=message)
        assert status == 200, page[-300:]
        (submission, _), = server.submissions()
        (name,) = server.ciphertexts(submission)["message"]
        assert server.decrypt(name) == message


async def test_a_message_over_the_limit_is_refused_and_nothing_kept(running_server: Any) -> None:
    async with running_server(limits={"max_message_bytes": 100_000}) as server, \
            SourceClient(server.url) as source:
        await source.start()
        status, page = await source.submit("x" * 100_001)
        assert status == 413
        assert "The message is longer than" in page
        assert server.submissions() == []
        assert server.stored_files() == []


async def post_multipart(source: SourceClient, message: bytes = b"a message",
                         empty_files: int = 0) -> tuple[int, str]:
    """The submit form as a browser sends it, with `empty_files` file inputs left empty."""
    await source.get("/submit")
    empty = (b'--B\r\nContent-Disposition: form-data; name="files"; filename=""\r\n'
             b"Content-Type: application/octet-stream\r\n\r\n\r\n")
    body = (b'--B\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            + source.csrf.encode() + b'\r\n--B\r\nContent-Disposition: form-data; '
            b'name="message"\r\n\r\n' + message + b"\r\n" + empty * empty_files + b"--B--\r\n")
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    async with source.http.post(source.url + "/submit", data=io.BytesIO(body),
                                headers=headers) as r:
        return r.status, source._remember(await r.text())


async def test_empty_file_parts_count_against_max_files(running_server: Any) -> None:
    async with running_server(limits={"max_files": 3}) as server, \
            SourceClient(server.url) as source:
        await source.start()
        status, page = await post_multipart(source, empty_files=3)
        assert status == 200, page  # three file inputs left empty are within max_files
        status, page = await post_multipart(source, empty_files=4)
        assert status == 413
        assert "at most 3 files" in page
        assert len(server.submissions()) == 1
        assert not [p for p in server.stored_files() if p.name.endswith(".partial")]


async def test_the_message_counts_against_max_fields(running_server: Any) -> None:
    async with running_server(limits={"max_fields": 2}) as server, \
            SourceClient(server.url) as source:
        await source.start()
        status, _page = await source.submit("a message", fields=[("q_city", "Quetta")])
        assert status == 200
        status, page = await source.submit("a message", fields=[("q_city", "Quetta"),
                                                                ("q_city", "Peshawar")])
        assert status == 413
        assert "more than 2 answers" in page


async def test_a_refused_questionnaire_shows_a_short_message_again_but_never_a_cut_one(
        running_server: Any) -> None:
    short = "They came at night."
    long = "They came at night. " * (MESSAGE_ECHO_BYTES // 10)
    async with running_server() as server, SourceClient(server.url) as source:
        await source.start()
        bad_date = [("q_when", "31/2/2024")]
        status, page = await source.submit(short, fields=bad_date)
        assert status == 400
        assert f">{short}</textarea>" in unescape(page)
        status, page = await source.submit(long, fields=bad_date)
        assert status == 400
        textarea = re.search(r'<textarea[^>]*name="message"[^>]*>([^<]*)</textarea>', page)
        assert textarea is not None
        assert textarea.group(1).strip() == ""
        assert server.submissions() == []


async def test_a_session_cannot_hold_more_uploads_than_its_cap(running_server: Any) -> None:
    limits = {"max_concurrent_uploads_per_session": 1}
    async with running_server(limits=limits) as server, SourceClient(server.url) as source:
        await source.start()
        await source.get("/submit")
        release = asyncio.Event()

        async def slow_body() -> Any:
            yield b"--B\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
            yield source.csrf.encode() + b"\r\n--B\r\nContent-Disposition: form-data; " \
                b"name=\"message\"\r\n\r\nhello"
            await release.wait()
            yield b"\r\n--B--\r\n"

        headers = {"Content-Type": "multipart/form-data; boundary=B"}
        first = asyncio.create_task(source.http.post(server.url + "/submit", data=slow_body(),
                                                     headers=headers))
        await asyncio.sleep(0.5)
        status, page = await source.submit("a second upload at once")
        assert status == 503
        assert "Many people are sending right now" in page
        release.set()
        async with await first as response:
            assert response.status == 200
        status, _page = await source.submit("and now another one")
        assert status == 200


def test_upload_slots_count_globally_and_per_session() -> None:
    slots = UploadSlots(total=2, per_session=1)
    with slots.take("a"), slots.take("b"):
        assert slots.active == 2
        for key in ("a", "c"):
            with pytest.raises(BusyError), slots.take(key):
                raise AssertionError("a third upload was let in")
    assert slots.active == 0
    with slots.take("a"):
        assert slots.active == 1


async def test_a_stalled_small_form_gets_408(running_server: Any) -> None:
    async with running_server(server={"body_idle_timeout_seconds": 1}) as server, \
            SourceClient(server.url) as source:
        await source.get("/login")
        port = int(server.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /login HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\ncsrf_token=")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
