"""Hundreds of slow uploads at once (issue 15, section 3): the server's memory per open upload.

    .venv/bin/python bench/bench_slow_uploads.py [--uploads 400] [--kib 1000] [--rate 20000]
                                                 [--sizes both|now|before]

One server process (`amanat serve`, cheapest KDF) per configuration. `--uploads` sources, each
with its own session, send the submit form with one file of `--kib` KiB at `--rate` bytes a
second (Tor speed: 20 KB/s by default, in pieces of 4 KB), all at once. Meanwhile a visitor
loads the landing page every 100 ms, each time over a new connection, as through Tor.

Reported for each configuration: the server's RSS before (after one warm-up upload), its peak
while every upload was open (from the moment the last one started sending until the first one
had sent its last byte), the growth divided by the number of open uploads, the landing page's
p50 and p99 in that same window, and how many submissions arrived (every one must).

`--sizes before` runs the server with the buffer sizes as they were before issue 15 (aiohttp's
256 KiB body buffer, 256 KiB multipart reads, 1 MiB store buffers), set by a launcher before
`amanat serve` starts (tests/server_process.py SIZES_BEFORE_ISSUE_15); `both` (the default)
runs that first and then today's sizes, and prints the two side by side. The machine is shared
and noisy: memory figures are steady, latencies are not (the client shares the two cores with
the server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from server_process import (  # noqa: E402 - after the path set-up above
    AMANAT,
    MIB,
    SIZES_BEFORE_ISSUE_15,
    ServerProcess,
    SourceSession,
    make_org,
    new_sources,
    polling,
    repeating,
    running,
    upload,
)

KIB = 1024
PIECE = 4000  # bytes a slow source sends at a time
ENTRIES = {"before": SIZES_BEFORE_ISSUE_15, "now": AMANAT}


@dataclass
class Load:
    """What the uploads are doing: how many started sending, how many sent their last byte."""

    uploads: int
    started: int = 0
    sent_all: int = 0
    peak_all_open: int = 0
    landing_all_open: list[float] = field(default_factory=list)
    landing_failures: int = 0

    @property
    def all_open(self) -> bool:
        return self.started == self.uploads and self.sent_all == 0


@dataclass
class Figures:
    before: int
    peak: int
    hwm: int
    arrived: int
    statuses: dict[int | None, int]
    landing: list[float]
    landing_failures: int
    seconds: float


async def slow_upload(source: SourceSession, size: int, rate: float, load: Load) -> int | None:
    first = True

    def on_sent(sent: int) -> None:
        nonlocal first
        if first:
            first = False
            load.started += 1

    block = bytes(range(256)) * (PIECE // 256 + 1)
    result = await upload(source, b"a slow source", "slow.bin",
                          _counting(repeating(block[:PIECE], size), load), size,
                          on_sent=on_sent, rate=rate)
    return result.status


def _counting(chunks: Iterator[bytes], load: Load) -> Iterator[bytes]:
    """The file's pieces; counts the upload as done sending once the last piece was taken."""
    yield from chunks
    load.sent_all += 1


async def landing(url: str, load: Load, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    while not stop.is_set():
        started = time.monotonic()
        was_open = load.all_open
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(url + "/") as response:
                await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if was_open and load.all_open:
            if ok:
                load.landing_all_open.append(time.monotonic() - started)
            else:
                load.landing_failures += 1
        await asyncio.sleep(0.1)


async def measure(server: ServerProcess, args: argparse.Namespace) -> Figures:
    size = args.kib * KIB
    people = await new_sources(server.url, args.uploads + 1)
    warm = await upload(people[-1], b"warm", "warm.bin", [b"w" * size], size)
    assert warm.status == 200, warm.body[-300:]
    await asyncio.sleep(1)
    before = server.memory()["VmRSS"]
    load = Load(args.uploads)

    def sample() -> None:
        if load.all_open:
            load.peak_all_open = max(load.peak_all_open, server.memory()["VmRSS"])

    stop = asyncio.Event()
    visitor = asyncio.create_task(landing(server.url, load, stop))
    started = time.monotonic()
    async with polling(0.2, sample):
        statuses = await asyncio.gather(*(slow_upload(s, size, args.rate, load)
                                          for s in people[:args.uploads]))
    took = time.monotonic() - started
    stop.set()
    await visitor
    counted: dict[int | None, int] = {}
    for status in statuses:
        counted[status] = counted.get(status, 0) + 1
    return Figures(before, load.peak_all_open, server.memory()["VmHWM"],
                   len(server.submission_ids()) - 1, counted, load.landing_all_open,
                   load.landing_failures, took)


def describe(name: str, uploads: int, f: Figures) -> str:
    grown = f.peak - f.before
    ordered = sorted(f.landing) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"  {name:7} RSS {f.before / MIB:4.0f} MiB before, {f.peak / MIB:4.0f} MiB with all "
            f"{uploads} open (+{grown / MIB:.0f} MiB, {grown / uploads / KIB:4.0f} KiB per open "
            f"upload; peak ever {f.hwm / MIB:.0f} MiB)\n"
            f"          {f.arrived} of {uploads} arrived, statuses {f.statuses}, "
            f"{f.seconds:.0f} s; landing page with all open: p50 "
            f"{statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"({len(f.landing)} loads, {f.landing_failures} failed)")


async def main(args: argparse.Namespace) -> None:
    names = ["before", "now"] if args.sizes == "both" else [args.sizes]
    results: dict[str, Figures] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="amanat-bench-slow-") as tmp:
            org = make_org(Path(tmp) / "org", limits={
                "max_concurrent_uploads": args.uploads + 1, "max_files": 2})
            with running(org, Path(tmp) / "tmp", entry=ENTRIES[name]) as server:
                results[name] = await measure(server, args)
        print(describe(name, args.uploads, results[name]), flush=True)
    print(f"\n{args.uploads} uploads of {args.kib} KiB at {args.rate / 1000:.0f} KB/s at once, "
          "one server process:")
    for name, figures in results.items():
        print(describe(name, args.uploads, figures))
    if len(results) == 2:
        per = {n: (f.peak - f.before) / args.uploads for n, f in results.items()}
        print(f"  memory per open upload, now / before: {per['now'] / per['before']:.2f} "
              "(issue 15 aims at <= 256 KiB per open upload)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--kib", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--sizes", choices=["both", "now", "before"], default="both")
    asyncio.run(main(parser.parse_args()))
