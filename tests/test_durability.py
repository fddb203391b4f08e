"""Durability end to end (issue 3): the real server in a subprocess, real sockets, real files.

- a connection dropped mid-upload leaves no row and no file;
- `kill -9` mid-upload, then a restart: every earlier acknowledged submission still decrypts,
  nothing partial is listed, the leftovers are swept;
- a full disk (a real, small tmpfs): an upload that cannot fit is refused with 507 before it is
  read when Content-Length tells, and aborted cleanly mid-stream when it does not; earlier
  submissions stay intact and the service keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import (
    MIB,
    ServerProcess,
    SourceSession,
    log_in,
    make_org,
    new_source,
    polling,
    repeating,
    running,
    upload,
    wait_until,
)

from dropbox import db

BLOCK = os.urandom(MIB)


async def submit_small(
    source: SourceSession, message: bytes, filename: str, content: bytes
) -> None:
    result = await upload(source, message, filename, [content], len(content))
    assert result.status == 200, result.body[-2000:]
    assert b'id="submitted"' in result.body


def check_submission(
    server: ServerProcess, submission_id: str, message: bytes, content: bytes, filename: str
) -> None:
    """Every ciphertext of the submission decrypts with the investigator's identity to what the
    source sent, and the manifest describes it."""
    found = dict(server.ciphertexts(submission_id))
    assert set(found) == {"message", "file", "manifest"}
    assert server.decrypt(found["message"]) == message
    assert server.decrypt(found["file"]) == content
    manifest = json.loads(server.decrypt(found["manifest"]))
    [described] = manifest["files"]
    assert described["filename"] == filename
    assert described["sha256"] == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_connection_dropped_mid_upload_leaves_no_row_and_no_file(
    tmp_path: Path, chunked: bool
) -> None:
    org = make_org(tmp_path / "org")
    with running(org, tmp_path / "server-tmp") as server:
        source = await new_source(server.url)
        seen_partials: list[int] = []
        async with polling(0.01, lambda: seen_partials.append(len(server.partials()))):
            result = await upload(
                source,
                b"half a testimony",
                "half.bin",
                repeating(BLOCK, 40 * MIB),
                40 * MIB,
                chunked=chunked,
                drop_after=16 * MIB,
            )
        assert result.status is None
        assert result.sent == 16 * MIB
        assert max(seen_partials) >= 1, "the upload never reached the store"

        assert await wait_until(lambda: not server.partials()), server.partials()
        assert server.objects() == []
        assert server.submission_ids() == []

        # The server is unharmed: the same source submits right after.
        await submit_small(source, b"second try", "ok.txt", b"complete")
        assert len(server.submission_ids()) == 1


async def test_kill_9_mid_upload_then_restart_keeps_every_acknowledged_submission(
    tmp_path: Path,
) -> None:
    org = make_org(tmp_path / "org")
    sent = {f"doc{i}.txt": (f"testimony {i}".encode(), os.urandom(300_000 + i)) for i in range(3)}
    with running(org, tmp_path / "server-tmp") as server:
        source = await new_source(server.url)
        for filename, (message, content) in sent.items():
            await submit_small(source, message, filename, content)
        acknowledged = server.submission_ids()
        assert len(acknowledged) == 3

        killed = False

        def kill_when_partials_exist(sent_bytes: int) -> None:
            nonlocal killed
            if not killed and sent_bytes > 48 * MIB and server.partials():
                server.kill()  # SIGKILL: no handler, no finally, no atexit runs
                killed = True

        result = await upload(
            source,
            b"never acknowledged",
            "big.bin",
            repeating(BLOCK, 400 * MIB),
            400 * MIB,
            on_sent=kill_when_partials_exist,
        )
        assert killed, "the server was not killed mid-upload"
        assert result.status is None
        leftovers = server.partials()
        assert leftovers, "the kill left no partial file: nothing to sweep"

        server.start()  # the same data folder, as systemd would restart it
        source = await log_in(server.url, source.codename)  # sessions lived in memory only

        assert server.partials() == []
        assert server.submission_ids() == acknowledged
        by_message = {}
        for submission_id in acknowledged:
            found = dict(server.ciphertexts(submission_id))
            by_message[server.decrypt(found["message"])] = submission_id
        for filename, (message, content) in sent.items():
            check_submission(server, by_message[message], message, content, filename)

        # What an export would list: exactly the acknowledged submissions, every file present.
        engine, sessions = db.create_engine_and_sessionmaker(
            f"sqlite+aiosqlite:///{server.database}"
        )
        async with sessions() as session:
            listed = await db.list_unacknowledged(session)
        await engine.dispose()
        assert sorted(s.id for s in listed) == sorted(acknowledged)
        names = {c.name for s in listed for c in s.ciphertexts}
        assert names == {p.name for p in server.objects()}

        await submit_small(source, b"after the restart", "later.txt", b"still here")
        assert len(server.submission_ids()) == 4


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An organization whose ciphertext store is a real 32 MiB tmpfs."""
    org_root = tmp_path / "org"
    store = org_root / "data" / "store"
    store.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(store)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield org_root, store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


async def test_a_full_disk_refuses_cleanly_and_keeps_serving(
    small_store: tuple[Path, Path], tmp_path: Path
) -> None:
    org_root, store = small_store
    org = make_org(org_root, storage={"reserve_bytes": 4 * MIB})
    with running(org, tmp_path / "server-tmp") as server:
        source = await new_source(server.url)
        earlier = (b"before the disk filled", os.urandom(2 * MIB))
        await submit_small(source, earlier[0], "earlier.bin", earlier[1])
        [earlier_id] = server.submission_ids()

        # Content-Length says it cannot fit: 507 before the body is read.
        seen: list[int] = []
        async with polling(0.005, lambda: seen.append(len(server.partials()))):
            told = await upload(source, b"too big", "big.bin", repeating(BLOCK, 64 * MIB), 64 * MIB)
        assert told.status == 507, told.body[-2000:]
        assert b"full" in told.body
        assert not told.finished_sending
        assert max(seen) == 0, "the refused upload was written to the store"

        # No length: the upload streams until the reserve is reached, then stops cleanly.
        seen.clear()
        async with polling(0.005, lambda: seen.append(len(server.partials()))):
            streamed = await upload(
                source, b"too big", "big.bin", repeating(BLOCK, 64 * MIB), None, chunked=True
            )
        assert streamed.status == 507, streamed.body[-2000:]
        assert max(seen) >= 1, "the chunked upload never reached the store"
        assert streamed.sent > 16 * MIB  # it was read well into the stream, then refused

        assert await wait_until(lambda: not server.partials())
        assert server.submission_ids() == [earlier_id]
        check_submission(server, earlier_id, earlier[0], earlier[1], "earlier.bin")
        statvfs = os.statvfs(store)
        assert statvfs.f_bavail * statvfs.f_frsize > 28 * MIB  # the aborted bytes were freed

        # The service keeps serving: pages and a submission that fits.
        await submit_small(source, b"small enough", "small.txt", b"fits")
        assert len(server.submission_ids()) == 2
