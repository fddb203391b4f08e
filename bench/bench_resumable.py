"""Resumable (tus) upload throughput beside the form's, over loopback, same server, same run.

    .venv/bin/python bench/bench_resumable.py [--mib 512] [--rounds 3] [--chunk-mib 4]

One Amanat server runs in its own process on 127.0.0.1. Each round sends the same file of
`--mib` MiB twice, interleaved: once as the submit form (multipart, one request, as with
JavaScript off; tests/server_process.py's raw streaming client) and once through tus as the
submit page's script does: a creation, PATCHes of `--chunk-mib` MiB each on a new connection
(the script's browser may reuse one; a new one is the worse case), then the form naming the
finished upload. Both end with the file durable and recorded. The best round of each is
reported with the ratio resumable / form, and the server's CPU seconds per GiB for each.

The machine is shared and noisy (2 cores, the client shares them with the server), hence the
interleaving and best-of rounds: only the ratio measured side by side means anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from server_process import (  # noqa: E402 - after the path set-up above
    MIB,
    SourceSession,
    make_org,
    new_source,
    repeating,
    running,
    upload,
)
from tus_client import Tus  # noqa: E402


async def form_upload(source: SourceSession, size: int, block: bytes) -> None:
    result = await upload(source, b"", "bench.bin", repeating(block, size), size)
    if result.status != 200:
        raise SystemExit(f"form upload failed: {result.status} {result.body[-300:]!r}")


async def resumable_upload(source: SourceSession, size: int, block: bytes, chunk: int) -> None:
    tus = Tus(source.url, source.cookie, source.csrf)
    created = await tus.create(size, filename="bench.bin")
    if created.status != 201:
        raise SystemExit(f"creation failed: {created.status}")
    location = created.headers["location"]
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        answer = await tus.patch(location, offset, repeating(block, length), length)
        if answer.status != 204:
            raise SystemExit(f"PATCH failed: {answer.status}")
        offset = answer.offset()
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("csrf_token", source.csrf)
    form.add_field("message", "")
    form.add_field("uploads", location.rsplit("/", 1)[1])
    async with aiohttp.ClientSession(headers={"Cookie": source.cookie}) as http, \
            http.post(source.url + "/submit", data=form) as response:
        if response.status != 200:
            raise SystemExit(f"the form naming the upload failed: {response.status}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=4)
    args = parser.parse_args()
    size, chunk = args.mib * MIB, args.chunk_mib * MIB
    block = os.urandom(MIB)
    with tempfile.TemporaryDirectory(prefix="amanat-bench-") as tmp:
        root = Path(tmp)
        org = make_org(root / "org", limits={"max_file_bytes": size + MIB,
                                             "max_submission_bytes": size + 2 * MIB})
        with running(org, root / "server-tmp") as server:
            source = await new_source(server.url)
            await form_upload(source, MIB, block)  # imports, first rows
            await resumable_upload(source, MIB, block, chunk)
            runs: dict[str, Callable[[], Awaitable[None]]] = {
                "form": lambda: form_upload(source, size, block),
                    "resumable": lambda: resumable_upload(source, size, block, chunk)}
            best: dict[str, tuple[float, float]] = {}
            for round_no in range(1, args.rounds + 1):
                for name, run in runs.items():
                    cpu, start = cpu_seconds(server.pid), time.perf_counter()
                    await run()
                    wall, used = time.perf_counter() - start, cpu_seconds(server.pid) - cpu
                    print(f"round {round_no} {name:10} {args.mib / wall:7.1f} MiB/s "
                          f"({wall:5.2f} s wall, server CPU {used:5.2f} s)", flush=True)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, used)
            memory = server.memory()
    gib = args.mib / 1024
    print(f"\n{args.mib} MiB over loopback, best of {args.rounds} interleaved rounds, "
          f"PATCHes of {args.chunk_mib} MiB:")
    for name, (wall, used) in best.items():
        print(f"  {name:10} {args.mib / wall:7.1f} MiB/s   server CPU {used / gib:5.2f} s/GiB")
    print(f"  resumable / form throughput ratio: {best['form'][0] / best['resumable'][0]:.2f}")
    print(f"  server peak RSS {memory['VmHWM'] / MIB:.0f} MiB, now {memory['VmRSS'] / MIB:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
