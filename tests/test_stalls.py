"""Slow, stalled and pointless requests are bounded (issue 10, section 4), on a real server
process: stalled connections are closed within the header deadline, the landing page answers
while 1,100 stalled connections are open under a 1,024 descriptor limit, 150 stalled message
uploads do not grow the server's memory, and 20,000 empty parts are refused for little CPU.
The figures side by side are in bench/bench_stalls.py."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from server_process import (
    HALF_HEADERS,
    MIB,
    ServerProcess,
    empty_parts_body,
    make_org,
    new_source,
    polling,
    post_body,
    running,
    stall,
    stall_flood,
    stalled_message_upload,
    upload,
    wait_until,
)

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def serving(tmp_path: Path, descriptors: int | None = None,
            **overrides: dict[str, object]) -> Iterator[ServerProcess]:
    org = make_org(tmp_path / "org", **overrides)

    def limit_descriptors() -> None:
        if descriptors is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    with running(org, tmp_path / "tmp", preexec=limit_descriptors) as server:
        yield server


async def landing_status(url: str, timeout: float) -> int:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as http, http.get(url + "/") as r:
        await r.read()
        return r.status


async def test_connections_that_never_finish_their_headers_are_closed_in_time(
        tmp_path: Path) -> None:
    with serving(tmp_path, server={"header_timeout_seconds": 2}) as server:
        opened = time.monotonic()
        idle = [await stall(server.url, b"") for _ in range(250)]
        half = [await stall(server.url, HALF_HEADERS) for _ in range(250)]
        closed = await asyncio.gather(*(c.closed_within(2 + 4) for c in idle + half))
        for connection in idle + half:
            connection.close()
        assert all(closed), f"{closed.count(False)} of 500 stalled connections still open"
        assert time.monotonic() - opened < 2 + 6
        # A connection that sends its request in time is served as before.
        assert await landing_status(server.url, 10) == 200


async def test_the_landing_page_answers_while_1100_stalled_connections_are_open(
        tmp_path: Path) -> None:
    """An attacker process keeps 1,100 connections open that never finish their headers
    (reopening each one the server closes) against a server limited to 1,024 descriptors."""
    with serving(tmp_path, descriptors=1024) as server, stall_flood(server.url, 1100) as flood:
        assert await wait_until(lambda: flood.counts()[1] >= 1100, timeout=60), flood.counts()
        made_before = flood.counts()[1]
        for _ in range(5):
            assert await landing_status(server.url, 10) == 200
        # The attack goes on: the server keeps closing stalled connections (more than it can
        # hold) and the attacker keeps opening new ones.
        assert await wait_until(lambda: flood.counts()[1] > made_before, timeout=30), (
            made_before, flood.counts())
        assert server.proc is not None
        assert server.proc.poll() is None
    log = server.log.read_text()
    assert "Too many open files" not in log
    assert log.count("shedding load: too many open connections") == 1


@pytest.mark.parametrize("sessions", [1, 30])
async def test_150_stalled_message_uploads_do_not_grow_memory(tmp_path: Path,
                                                             sessions: int) -> None:
    """From one session (its own cap refuses most) and from 30 (the global cap binds, and each
    accepted message streams into its encryptor instead of being held)."""
    with serving(tmp_path, server={"body_idle_timeout_seconds": 3}) as server:
        sources = [await new_source(server.url) for _ in range(sessions)]
        source = sources[0]
        baseline = server.memory()["VmRSS"]
        peak = baseline

        def sample() -> None:
            nonlocal peak
            peak = max(peak, server.memory()["VmRSS"])

        async with polling(0.05, sample):
            stalled = await asyncio.gather(*(
                stalled_message_upload(sources[i % sessions], 4 * MIB, 4 * MIB - 1024)
                for i in range(150)))
            closed = await asyncio.gather(*(c.closed_within(3 + 10 + 10) for c in stalled))
        for connection in stalled:
            connection.close()
        assert all(closed), "every stalled upload's connection is closed"
        await asyncio.sleep(1)
        after = server.memory()["VmRSS"]
        assert peak - baseline < 64 * MIB, (baseline, peak)
        assert after - baseline < 64 * MIB, (baseline, after)
        assert server.partials() == [], "nothing of a stalled upload stays in the store"
        assert server.submission_ids() == []
        # The source can still send once the stalled uploads are gone.
        result = await upload(source, b"afterwards", "a.txt", [b"x" * 1000], 1000)
        assert result.status == 200, result.body[-500:]
    assert server.log.read_text().count("shedding load: too many uploads") == 1


async def test_a_stalled_body_is_refused_after_the_idle_deadline(tmp_path: Path) -> None:
    with serving(tmp_path, server={"body_idle_timeout_seconds": 2}) as server:
        source = await new_source(server.url)
        stalled = await stalled_message_upload(source, 1 * MIB, 1000)
        started = time.monotonic()
        head = await asyncio.wait_for(stalled.reader.readuntil(b"\r\n\r\n"), 2 + 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - started < 2 + 5
        assert await stalled.closed_within(15)
        stalled.close()
        assert await wait_until(lambda: server.partials() == [])


async def test_20000_empty_parts_are_refused_for_little_cpu(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        source = await new_source(server.url)
        boundary = "amanatEmptyParts"
        body = empty_parts_body(source.csrf, 20_000, boundary)
        assert len(body) < 2_500_000
        before = server.cpu_seconds()
        status = await post_body(source, body, boundary)
        spent = server.cpu_seconds() - before
        assert status == 413
        assert spent < 0.5, f"{spent:.2f} s of CPU for 20,000 empty parts"
        assert server.partials() == []
        assert server.submission_ids() == []
