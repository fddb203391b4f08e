"""Plaintext never reaches the disk, and a huge upload does not grow the server's memory.

The real server runs in a subprocess whose TMPDIR is an empty folder of its own: aiohttp's
`request.post()` would spool file fields there, and any library writing a temporary file would
show up in it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import MIB, make_org, new_source, polling, repeating, running, upload

CANARY = b"AMANAT-CANARY-" + secrets.token_hex(12).encode()
FILE_BYTES = 50 * MIB
# Where the canary goes inside the file: the start, across an age chunk boundary (64 KiB),
# across the server's read and write buffers (256 KiB, 1 MiB), the middle and the very end.
CANARY_OFFSETS = (0, 64 * 1024 - 7, 256 * 1024 - 3, MIB - 5, 25 * MIB + 1, FILE_BYTES - len(CANARY))


def canary_file(block: bytes) -> Iterator[bytes]:
    """FILE_BYTES of random-looking bytes with CANARY spliced in at CANARY_OFFSETS."""
    for start in range(0, FILE_BYTES, len(block)):
        piece = bytearray(block[: FILE_BYTES - start])
        end = start + len(piece)
        for offset in CANARY_OFFSETS:
            lo, hi = max(offset, start), min(offset + len(CANARY), end)
            if lo < hi:
                piece[lo - start : hi - start] = CANARY[lo - offset : hi - offset]
        yield bytes(piece)


def files_containing(roots: list[Path], needle: bytes) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


async def test_the_canary_never_reaches_the_disk_or_tmpdir(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org")
    server_tmp = tmp_path / "server-tmp"
    server_tmp.mkdir()
    block = os.urandom(MIB)
    assert CANARY not in block
    appeared: set[str] = set()
    with running(org, server_tmp) as server:
        source = await new_source(server.url)
        async with polling(0.005, lambda: appeared.update(os.listdir(server_tmp))):
            result = await upload(
                source,
                b"My testimony, with the canary " + CANARY + b" in the middle.",
                f"report-{CANARY.decode()}.pdf",
                canary_file(block),
                FILE_BYTES,
            )
        assert result.status == 200, result.body[-2000:]
        assert appeared == set(), f"files appeared in the server's TMPDIR: {appeared}"

        # Positive control: the canary really went in, and comes back out for the investigator.
        [submission_id] = server.submission_ids()
        found = dict(server.ciphertexts(submission_id))
        assert CANARY in server.decrypt(found["message"])
        assert server.decrypt(found["file"]).count(CANARY) == len(CANARY_OFFSETS)
        assert CANARY in server.decrypt(found["manifest"])  # the file name lives only in here

        # While the server runs: the store, the SQLite database, its WAL and -shm, the config
        # folder, the server's log, TMPDIR.
        sqlite_files = {p.name for p in server.data_dir.iterdir()}
        assert {"amanat.sqlite3", "amanat.sqlite3-wal"} <= sqlite_files
        assert files_containing([org.root, server_tmp], CANARY) == []
        assert server.stop() == 0

    # After a clean shutdown (the WAL is checkpointed into the database file).
    assert files_containing([org.root, server_tmp], CANARY) == []
    assert list(server_tmp.iterdir()) == []

    # The scan itself finds a canary where there is one.
    control = tmp_path / "control"
    control.mkdir()
    (control / "plain.bin").write_bytes(os.urandom(1000) + CANARY + os.urandom(1000))
    assert files_containing([control], CANARY) == [control / "plain.bin"]


@pytest.mark.slow
async def test_a_1_gib_upload_raises_the_servers_memory_by_less_than_64_mib(
    tmp_path: Path,
) -> None:
    org = make_org(tmp_path / "org")
    block = os.urandom(MIB)
    size = 1024 * MIB
    with running(org, tmp_path / "server-tmp") as server:
        source = await new_source(server.url)
        warm = await upload(source, b"warm-up", "warm.bin", repeating(block, 8 * MIB), 8 * MIB)
        assert warm.status == 200
        before = server.memory()["VmRSS"]

        result = await upload(source, b"big", "big.bin", repeating(block, size), size)

        after = server.memory()
        assert result.status == 200, result.body[-2000:]
        growth = after["VmHWM"] - before
        assert growth < 64 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"
        [big] = [
            name
            for sid in server.submission_ids()
            for kind, name in server.ciphertexts(sid)
            if kind == "file"
            and (server.store_dir / "objects" / name[:2] / name).stat().st_size > size
        ]
        assert big
