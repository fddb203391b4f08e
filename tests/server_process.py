"""The intake server as a real subprocess, and a raw HTTP client that streams big uploads.

For the end-to-end durability, plaintext and memory tests (and bench/): a server in its own
process can be killed with SIGKILL, given its own TMPDIR, and have its memory read from /proc.
The raw client builds the multipart body on the fly (nothing the size of the upload is ever held
in memory), sends it with a Content-Length or chunked, and can drop the connection half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dropbox.demo import DemoOrg, create_demo_org
from dropbox.store import CiphertextStore
from keys.age import decrypt

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_CODENAME = re.compile(r'id="codename">([^<]+)<')
_SERVING = re.compile(r"serving on (http://\S+)")
_TRANSFER = re.compile(r"transfer API on (http://\S+)")


AMANAT = ("-m", "dropbox.cli")
SIZES_BEFORE_ISSUE_15 = ("-c", """
import sys
import dropbox.app, dropbox.intake, dropbox.store
dropbox.app.READ_BUFSIZE = 256 * 1024
dropbox.intake.READ_CHUNK = 256 * 1024
dropbox.store.FLUSH_BYTES = dropbox.store.BUFFER_BYTES = 1024 * 1024
from dropbox.cli import main
sys.exit(main())
""")
"""`amanat` with the buffer sizes from before issue 15 (aiohttp's 256 KiB body buffer, 256 KiB
multipart reads, 1 MiB store buffers): bench/ runs it beside today's sizes, as `entry`."""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_org(root: Path, **overrides: dict[str, Any]) -> DemoOrg:
    """A demo organization (cheapest KDFs) whose config listens on 127.0.0.1, any free port."""
    org = create_demo_org(root, port=0, cheap_kdf=True)
    sections: dict[str, dict[str, Any]] = tomllib.loads(org.config_path.read_text("utf-8"))
    sections["server"]["listen"] = "127.0.0.1:0"
    sections["storage"]["reserve_bytes"] = 0
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items()), ""]
    org.config_path.write_text("\n".join(lines), encoding="utf-8")
    return org


@dataclass
class ServerProcess:
    """`amanat serve` in a subprocess, with TMPDIR pointed at `tmpdir`."""

    org: DemoOrg
    tmpdir: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    preexec: Callable[[], None] | None = None  # runs in the child before exec (setrlimit)
    transfer_url: str = ""  # when the config has [transfer] listen
    # What runs `amanat` (bench/: a launcher that sets other buffer sizes before it starts).
    entry: tuple[str, ...] = AMANAT
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.org.root / "server.log"

    @property
    def data_dir(self) -> Path:
        return self.org.root / "data"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def database(self) -> Path:
        return self.data_dir / "amanat.sqlite3"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONDONTWRITEBYTECODE": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.entry, "serve", "--config", str(self.org.config_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=REPO,
                preexec_fn=self.preexec,
            )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            seen += self.proc.stdout.read() or b""
            if match := _SERVING.search(seen.decode("utf-8", "replace")):
                self.url = match.group(1)
                if transfer := _TRANSFER.search(seen.decode("utf-8", "replace")):
                    self.transfer_url = transfer.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start: {seen!r}\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> int:
        """SIGTERM, as systemd does; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()
        return self.proc.returncode

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the server process, in bytes."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
        return values

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as c:
            return c.execute(sql, args).fetchall()

    def submission_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM submissions ORDER BY id")]

    def ciphertexts(self, submission_id: str) -> list[tuple[str, str]]:
        """(kind, name) of a submission's ciphertexts."""
        return [
            (r[0], r[1])
            for r in self.query(
                "SELECT kind, name FROM ciphertexts WHERE submission_id = ? ORDER BY id",
                submission_id,
            )
        ]

    def decrypt(self, name: str) -> bytes:
        store = CiphertextStore(self.store_dir, reserve_bytes=0)
        return decrypt(store.path(name).read_bytes(), [self.org.investigator.identity])

    def partials(self) -> list[Path]:
        return sorted((self.store_dir / "tmp").glob("*"))

    def objects(self) -> list[Path]:
        return sorted(p for p in (self.store_dir / "objects").rglob("*") if p.is_file())


def walk_quietly(root: Path) -> list[Path]:
    """`root` and everything under it, listed with O_NOATIME: an ordinary listing would itself
    set the folders' access times to now."""
    found = [root]
    if root.is_dir() and not root.is_symlink():
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in sorted(names):
            found += walk_quietly(root / name)
    return found


@contextlib.contextmanager
def running(org: DemoOrg, tmpdir: Path, preexec: Callable[[], None] | None = None,
            entry: tuple[str, ...] = AMANAT) -> Iterator[ServerProcess]:
    server = ServerProcess(org, tmpdir, preexec=preexec, entry=entry)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class SourceSession:
    """What a logged-in source's browser holds: its cookie and the submit form's CSRF token."""

    url: str
    cookie: str
    csrf: str
    codename: str = ""


async def new_source(url: str) -> SourceSession:
    """Walk the start pages like a browser without JavaScript; returns the logged-in session."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(url + "/start") as response:
            html = await response.text()
        token = _csrf(html)
        codename = _CODENAME.search(html)
        assert codename, "no codename on the start page"
        check = codename.group(1).split()[-1]  # typed into codename-check
        async with http.post(url + "/start", data={"csrf_token": token,
                                                   "codename_check": check}) as response:
            html = await response.text()
            assert response.status == 200, html
            assert 'id="submit-form"' in html, html
        cookies = "; ".join(f"{c.key}={c.value}" for c in jar)
        return SourceSession(url, cookies, _csrf(html), unescape(codename.group(1)))


async def new_sources(url: str, count: int) -> list[SourceSession]:
    """`count` logged-in sources, 16 at a time (the Argon2id queue is bounded)."""
    made: list[SourceSession] = []
    while len(made) < count:
        made += await asyncio.gather(*(new_source(url) for _ in range(min(16, count - len(made)))))
    return made


async def log_in(url: str, codename: str) -> SourceSession:
    """A returning source: log in with the codename; returns the logged-in session."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(url + "/login") as response:
            token = _csrf(await response.text())
        data = {"csrf_token": token, "codename": codename}
        async with http.post(url + "/login", data=data) as response:
            html = await response.text()
            assert response.status == 200, html
            assert 'id="submit-form"' in html, html
        cookies = "; ".join(f"{c.key}={c.value}" for c in jar)
        return SourceSession(url, cookies, _csrf(html), codename)


def _csrf(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return unescape(match.group(1))


# --- the raw streaming upload ---------------------------------------------------------------


@dataclass
class UploadResult:
    status: int | None  # None: no response (the connection was dropped on purpose, or reset)
    body: bytes
    sent: int  # body bytes handed to the socket
    finished_sending: bool


def repeating(block: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes made of `block` over and over, produced as they are sent."""
    left = total
    while left > 0:
        piece = block[:left]
        left -= len(piece)
        yield piece


def multipart_body(
    csrf: str, message: bytes, filename: str, chunks: Iterable[bytes], boundary: str
) -> tuple[list[bytes], Iterable[bytes], bytes]:
    """(head parts, file chunks, tail) of the submit form, CSRF token first like a browser."""
    b = boundary.encode()
    head = [
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        + csrf.encode()
        + b"\r\n",
        b"--" + b + b'\r\nContent-Disposition: form-data; name="message"\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + message + b"\r\n",
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="files"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n',
    ]
    return head, chunks, b"\r\n--" + b + b"--\r\n"


async def upload(
    source: SourceSession,
    message: bytes,
    filename: str,
    chunks: Iterable[bytes],
    file_size: int | None,
    *,
    chunked: bool = False,
    drop_after: int | None = None,
    on_sent: Callable[[int], None] | None = None,
    path: str = "/submit",
    rate: float | None = None,
    before_tail: Callable[[], Awaitable[None]] | None = None,
) -> UploadResult:
    """POST the submit form over a raw socket, streaming `chunks` as the file's content.

    With `chunked`, no Content-Length is sent (Transfer-Encoding: chunked). With `drop_after`,
    the connection is closed once that many body bytes were sent, without finishing the body.
    With `rate` (bytes a second), each piece waits until the bytes sent so far are due: a slow
    source, such as one behind Tor (pieces of a few KB make it smooth). `before_tail` is awaited
    once the file's last byte is sent, before the closing boundary. The response is read
    while sending, so an early refusal (507 before reading) is seen. A 303 (the submission
    arrived) is followed as a browser does: status and body are then the received page's, got
    with a GET.
    """
    boundary = "amanatTestBoundary7f3a9c"
    head, file_chunks, tail = multipart_body(source.csrf, message, filename, chunks, boundary)
    parts = urlsplit(source.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Cookie: {source.cookie}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        "Connection: close",
    ]
    if chunked:
        headers.append("Transfer-Encoding: chunked")
    else:
        assert file_size is not None
        length = sum(map(len, head)) + file_size + len(tail)
        headers.append(f"Content-Length: {length}")
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
    answered = asyncio.Event()
    response = asyncio.create_task(_read_response(reader, answered))
    sent = 0
    finished = False
    started = time.monotonic()
    try:
        for piece in _body(head, file_chunks, tail):
            await _pace(started + sent / rate if rate else None,
                        before_tail if piece is tail else None)
            if answered.is_set() or response.done():
                break  # an early answer (413, 507): stop sending, as a browser would
            if drop_after is not None and sent + len(piece) > drop_after:
                piece = piece[: drop_after - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked and piece else piece)
            await writer.drain()
            # drain() need not block on loopback; yield so the response reader can notice an
            # early answer before the whole body has been pushed.
            await asyncio.sleep(0)
            sent += len(piece)
            if on_sent is not None:
                on_sent(sent)
            if drop_after is not None and sent >= drop_after:
                writer.close()
                response.cancel()
                return UploadResult(None, b"", sent, False)
        else:
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            finished = True
    except (ConnectionError, OSError):
        pass  # the server answered early and closed; the response is read below
    try:
        raw = await asyncio.wait_for(response, 60)
    except (ConnectionError, OSError):
        raw = b""
    finally:
        writer.close()
    location = re.search(rb"(?im)^location:\s*(\S+)\s*$", raw.split(b"\r\n\r\n", 1)[0])
    if _status(raw) == 303 and location:
        async with aiohttp.ClientSession(headers={"Cookie": source.cookie}) as http, \
                http.get(source.url + location.group(1).decode(), allow_redirects=False) as got:
            page = await got.read()
        return UploadResult(got.status, raw + page, sent, finished)
    return UploadResult(_status(raw), raw, sent, finished)


async def _pace(due: float | None, then: Callable[[], Awaitable[None]] | None) -> None:
    """Wait until `due` (time.monotonic()), if given, then for `then()`, if given."""
    if due is not None and due > time.monotonic():
        await asyncio.sleep(due - time.monotonic())
    if then is not None:
        await then()


async def _read_response(reader: asyncio.StreamReader, answered: asyncio.Event) -> bytes:
    """The whole response; `answered` is set as soon as its head has arrived. The server may
    still be reading (and discarding) the rest of the request, so the body is read by its
    length, not until the connection closes."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as partial:
        return partial.partial
    answered.set()
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if length:
        return head + await reader.readexactly(int(length.group(1)))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return head + await reader.readuntil(b"\r\n0\r\n\r\n")
    return head + await reader.read()


def _body(head: list[bytes], chunks: Iterable[bytes], tail: bytes) -> Iterator[bytes]:
    yield from head
    yield from chunks
    yield tail


def _status(raw: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(match.group(1)) if match else None


@contextlib.asynccontextmanager
async def polling(interval: float, check: Callable[[], None]) -> AsyncIterator[None]:
    """Run `check()` every `interval` seconds while the block runs (and once more at the end)."""

    async def loop() -> None:
        while True:
            check()
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        check()


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


# --- slow and stalled clients ---------------------------------------------------------------


@dataclass
class Stalled:
    """A connection that sent `head` and then nothing more."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def closed_within(self, seconds: float) -> bool:
        """Whether the server closes it (EOF or reset) within `seconds`; whatever it answers
        first (a 408 page) is read and dropped."""
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not await asyncio.wait_for(self.reader.read(65536), left):
                    return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.writer.close()


async def stall(url: str, head: bytes) -> Stalled:
    """Connect to the server at `url`, send `head` and stall."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    if head:
        writer.write(head)
        await writer.drain()
    return Stalled(reader, writer)


HALF_HEADERS = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"


async def stalled_message_upload(source: SourceSession, size: int, send: int) -> Stalled:
    """POST the submit form announcing a message of `size` bytes, send its first `send` bytes,
    then stall (the connection stays open)."""
    boundary = "amanatStallBoundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
            f"{source.csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"message\"\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    stalled = await stall(source.url, _post_head(source, boundary, len(head) + size + len(tail)))
    stalled.writer.write(head)
    with contextlib.suppress(ConnectionError, OSError):
        for piece in repeating(b"They came at night. " * 3000, send):
            stalled.writer.write(piece)
            await stalled.writer.drain()
    return stalled


def empty_parts_body(csrf: str, count: int, boundary: str) -> bytes:
    """The submit form with `count` empty file parts (file inputs left empty) after its token."""
    b = boundary.encode()
    empty = b"--" + b + b'\r\nContent-Disposition: form-data; name="files"; filename=""\r\n' \
        b"Content-Type: application/octet-stream\r\n\r\n\r\n"
    return (b"--" + b + b'\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            + csrf.encode() + b"\r\n" + empty * count + b"--" + b + b"--\r\n")


async def post_body(source: SourceSession, body: bytes, boundary: str) -> int | None:
    """POST a whole multipart body to /submit; the response's status."""
    connection = await stall(source.url, _post_head(source, boundary, len(body)))
    connection.writer.write(body)
    with contextlib.suppress(ConnectionError, OSError):
        await connection.writer.drain()
    answered = asyncio.Event()
    try:
        raw = await asyncio.wait_for(_read_response(connection.reader, answered), 60)
    except (ConnectionError, OSError):
        raw = b""
    connection.close()
    return _status(raw)


def _post_head(source: SourceSession, boundary: str, length: int) -> bytes:
    parts = urlsplit(source.url)
    return (f"POST /submit HTTP/1.1\r\nHost: {parts.netloc}\r\nCookie: {source.cookie}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@dataclass
class StallFlood:
    """tests/stall_flood.py running against a server: `counts()` is its last (open, made)."""

    proc: subprocess.Popen[bytes]
    seen: bytes = b""

    def counts(self) -> tuple[int, int]:
        assert self.proc.stdout is not None
        self.seen = (self.seen + (self.proc.stdout.read() or b""))[-4096:]
        found = re.findall(rb"open (\d+) made (\d+)", self.seen)
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


@contextlib.contextmanager
def stall_flood(url: str, count: int) -> Iterator[StallFlood]:
    """An attacker process keeping `count` stalled connections open to `url` (refilled)."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "stall_flood.py"), url,
                             str(count)], stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        yield StallFlood(proc)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
