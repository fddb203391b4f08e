"""One client against the sources (issue 10, sections 1 and 2), side by side in one run.

    .venv/bin/python bench/bench_login_flood.py [--rate 100] [--malformed-rate 30]
                                                [--requests 50000]

The server runs `amanat serve` in its own process on 127.0.0.1 with the production Argon2id
profile (t=3, 64 MiB, p=4) and the default settings (2 derivations at once, 32 waiting). Then:

1. Alone: the landing page's latency, a returning source's login and a new source's confirmation
   (each from pressing the button to the submit page; the form was loaded 4 s before).
2. The same while one client (tests/flood_client.py, its own process) sends `rate` bad logins a
   second from fresh sessions with well-formed codenames (each costs Argon2id or a place in the
   queue) plus `malformed-rate` malformed ones; what the flood got back.
3. `requests` cookie-less GETs (/?l=en and friends) over one keep-alive socket, with a source
   logged in and another one's codename pending meanwhile: the rate, the server's memory before
   and after, whether the source is still logged in and the pending codename still confirms.

The machine is shared and noisy: read the ratios and the yes/no lines, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from flood_client import (  # noqa: E402
    cookieless_requests,
    patient_confirm,
    patient_login,
)

from dropbox.demo import create_demo_org  # noqa: E402

THINK_SECONDS = 4.0


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    org = create_demo_org(root, port=0)
    process = subprocess.Popen(
        [sys.executable, "-m", "dropbox.cli", "serve", "--config", str(org.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "serving on" in line:
            return process, line.rsplit(" ", 1)[1].strip()
    raise SystemExit("the server did not start")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def landing(url: str, count: int, pause: float = 0.02) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.get(url + "/") as response:
                await response.read()
                assert response.status == 200
            times.append(time.perf_counter() - started)
            await asyncio.sleep(pause)
    return times


def p50_p99(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)


async def new_codename(url: str) -> str:
    """A source who got a codename and confirmed it (the returning source of the runs)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url + "/start") as response:
            html = await response.text()
        codename = html.split('id="codename">', 1)[1].split("<", 1)[0]
        form = {"csrf_token": html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0],
                "codename_check": codename.split()[-1]}
        async with http.post(url + "/start", data=form) as response:
            assert 'id="submit-form"' in await response.text()
    return codename


async def sources(url: str, codename: str) -> tuple[float, float]:
    return await asyncio.gather(patient_login(url, codename, THINK_SECONDS),
                                patient_confirm(url, THINK_SECONDS))


async def flood_phase(url: str, codename: str, rate: int, malformed_rate: int,
                      requests: int) -> tuple[tuple[float, float], list[float], dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "flood_client.py"), url, "--rate", str(rate),
         "--malformed-rate", str(malformed_rate), "--seconds", "600"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        await asyncio.sleep(3.0)  # the queue fills up with fresh guesses
        times, latencies = await asyncio.gather(sources(url, codename), landing(url, requests))
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=60)
    return times, latencies, json.loads(out)


async def sessions_phase(url: str, pid: int, codename: str, total: int) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as source, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as newcomer:
        async with source.get(url + "/login") as response:
            html = await response.text()
        token = html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        async with source.post(url + "/login", data={"csrf_token": token,
                                                     "codename": codename}) as response:
            assert 'id="submit-form"' in await response.text()
        async with newcomer.get(url + "/start") as response:
            html = await response.text()
        pending = {"csrf_token": html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0],
                   "codename_check": html.split('id="codename">', 1)[1].split("<", 1)[0]
                   .split()[-1]}

        before = rss_mib(pid)
        started = time.perf_counter()
        statuses, cookies = await cookieless_requests(
            url, ["/?l=en", "/login?l=fa", "/start?l=ps", "/?l=ar", "/no-such-page?l=ur",
                  "/static/style.css?l=fa_AF"], total)
        elapsed = time.perf_counter() - started
        after = rss_mib(pid)

        async with source.get(url + "/submit") as response:
            still_in = 'id="submit-form"' in await response.text()
        async with newcomer.post(url + "/start", data=pending) as response:
            confirmed = 'id="submit-form"' in await response.text()
    print(f"\n{total} cookie-less requests over one keep-alive socket: {elapsed:.1f} s "
          f"({total / elapsed:.0f}/s), statuses {statuses}, cookies set: {sorted(cookies)}")
    print(f"server RSS before {before:.0f} MiB, after {after:.0f} MiB "
          f"(+{after - before:.1f} MiB: nothing is stored per visitor)")
    print(f"logged-in source still logged in: {'yes' if still_in else 'NO'}; "
          f"pending codename still confirms: {'yes' if confirmed else 'NO'}")


async def measure(url: str, pid: int, rate: int, malformed_rate: int, total: int) -> None:
    codename = await new_codename(url)
    await landing(url, 20, 0)  # warm up
    alone = await landing(url, 300)
    login_alone, confirm_alone = await sources(url, codename)
    (login_flood, confirm_flood), loaded, report = await flood_phase(
        url, codename, rate, malformed_rate, 300)
    (a50, a99), (l50, l99) = p50_p99(alone), p50_p99(loaded)
    seconds = float(report["seconds"])
    print(f"flood: {rate} bad logins/s with well-formed codenames + {malformed_rate} malformed/s, "
          f"each from a fresh session (one client, its own process)")
    print(f"{'':34}{'alone':>12}{'under flood':>14}{'ratio':>9}")
    print(f"{'landing page p50 (ms)':34}{a50:12.1f}{l50:14.1f}{l50 / a50:8.1f}x")
    print(f"{'landing page p99 (ms)':34}{a99:12.1f}{l99:14.1f}{l99 / a99:8.1f}x")
    print(f"{'returning source logged in (s)':34}{login_alone:12.1f}{login_flood:14.1f}"
          f"{login_flood / login_alone:8.1f}x")
    print(f"{'new source confirmed (s)':34}{confirm_alone:12.1f}{confirm_flood:14.1f}"
          f"{confirm_flood / confirm_alone:8.1f}x")
    print(f"the flood sent {report['sent']} attempts in {seconds:.0f} s "
          f"({int(report['sent']) / seconds:.0f}/s; {report['skipped']} skipped, "
          f"all its connections busy); answers: {report['outcomes']}")
    await sessions_phase(url, pid, codename, total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--malformed-rate", type=int, default=30)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amanat-bench-") as tmp:
        process, url = start_server(Path(tmp) / "org")
        try:
            asyncio.run(measure(url, process.pid, args.rate, args.malformed_rate, args.requests))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
