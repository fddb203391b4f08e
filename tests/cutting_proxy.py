"""A TCP proxy on 127.0.0.1 that breaks connections on purpose, as a Tor circuit does: once the
client has sent more than each of the given byte counts in all, the connection carrying that
byte is cut in both directions, without a goodbye (RST)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    target_port: int
    cut_at: list[int]  # client->server byte counts, ascending
    sent: int = 0
    cuts: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # first line's method -> count
    url: str = ""

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool, peer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(64 * 1024):
                if upstream:
                    method = data.split(b" ", 1)[0]
                    if method in (b"GET", b"POST", b"PATCH", b"HEAD", b"DELETE"):
                        key = method.decode()
                        self.requests[key] = self.requests.get(key, 0) + 1
                    self.sent += len(data)
                    if self.cut_at and self.sent >= self.cut_at[0]:
                        self.cut_at.pop(0)
                        self.cuts += 1
                        writer.transport.abort()
                        peer.transport.abort()
                        return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(client_r, server_w, True, client_w),
                             self._pipe(server_r, client_w, False, server_w))


@contextlib.asynccontextmanager
async def cutting_proxy(target_url: str, cut_at: list[int]) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(int(target_url.rsplit(":", 1)[1]), sorted(cut_at))
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        await server.wait_closed()
