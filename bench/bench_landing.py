"""Landing-page latency alone and while 20 concurrent codename logins hammer Argon2id.

    .venv/bin/python bench/bench_landing.py [--requests 300] [--attackers 20]

The server runs `amanat serve` in its own process on 127.0.0.1 with the production Argon2 profile
(t=3, 64 MiB, p=4) and the default bound of 2 derivations at once. The login rate limits are
raised far above their defaults so that every attempt really runs Argon2id: this measures the
worst case the bounded executor must absorb, not the rate limiter. The page loads and the logins
come from the same client process, in one run, side by side; the machine is shared and noisy, so
read the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dropbox.demo import create_demo_org  # noqa: E402

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    org = create_demo_org(root, port=0)
    text = org.config_path.read_text()
    text = text.replace('argon2_profile = "production"', 'argon2_profile = "production"\n'
                        "login_attempts_per_session_per_minute = 1000000\n"
                        "login_attempts_global_per_minute = 1000000")
    org.config_path.write_text(text)
    process = subprocess.Popen(
        [sys.executable, "-m", "dropbox.cli", "serve", "--config", str(org.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "serving on" in line:
            return process, line.rsplit(" ", 1)[1].strip()
    raise SystemExit(f"the server did not start: {process.stderr.read() if process.stderr else ''}")


async def page_latencies(http: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with http.get(url + "/") as response:
            await response.read()
            assert response.status == 200
        times.append(time.perf_counter() - started)
    return times


async def attacker(url: str, stop: asyncio.Event, done: list[int]) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url + "/login") as response:
            match = CSRF.search(await response.text())
        assert match
        while not stop.is_set():
            guess = "".join(secrets.choice("0123456789") for _ in range(16))
            async with http.post(url + "/login",
                                 data={"csrf_token": match.group(1), "codename": guess}) as r:
                await r.read()
                if r.status == 400:
                    done.append(1)


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def measure(url: str, requests: int, attackers: int) -> None:
    async with aiohttp.ClientSession() as http:
        await page_latencies(http, url, 20)  # warm up
        alone = await page_latencies(http, url, requests)
        stop, done = asyncio.Event(), list[int]()
        attack_started = time.perf_counter()
        crowd = [asyncio.create_task(attacker(url, stop, done)) for _ in range(attackers)]
        await asyncio.sleep(1.0)  # let the derivations queue up
        loaded = await page_latencies(http, url, requests)
        stop.set()
        await asyncio.gather(*crowd)
        elapsed = time.perf_counter() - attack_started
    (a50, a99), (l50, l99) = summary(alone), summary(loaded)
    print(f"landing page alone:            p50 {a50:7.2f} ms   p99 {a99:7.2f} ms")
    print(f"while {attackers:2d} logins hammer Argon2: p50 {l50:7.2f} ms   p99 {l99:7.2f} ms")
    print(f"ratio loaded/alone:            p50 {l50 / a50:7.2f}x    p99 {l99 / a99:7.2f}x")
    print(f"Argon2id logins completed: {len(done)} in {elapsed:.1f} s "
          f"({len(done) / elapsed:.1f}/s, at most 2 at once)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--attackers", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amanat-bench-") as tmp:
        process, url = start_server(Path(tmp) / "org")
        try:
            asyncio.run(measure(url, args.requests, args.attackers))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
