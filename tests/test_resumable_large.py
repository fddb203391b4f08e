"""A 1 GiB resumable upload, cut once in the middle, raises the server's memory by less than
64 MiB (issue 12 §3): the real server in a subprocess, measured from /proc."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from server_process import MIB, make_org, new_source, running
from tus_client import Tus

SIZE = 1024 * MIB


def stream(block: bytes, start: int, end: int) -> Iterator[bytes]:
    """Bytes start..end of `block` repeated forever, in pieces of at most one block."""
    position = start
    while position < end:
        inside = position % len(block)
        piece = block[inside : inside + min(len(block) - inside, end - position)]
        position += len(piece)
        yield piece


@pytest.mark.slow
async def test_a_1_gib_resumable_upload_raises_memory_by_less_than_64_mib(tmp_path: Path):
    org = make_org(tmp_path / "org")
    block = os.urandom(MIB + 4099)  # not a multiple of anything the server uses
    expected = hashlib.sha256()
    for piece in stream(block, 0, SIZE):
        expected.update(piece)
    with running(org, tmp_path / "server-tmp") as server:
        source = await new_source(server.url)
        tus = Tus(server.url, source.cookie, source.csrf)
        warm, _ = await tus.upload(os.urandom(8 * MIB))  # the first upload's allocations
        before = server.memory()["VmRSS"]

        created = await tus.create(SIZE, filename="big.bin")
        assert created.status == 201
        location = created.headers["location"]
        cut = await tus.patch(location, 0, stream(block, 0, SIZE), SIZE, cut_after=400 * MIB)
        assert cut.status is None
        offset = (await tus.head(location)).offset()
        assert 0 < offset <= 400 * MIB
        done = await tus.patch(location, offset, stream(block, offset, SIZE), SIZE - offset)
        assert (done.status, done.offset()) == (204, SIZE)

        after = server.memory()
        growth = after["VmHWM"] - before
        assert growth < 64 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB"

        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("csrf_token", source.csrf)
        form.add_field("message", "")
        form.add_field("uploads", location.rsplit("/", 1)[1])
        async with aiohttp.ClientSession(headers={"Cookie": source.cookie}) as http, \
                http.post(server.url + "/submit", data=form) as response:
            assert response.status == 200
            assert 'id="submitted"' in await response.text()
        [submission] = server.submission_ids()
        kinds = dict(server.ciphertexts(submission))
        manifest = json.loads(server.decrypt(kinds["manifest"]))
        [entry] = manifest["files"]
        assert entry["size"] == SIZE
        assert entry["sha256"] == expected.hexdigest()
        stored = server.store_dir / "objects" / kinds["file"][:2] / kinds["file"]
        assert stored.stat().st_size > SIZE
        assert server.partials() == []
        assert warm
