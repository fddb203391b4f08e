"""A tus 1.0.0 client over raw sockets, for tests: every request on its own connection, so that a
test can cut one in the middle of a PATCH body and carry on from the offset the server reports.

    tus = Tus(url, cookie, csrf)
    location = await tus.create(len(data), filename="a.pdf")
    status, headers = await tus.patch(location, 0, [data], cut_after=1000)   # cut: status None
    status, headers = await tus.head(location)                                # Upload-Offset
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


@dataclass
class Response:
    status: int | None  # None: no answer (the connection was cut, or closed without one)
    headers: dict[str, str] = field(default_factory=dict)

    def offset(self) -> int:
        return int(self.headers["upload-offset"])


@dataclass
class Tus:
    url: str  # http://127.0.0.1:PORT
    cookie: str  # "amanat_session=..."
    csrf: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {**TUS, "Cookie": self.cookie, "X-CSRF-Token": self.csrf, **extra}

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: Iterable[bytes] = (), length: int | None = None,
                      cut_after: int | None = None, timeout: float = 60.0) -> Response:
        """One request on a new connection; `cut_after` closes it after that many body bytes."""
        parts = urlsplit(self.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}",
                     "Connection: close"]
            if length is not None:
                lines.append(f"Content-Length: {length}")
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            sent = 0
            for chunk in body:
                if cut_after is not None and sent + len(chunk) >= cut_after:
                    writer.write(chunk[: cut_after - sent])
                    await writer.drain()
                    writer.transport.abort()  # a broken circuit: no FIN, no answer read
                    return Response(None)
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            async with asyncio.timeout(timeout):
                return await _read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return Response(None)
        finally:
            writer.close()

    async def options(self, path: str = "/uploads") -> Response:
        return await self.request("OPTIONS", path, {})

    async def create(self, length: int, filename: str = "file.bin",
                     filetype: str = "application/octet-stream", field: str = "files",
                     **headers: str) -> Response:
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                        for k, v in (("filename", filename), ("filetype", filetype),
                                     ("field", field)))
        return await self.request("POST", "/uploads", self.headers(**{
            "Upload-Length": str(length), "Upload-Metadata": meta, **headers}), length=0)

    async def head(self, location: str) -> Response:
        return await self.request("HEAD", location, self.headers())

    async def patch(self, location: str, offset: int, body: Iterable[bytes], length: int,
                    cut_after: int | None = None, **headers: str) -> Response:
        return await self.request(
            "PATCH", location,
            self.headers(**{"Content-Type": OFFSET_TYPE, "Upload-Offset": str(offset),
                            **headers}),
            body, length=length, cut_after=cut_after)

    async def delete(self, location: str) -> Response:
        return await self.request("DELETE", location, self.headers())

    async def upload(self, data: bytes, cuts: Iterable[int] = (), chunk: int = 256 * 1024,
                     filename: str = "file.bin") -> tuple[str, int]:
        """Create and send `data`, cutting the connection after each of `cuts` bytes of a
        PATCH body and resuming from HEAD's offset; returns (location, connections cut)."""
        created = await self.create(len(data), filename=filename)
        assert created.status == 201, created
        location = urlsplit(created.headers["location"]).path
        cut_list = list(cuts)
        cut = 0
        offset = 0
        while True:
            head = await self.head(location)
            assert head.status == 200, head
            offset = head.offset()
            if offset == len(data):
                return location, cut
            rest = data[offset:]
            pieces = [rest[i:i + chunk] for i in range(0, len(rest), chunk)]
            cut_after = cut_list.pop(0) if cut_list else None
            answer = await self.patch(location, offset, pieces, len(rest), cut_after=cut_after)
            if answer.status is None:
                cut += 1
                continue
            assert answer.status == 204, answer


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return Response(status, headers)


def session_cookie(http: aiohttp.ClientSession) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)


def repeating(block: bytes, total: int) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = block[:left]
        left -= len(piece)
        yield piece


def sha256_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
