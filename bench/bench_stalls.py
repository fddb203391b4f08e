"""Slow, stalled and pointless requests (issue 10, section 4): each figure beside its baseline.

    .venv/bin/python bench/bench_stalls.py [--connections 500] [--flood 1100] [--uploads 150]

One run, one server process (`amanat serve`, cheapest KDF, limited to 1,024 open files like a
default system) with a header deadline of 5 s and a body idle deadline of 5 s, then:

1. header deadline: how long until `--connections` connections that never finish their headers
   are all closed (the deadline is 5 s; before issue 10 they stayed open);
2. descriptors: landing-page latency (p50, p99, failures) alone, then while an attacker process
   keeps `--flood` stalled connections open, reopening each one the server closes;
3. memory: the server's RSS before, at the peak of, and after `--uploads` stalled 4 MiB message
   uploads, from one session and from 30;
4. CPU: the server's CPU seconds for one ordinary small submission and for 20,000 empty file
   parts (about 2 MB), and the status of each.

The machine is shared and noisy (2 cores; the attacker, the client and the server share them):
read the figures against their baselines, not as absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from server_process import (  # noqa: E402 - after the path set-up above
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

DEADLINE = 5


def limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def header_deadline(server: ServerProcess, count: int) -> None:
    started = time.monotonic()
    connections = [await stall(server.url, b"" if i % 2 else HALF_HEADERS)
                   for i in range(count)]
    closed = await asyncio.gather(*(c.closed_within(DEADLINE + 30) for c in connections))
    took = time.monotonic() - started
    for connection in connections:
        connection.close()
    print(f"1. {count} stalled connections: {closed.count(True)} closed, all within "
          f"{took:.1f} s (header deadline {DEADLINE} s)")


async def landing_latencies(url: str, requests: int) -> tuple[list[float], int]:
    times: list[float] = []
    failures = 0
    timeout = aiohttp.ClientTimeout(total=10)
    for _ in range(requests):
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(url + "/") as response:
                await response.read()
                if response.status != 200:
                    failures += 1
                    continue
        except (aiohttp.ClientError, TimeoutError):
            failures += 1
            continue
        times.append(time.monotonic() - started)
    return times, failures


def describe(times: list[float], failures: int) -> str:
    if not times:
        return f"no answer, {failures} failed"
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"{failures} failed")


async def descriptors(server: ServerProcess, flood_size: int, requests: int) -> None:
    alone = await landing_latencies(server.url, requests)
    with stall_flood(server.url, flood_size) as flood:
        await wait_until(lambda: flood.counts()[1] >= flood_size, timeout=60)
        attacked = await landing_latencies(server.url, requests)
        open_now, made = flood.counts()
    print(f"2. landing page, 1,024 open files: alone {describe(*alone)}; with {flood_size} "
          f"stalled connections kept open ({made} opened, {open_now} open at the end) "
          f"{describe(*attacked)}")


async def memory(server: ServerProcess, uploads: int, sessions: int) -> None:
    sources = [await new_source(server.url) for _ in range(sessions)]
    baseline = server.memory()["VmRSS"]
    peak = baseline

    def sample() -> None:
        nonlocal peak
        peak = max(peak, server.memory()["VmRSS"])

    async with polling(0.05, sample):
        stalled = await asyncio.gather(*(
            stalled_message_upload(sources[i % sessions], 4 * MIB, 4 * MIB - 1024)
            for i in range(uploads)))
        await asyncio.gather(*(c.closed_within(DEADLINE + 30) for c in stalled))
    for connection in stalled:
        connection.close()
    await asyncio.sleep(1)
    after = server.memory()["VmRSS"]
    print(f"3. {uploads} stalled 4 MiB messages from {sessions} session(s): RSS "
          f"{baseline / MIB:.0f} MiB before, peak +{(peak - baseline) / MIB:.0f} MiB, "
          f"after +{(after - baseline) / MIB:.0f} MiB")


async def cpu(server: ServerProcess) -> None:
    source = await new_source(server.url)
    before = server.cpu_seconds()
    ordinary = await upload(source, b"a short message", "a.txt", [b"x" * 1000], 1000)
    small = server.cpu_seconds() - before
    body = empty_parts_body(source.csrf, 20_000, "benchEmptyParts")
    before = server.cpu_seconds()
    status = await post_body(source, body, "benchEmptyParts")
    empty = server.cpu_seconds() - before
    print(f"4. server CPU: one small submission {small:.2f} s (status {ordinary.status}); "
          f"20,000 empty parts in {len(body) / 1e6:.1f} MB {empty:.2f} s (status {status})")


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    with tempfile.TemporaryDirectory(prefix="amanat-bench-stalls-") as tmp:
        org = make_org(Path(tmp) / "org", server={"header_timeout_seconds": DEADLINE,
                                                  "body_idle_timeout_seconds": DEADLINE})
        with running(org, Path(tmp) / "tmp", preexec=limit_descriptors) as server:
            await header_deadline(server, args.connections)
            await descriptors(server, args.flood, args.requests)
            for sessions in (1, 30):
                await memory(server, args.uploads, sessions)
            await cpu(server)
            print("server log:", " | ".join(server.log.read_text().splitlines()) or "(empty)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--flood", type=int, default=1100)
    parser.add_argument("--uploads", type=int, default=150)
    parser.add_argument("--requests", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
