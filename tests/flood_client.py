"""One client flooding the intake server, and the sources it must not shut out.

    python tests/flood_client.py URL --rate 100 --malformed-rate 30 --seconds 60

Every attempt is a fresh session: a cookie-less GET /login (a new cookie and a new form token),
then at once a POST /login with that cookie and token. `rate` attempts a second carry well-formed
random codenames (each costs the server an Argon2id run, or a place in its queue), and
`malformed_rate` carry malformed ones. Raw HTTP/1.1 over keep-alive sockets (not aiohttp's
client, whose per-request cost would make the client the bottleneck) in its own process, so the
process measuring the sources' experience is not slowed by it. On SIGTERM or after `seconds` it
prints one JSON line: attempts sent, attempts skipped because every connection was busy, and the
count of each (kind, status).

Also here, for tests/test_app_flood.py and bench/bench_login_flood.py: `cookieless_requests`
(many GETs pipelined over one keep-alive socket), and `patient_login` / `patient_confirm` (a real
source, who loads a form, takes a few seconds, sends it, and sends it again after "busy").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import signal
import sys
import time
from html import unescape
from urllib.parse import urlencode

import aiohttp

from keys.codename import generate_codename

_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
_COOKIE = re.compile(rb"(?im)^set-cookie: amanat_session=([^;\r\n]+)")


class Connection:
    """One keep-alive connection: a request, then its whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, head: str, body: bytes = b"") -> tuple[int, bytes, bytes]:
        self.writer.write(head.encode("latin-1") + body)
        return await self.read_response()

    async def read_response(self) -> tuple[int, bytes, bytes]:
        """(status, head, body) of the next response (every answer here has a Content-Length)."""
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw_head.split(b" ", 2)[1])
        length = 0
        match = re.search(rb"(?im)^content-length: *(\d+)", raw_head)
        if match:
            length = int(match.group(1))
        return status, raw_head, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class Flood:
    def __init__(self, url: str, rate: int, malformed_rate: int, max_connections: int) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.kinds = ["valid"] * rate + ["malformed"] * malformed_rate
        self.max_connections = max_connections
        self.idle: list[Connection] = []
        self.open = 0
        self.sent = self.skipped = 0
        self.outcomes: dict[str, int] = {}
        self.stop = asyncio.Event()

    async def run(self, seconds: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        tick = 1.0 / len(self.kinds)
        started = time.monotonic()
        n = 0
        while not self.stop.is_set() and time.monotonic() - started < seconds:
            if self.idle or self.open < self.max_connections:
                task = asyncio.create_task(self._attempt(self.kinds[n % len(self.kinds)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                self.skipped += 1
            n += 1
            await asyncio.sleep(max(0.0, started + n * tick - time.monotonic()))
        if tasks:  # attempts still waiting for an answer get a little time, then are dropped
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            self.outcomes["unanswered"] = len(pending)
        for connection in self.idle:
            connection.close()

    async def _connection(self) -> Connection:
        if self.idle:
            return self.idle.pop()
        self.open += 1
        try:
            return Connection(*await asyncio.open_connection(self.host, self.port))
        except OSError:
            self.open -= 1
            raise

    async def _attempt(self, kind: str) -> None:
        self.sent += 1
        try:
            connection = await self._connection()
        except OSError:
            self._count(kind, "refused")
            return
        try:
            status = await self._login(connection, kind)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.open -= 1
            connection.close()
            self._count(kind, "error")
            return
        self.idle.append(connection)
        self._count(kind, str(status))

    async def _login(self, connection: Connection, kind: str) -> int:
        host = f"Host: {self.host}:{self.port}\r\n"
        _, head, body = await connection.request(f"GET /login HTTP/1.1\r\n{host}\r\n")
        cookie, token = _COOKIE.search(head), _CSRF.search(body)
        if cookie is None or token is None:
            raise ValueError("no fresh session")
        if kind == "valid":
            guess = generate_codename()
        else:
            guess = secrets.choice(["1234", "", "abc def", "1" * 40, "12-34-56"])
        form = urlencode({"csrf_token": unescape(token.group(1).decode()), "codename": guess})
        status, _, _ = await connection.request(
            f"POST /login HTTP/1.1\r\n{host}Cookie: amanat_session={cookie.group(1).decode()}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(form)}\r\n\r\n", form.encode())
        return status

    def _count(self, kind: str, status: str) -> None:
        key = f"{kind} {status}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


async def cookieless_requests(url: str, paths: list[str], total: int, batch: int = 200
                              ) -> tuple[dict[int, int], set[str]]:
    """`total` GETs without a cookie, cycling through `paths`, pipelined `batch` at a time over
    one keep-alive connection; returns the count of each status and the cookies the server set."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    connection = Connection(reader, writer)
    statuses: dict[int, int] = {}
    cookies: set[str] = set()
    try:
        for start in range(0, total, batch):
            count = min(batch, total - start)
            writer.write(b"".join(
                f"GET {paths[(start + i) % len(paths)]} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                for i in range(count)))
            for _ in range(count):
                status, head, _ = await connection.read_response()
                statuses[status] = statuses.get(status, 0) + 1
                cookies.update(m.decode() for m in re.findall(rb"(?im)^set-cookie: *([^=]+)=",
                                                               head))
    finally:
        connection.close()
    return statuses, cookies


async def patient_login(url: str, codename: str, think: float) -> float:
    """A returning source: loads the login form, takes `think` seconds to type, sends it, and
    the same form again after a busy page. The seconds from pressing the button to logged in."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url + "/login") as response:
            token = _token(await response.text())
        await asyncio.sleep(think)
        return await _press(http, url + "/login", {"csrf_token": token, "codename": codename})


async def patient_confirm(url: str, think: float) -> float:
    """A new source: loads the codename page, takes `think` seconds to write it down, confirms
    (again after "busy"). The seconds from pressing the button to logged in."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url + "/start") as response:
            html = await response.text()
        check = html.split('id="codename">', 1)[1].split("<", 1)[0].split()[-1]
        await asyncio.sleep(think)
        return await _press(http, url + "/start", {"csrf_token": _token(html),
                                                   "codename_check": check})


async def _press(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> float:
    started = time.monotonic()
    while True:
        async with http.post(url, data=form) as response:
            html = await response.text()
        if response.status != 503:
            break
        await asyncio.sleep(1)
    if 'id="submit-form"' not in html:
        raise AssertionError(f"not logged in: {response.status} {html[:300]}")
    return time.monotonic() - started


def _token(html: str) -> str:
    match = _CSRF.search(html.encode())
    if match is None:
        raise AssertionError("no form token on the page")
    return unescape(match.group(1).decode())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--malformed-rate", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    # Two circuits' worth of streams under the onion's HiddenServiceMaxStreams 32: one client's
    # connections are bounded by tor; its rate (over keep-alive) is what the tests vary.
    parser.add_argument("--max-connections", type=int, default=64)
    args = parser.parse_args()
    flood = Flood(args.url, args.rate, args.malformed_rate, args.max_connections)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, flood.stop.set)
    started = time.monotonic()
    await flood.run(args.seconds)
    print(json.dumps({"sent": flood.sent, "skipped": flood.skipped,
                      "seconds": round(time.monotonic() - started, 1),
                      "outcomes": flood.outcomes}), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
