"""Bounds on what slow, stalled or idle clients can hold: connections, uploads and memory.

An attacker's cheapest weapon is a connection that does nothing: it costs them a socket and us a
descriptor, a task and buffers. The header deadline itself is aiohttp's keep-alive timer, armed
when a connection opens and after each response (`start_site` sets `keepalive_timeout`); it
closes a connection that has not finished its request headers in time. `ConnectionGuard` keeps
the number of open connections under a cap that fits the process's open-file limit, so that
stalled connections can never take the last descriptor before their deadline: beyond the cap the
connection that has waited longest for its headers is closed. `UploadSlots` caps the submissions
being received at once, for all sources and per session. Whenever load is shed, the service logs
it once per kind, without anything about who or what (`shed`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import resource
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from keys.errors import BusyError

logger = logging.getLogger(__name__)

# Descriptors kept free of connections: the database, the log, the store's directories, and
# one open ciphertext file per part of each upload being received.
BASE_RESERVED_FDS = 64

_shed_kinds: set[str] = set()


def shed(kind: str) -> None:
    """Log, once per process and kind, that load is being shed (never who, what or when)."""
    if kind not in _shed_kinds:
        _shed_kinds.add(kind)
        logger.warning("shedding load: %s", kind)


def connection_limit(configured: int, reserved: int) -> int:
    """The open-connection cap: the configured one, lowered so that connections never take the
    descriptors the service needs for its own files (never below half of the open-file limit)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, max(soft // 2, soft - reserved)))


class ConnectionGuard:
    """Keeps open connections at most `limit`, closing the oldest that has not yet sent a
    request's headers when a new one would go over (the new one itself if all others have)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[RequestHandler, None] = {}  # in the order they opened
        self._waiting: dict[RequestHandler, None] = {}  # opened, no request headers yet

    def attach(self, server: web.Server) -> None:
        """Follow `server`'s connections. aiohttp offers no hook for a new connection or a new
        request, so the server's own notifications are wrapped; call this before any site
        starts (each connection copies the request factory when it opens)."""
        made, lost, factory = server.connection_made, server.connection_lost, \
            server.request_factory

        def connection_made(handler: RequestHandler, transport: Any) -> None:
            made(handler, transport)
            self._opened(handler)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._open.pop(handler, None)
            self._waiting.pop(handler, None)
            lost(handler, exc)

        def request_factory(*args: Any) -> web.BaseRequest:
            self._waiting.pop(args[2], None)  # (message, payload, protocol, writer, task)
            return factory(*args)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _opened(self, handler: RequestHandler) -> None:
        self._open[handler] = None
        self._waiting[handler] = None
        if len(self._open) <= self.limit:
            return
        oldest = next(iter(self._waiting))
        self._open.pop(oldest, None)
        self._waiting.pop(oldest, None)
        oldest.force_close()
        shed("too many open connections; closing those that have not sent a request")


class UploadSlots:
    """At most `total` uploads at once, and `per_session` for one session; `take` raises
    BusyError at once instead of queueing (a queued upload would still hold its connection)."""

    def __init__(self, total: int, per_session: int) -> None:
        self.total = total
        self.per_session = per_session
        self._by_session: dict[str, int] = {}
        self.active = 0

    @contextlib.contextmanager
    def take(self, session_key: str) -> Iterator[None]:
        mine = self._by_session.get(session_key, 0)
        if self.active >= self.total or mine >= self.per_session:
            shed("too many uploads at once; refusing new ones")
            raise BusyError("too many uploads at once")
        self.active += 1
        self._by_session[session_key] = mine + 1
        try:
            yield
        finally:
            self.active -= 1
            left = self._by_session.pop(session_key) - 1
            if left:
                self._by_session[session_key] = left
            if self.active == 0:
                release_memory()


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send `response`, then close the connection without reading the rest of the body.

    aiohttp otherwise lingers for 10 s reading (and buffering, up to a few hundred KiB per
    connection) the body of a request it refused: a burst of refused uploads would fill memory
    with bytes nobody wants. The client still reads the answer: it is in its receive queue before
    the close, and a reset does not discard it."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them otherwise, so the memory
    a burst of uploads took would stay taken after the burst)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
