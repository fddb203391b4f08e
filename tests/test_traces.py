"""Issue 10, section 5: a seized disk shows days, never moments, and nothing of what was purged.

The real `amanat serve` runs in a subprocess with its stderr captured. A source submits twice;
another upload is dropped half-way (common over Tor); malformed requests arrive; investigators
acknowledge one submission, which (retention 0) purges it. Then:

- every file and folder of the ciphertext store has access and modification times at a midnight
  UTC (change times cannot be set: the daily maintenance collapses them, tests/test_store.py);
- no file under the data folder (the database, its WAL and shm, the store) holds the purged
  submission's id or its ciphertexts' names or hashes, while the kept one is still found;
- the server wrote nothing to stderr: no traceback, no request line, no client bytes, nothing
  the journal would stamp with the moment.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from server_process import (
    MIB,
    ServerProcess,
    make_org,
    new_source,
    repeating,
    running,
    upload,
    wait_until,
    walk_quietly,
)

from workstation.client import TransferClient

MALFORMED = [
    b"BAD(METHOD / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS ClientHello
    b"POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nboom\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /\x00\x01secret-bytes HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo",  # the client goes away in the middle of its headers
]


async def send_raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    if data.endswith(b"Ho"):
        writer.close()
        return b""
    try:
        return await asyncio.wait_for(reader.read(), timeout=20)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


def files_holding(root: Path, needles: list[str]) -> dict[str, list[str]]:
    found = {}
    for path in walk_quietly(root):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def finer_than_a_day(root: Path) -> list[str]:
    odd = []
    for path in walk_quietly(root):
        st = os.stat(path, follow_symlinks=False)
        for what, ns in (("mtime", st.st_mtime_ns), ("atime", st.st_atime_ns)):
            if ns % (86400 * 10**9):
                odd.append(f"{path.relative_to(root)} {what}")
    return odd


async def a_session_an_attacker_and_a_purge(server: ServerProcess) -> tuple[list[str], str]:
    """Two submissions, a dropped upload, malformed requests; one submission purged. Returns
    what the purge must have erased (the id, its ciphertexts' names and hashes) and the kept id."""
    source = await new_source(server.url)
    for message in (b"first testimony", b"second testimony"):
        done = await upload(source, message, "photo.jpg", repeating(b"p" * 4096, MIB), MIB)
        assert done.status == 200, done.body[:2000]
    dropped = await upload(source, b"lost", "big.bin", repeating(b"b" * 65536, 16 * MIB),
                           16 * MIB, drop_after=3 * MIB)
    assert dropped.status is None
    # listed quietly: server.partials() would itself set the folder's access time to now
    assert await wait_until(lambda: walk_quietly(server.store_dir / "tmp")[1:] == [])
    for data in MALFORMED:
        answer = await send_raw(server.url, data)
        assert b"aiohttp" not in answer
        assert b"secret-bytes" not in answer
    purged, kept = server.submission_ids()  # random ids: which one is which does not matter
    marks = [purged]
    for name, digest in server.query(
            "SELECT name, sha256 FROM ciphertexts WHERE submission_id = ?", purged):
        marks += [name.removesuffix(".age"), digest]
    async with TransferClient(server.transfer_url, server.org.credential.signing_key) as c:
        answer = await c.ack([purged])
    assert answer["acknowledged"] == [purged]
    assert answer["deleted"] == len(marks) // 2 >= 2
    return marks, kept


async def test_a_seized_disk_shows_days_and_nothing_purged(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", transfer={"retention_days": 0})
    server_tmp = tmp_path / "server-tmp"
    server_tmp.mkdir()
    with running(org, server_tmp) as server:
        assert server.transfer_url
        marks, kept = await a_session_an_attacker_and_a_purge(server)
        assert finer_than_a_day(server.store_dir) == []
        assert files_holding(server.data_dir, marks) == {}
        # the same search does find what was kept
        assert files_holding(server.data_dir, [kept])
        assert server.stop() == 0
    log = server.log.read_text("utf-8", "replace")
    assert log == "", log


async def test_the_daily_maintenance_runs_at_startup(running_server) -> None:
    """Started, the service truncates the WAL its migrations wrote and sets the database files,
    their folder and the store back to their day (then again at every midnight UTC)."""
    async with running_server() as server:
        files = [server.database_path, *(server.database_path.with_name(
            server.database_path.name + suffix) for suffix in ("-wal", "-shm"))]

        def done() -> bool:
            times = [os.stat(p) for p in [*files, server.data_dir]]
            return (files[1].stat().st_size == 0
                    and all(t.st_mtime_ns % (86400 * 10**9) == 0 for t in times))

        assert await wait_until(done), [(p.name, os.stat(p).st_mtime_ns) for p in files]
        assert finer_than_a_day(server.store_dir) == []
