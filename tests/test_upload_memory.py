"""Memory per open upload (issue 15, section 3, "Held under Tor-speed load"), on a real server
process: at Tor speed an upload stays open for minutes, so what each one holds is what caps a
node. 150 sources send a file slowly at once; with every file's last byte in and every upload
still open (the closing boundary held back), the server's RSS has grown by less than 256 KiB
per open upload. Before issue 15 each one held its whole ciphertext up to 1 MiB (store buffers),
so these 330 KB files cost about 380 KiB each; now about 110 KiB. The side-by-side figures,
with 400 uploads of 1 MB and the landing page's latency meanwhile, are in
bench/bench_slow_uploads.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from server_process import MIB, make_org, new_sources, repeating, running, upload

pytestmark = pytest.mark.slow

KIB = 1024
UPLOADS = 150
FILE_BYTES = 5 * 64 * KIB + 1000  # five age chunks and a bit: the store would hold them all
RATE = 40_000  # bytes a second, in pieces of 4 KB: a slow source
PIECE = 4000
BUDGET = 256 * KIB


async def test_150_slow_uploads_hold_less_than_256_kib_each(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", limits={"max_concurrent_uploads": UPLOADS + 1,
                                             "max_files": 2})
    content = bytes(range(256)) * (PIECE // 256) + b"x" * (PIECE % 256)
    expected = hashlib.sha256(b"".join(repeating(content, FILE_BYTES))).hexdigest()
    with running(org, tmp_path / "tmp") as server:
        people = await new_sources(server.url, UPLOADS + 1)
        warm = await upload(people[-1], b"warm-up", "warm.bin", [b"w" * FILE_BYTES], FILE_BYTES)
        assert warm.status == 200, warm.body[-500:]
        await asyncio.sleep(1)  # the last upload done, the heap is trimmed
        before = server.memory()["VmRSS"]
        all_in, release = asyncio.Event(), asyncio.Event()
        waiting = 0

        async def hold_the_boundary() -> None:
            nonlocal waiting
            waiting += 1
            if waiting == UPLOADS:
                all_in.set()
            await release.wait()

        sending = asyncio.gather(*(
            upload(source, b"", "slow.bin", repeating(content, FILE_BYTES), FILE_BYTES,
                   rate=RATE, before_tail=hold_the_boundary)
            for source in people[:UPLOADS]))
        try:
            await asyncio.wait_for(all_in.wait(), 300)
            # What was sent is read within moments; the most of a few samples is taken.
            samples = []
            for _ in range(5):
                await asyncio.sleep(0.4)
                samples.append(server.memory()["VmRSS"])
        finally:
            release.set()
            results = await sending
        grown = max(samples) - before
        assert grown / UPLOADS < BUDGET, (
            f"{grown / UPLOADS / KIB:.0f} KiB per open upload "
            f"(RSS {before / MIB:.0f} -> {max(samples) / MIB:.0f} MiB)")
        assert [r.status for r in results] == [200] * UPLOADS
        stored = [dict(server.ciphertexts(sid)) for sid in server.submission_ids()]
        slow = [kinds["file"] for kinds in stored if "message" not in kinds]  # not the warm-up
        assert len(stored) == UPLOADS + 1
        assert [hashlib.sha256(server.decrypt(name)).hexdigest() for name in slow] == \
            [expected] * UPLOADS
