"""The tus 1.0.0 endpoints of the submit page's resumable uploads: HTTP in, a call on
`dropbox/resumable.py`, HTTP out (headers parsed by `dropbox/tus.py`).

    OPTIONS /uploads            what this server offers (no session needed)
    POST    /uploads            creation: Upload-Length, Upload-Metadata -> 201 + Location
    HEAD    /uploads/{id}       Upload-Offset: every byte the server holds for the upload
    PATCH   /uploads/{id}       application/offset+octet-stream from Upload-Offset on
    DELETE  /uploads/{id}       termination

Every request but OPTIONS needs the logged-in session's cookie and its CSRF token in the
`X-CSRF-Token` header (403 otherwise); an upload of another session is a 404, like one that
never existed, expired, or was lost with a restart. A PATCH takes an upload slot like a form
submission (503 when busy), waits at most the body idle deadline for each read (408), and keeps
everything that arrived before a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError

from dropbox import pages
from dropbox.intake import READ_CHUNK, LimitExceededError
from dropbox.load import answer_and_close
from dropbox.resumable import ResumableUploads, Upload, UploadInfo
from dropbox.sessions import Session
from dropbox.store import DiskReserveError
from dropbox.tus import (
    CSRF_HEADER,
    OFFSET_CONTENT_TYPE,
    TusError,
    check_version,
    common_headers,
    http_date,
    options_headers,
    parse_length,
    parse_metadata,
    parse_size,
)
from keys.errors import BusyError

UPLOADS_ROUTE = "tus-uploads"
UPLOAD_ROUTE = "tus-upload"
RETRY_AFTER_SECONDS = 10

TusHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application) -> None:
    app.router.add_route("OPTIONS", "/uploads", options, name=UPLOADS_ROUTE)
    app.router.add_post("/uploads", create)
    app.router.add_route("OPTIONS", "/uploads/{upload_id}", options, name=UPLOAD_ROUTE)
    app.router.add_route("HEAD", "/uploads/{upload_id}", head)
    app.router.add_patch("/uploads/{upload_id}", patch)
    app.router.add_delete("/uploads/{upload_id}", delete)


def endpoint(request: web.Request) -> str:
    """The creation URL, for the submit page's `data-endpoint`."""
    return str(request.app.router[UPLOADS_ROUTE].url_for())


def _tus(handler: TusHandler) -> TusHandler:
    """Protocol refusals as bare statuses with the tus headers (never an HTML page); a refused
    PATCH closes its connection rather than read a body nobody wants."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except TusError as error:
            status, extra = error.status, {}
            if status == 412:
                extra["Tus-Version"] = "1.0.0"
        except BusyError:
            status, extra = 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
        except LimitExceededError:
            status, extra = 413, {}
        except DiskReserveError:
            status, extra = 507, {}
        response = web.Response(status=status, headers={**common_headers(), **extra})
        if request.method in ("PATCH", "POST"):
            return await answer_and_close(request, response)
        return response

    return wrapped


async def options(request: web.Request) -> web.Response:
    limits = pages.state(request).config.limits
    return web.Response(status=204, headers=options_headers(limits.max_file_bytes))


@_tus
async def create(request: web.Request) -> web.Response:
    session = _session(request)
    app_state = pages.state(request)
    length = parse_length(request.headers, app_state.config.limits.max_file_bytes)
    info = UploadInfo.from_metadata(parse_metadata(request.headers.get("Upload-Metadata")))
    if request.content_length or request.headers.get("Transfer-Encoding"):
        raise TusError(400, "creation with upload is not offered")
    upload = await _uploads(request).create(
        session.key, length, info, app_state.keyring.active_recipients(), pages.now())
    location = request.app.router[UPLOAD_ROUTE].url_for(upload_id=upload.id)
    return web.Response(status=201, headers={**_state_headers(upload), "Location": str(location)})


@_tus
async def head(request: web.Request) -> web.Response:
    upload = _upload(request, _session(request))
    async with _hold(request, upload):
        return web.Response(status=200, headers=_state_headers(upload))


@_tus
async def patch(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    upload = _upload(request, session)
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise TusError(415, "PATCH bodies are application/offset+octet-stream")
    offset = parse_size(request.headers.get("Upload-Offset"), "Upload-Offset")
    if offset + (request.content_length or 0) > upload.length:
        raise TusError(413, "the body goes past Upload-Length")
    with pages.state(request).uploads.take(session.key):
        async with _hold(request, upload):
            if offset != upload.offset:
                raise TusError(409, "Upload-Offset is not the upload's offset")
            stalled = await _receive(request, upload)
    if stalled:
        return await answer_and_close(request, web.Response(status=408,
                                                            headers=_state_headers(upload)))
    return web.Response(status=204, headers=_state_headers(upload))


@_tus
async def delete(request: web.Request) -> web.Response:
    upload = _upload(request, _session(request))
    async with _hold(request, upload):
        await _uploads(request).discard(upload)
    return web.Response(status=204, headers=common_headers())


async def _receive(request: web.Request, upload: Upload) -> bool:
    """Read the body into the upload until it ends, breaks or stalls (True); whatever arrived
    is kept. Any other failure leaves the upload in an unknown state: it is discarded."""
    app_state = pages.state(request)
    idle = app_state.config.server.body_idle_timeout_seconds
    expiry = app_state.config.limits.resumable_expiry_seconds
    stalled = False
    try:
        while upload.offset < upload.length:
            try:
                async with asyncio.timeout(idle):
                    chunk = await request.content.read(READ_CHUNK)  # one age chunk at most
            except TimeoutError:
                stalled = True
                break
            except (ConnectionError, HttpProcessingError, ClientError, RuntimeError):
                # The client went (aiohttp raises RuntimeError("Connection closed.") when the
                # connection is already gone as a read begins): what arrived stays.
                break
            if not chunk:
                break
            if len(chunk) > upload.length - upload.offset:
                raise TusError(413, "the body goes past Upload-Length")
            await upload.append(chunk, pages.now(), expiry)
        if upload.offset == upload.length and upload.finished is None:
            await upload.finish()
        elif upload.writer is not None:
            await upload.writer.flush()
    except TusError:
        if upload.writer is not None:
            await upload.writer.flush()
        raise
    except BaseException:
        await _uploads(request).discard(upload)
        raise
    return stalled


def _session(request: web.Request) -> Session:
    check_version(request.headers)
    session = pages.current_session(request)
    if session is None or not session.logged_in or \
            not session.check_csrf(request.headers.get(CSRF_HEADER)):
        raise TusError(403, "a logged-in session and its CSRF token are required")
    return session


def _upload(request: web.Request, session: Session) -> Upload:
    upload = _uploads(request).find(session.key, request.match_info["upload_id"])
    if upload is None:
        raise TusError(404, "no such upload")
    return upload


def _uploads(request: web.Request) -> ResumableUploads:
    return pages.state(request).resumable


@contextlib.asynccontextmanager
async def _hold(request: web.Request, upload: Upload) -> AsyncIterator[None]:
    """Exclusive use of the upload for this request: 404 if it went meanwhile, 409 if the
    request before it did not let go in time."""
    uploads = _uploads(request)
    try:
        await uploads.acquire(upload, request.protocol)
    except LookupError:
        raise TusError(404, "no such upload") from None
    except TimeoutError:
        raise TusError(409, "the upload is busy") from None
    try:
        yield
    finally:
        uploads.release(upload)


def _state_headers(upload: Upload) -> dict[str, str]:
    remaining = max(0.0, upload.expires - pages.now())
    return {**common_headers(), "Upload-Offset": str(upload.offset),
            "Upload-Length": str(upload.length),
            "Upload-Expires": http_date(time.time() + remaining)}

