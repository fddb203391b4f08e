"""The transfer API: a separate aiohttp application on its own listener (`[transfer] listen`).

It is meant to sit behind a client-authorized onion service that only the online workstation
knows, never behind the public one. Every request must also be signed with the transfer
credential of an unrevoked keyring investigator (keys/transfer_auth.py, docs/format.md section 6;
never with an offline key); the keyring is re-read and re-verified on every request, so a
revocation takes effect without a restart.

    GET|POST /v1/pull   a signed transfer bundle of every submission this investigator has not
                        acknowledged and the policy has not yet released (streamed)
    GET      /v1/status counts of what a pull would carry, replies waiting for sources, how
                        many submissions on the server this investigator acknowledged, and the
                        ids of this investigator's replies their sources deleted (never when)
    POST     /v1/ack    {"submission_ids": [...]}: this investigator holds these; retention starts
                        once the organization's policy ([transfer] acknowledgements) is met
    POST     /v1/push   a reply bundle signed by the same investigator's offline key

Answers are JSON (the bundle aside); refusals are {"error": CODE, "message": TEXT}. Like the
public app: security headers, no Server header, no access log, no addresses stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from aiohttp import web
from nacl.signing import SigningKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import db, periodic, transfer
from dropbox.config import Config
from dropbox.intake import intake_limits
from dropbox.runtime import Runtime
from dropbox.security import set_security_headers
from dropbox.server_keys import KeyringFile
from dropbox.store import DiskReserveError, Store
from keys.bundle import BundleError, read_bundle, reply_key_lookup
from keys.errors import (
    BusyError,
    ConfigError,
    InputError,
    KeyringError,
    StorageError,
    TransferError,
)
from keys.keyring import Investigator, Keyring
from keys.transfer_auth import (
    RequestAuthError,
    RequestVerifier,
    SignedRequest,
    check_body,
    transfer_key_owner,
)

logger = logging.getLogger(__name__)

MAX_ACK_BODY = 1024 * 1024
MAX_PUSH_BODY = 64 * 1024 * 1024
PURGE_INTERVAL_SECONDS = 3600.0
STREAM_CHUNK = 256 * 1024
STREAM_QUEUE_CHUNKS = 8

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class TransferState:
    config: Config
    store: Store
    instance: str
    signing_key: SigningKey
    keyring_file: KeyringFile
    keyring: Keyring  # as verified for the request being served
    verifier: RequestVerifier = field(init=False)
    clock: Callable[[], float] = time.time
    db: async_sessionmaker[AsyncSession] | None = None

    def __post_init__(self) -> None:
        self.verifier = RequestVerifier(lambda key: transfer_key_owner(self.keyring, key))

    @property
    def policy(self) -> transfer.AckPolicy:
        settings = self.config.transfer
        return transfer.AckPolicy(settings.acknowledgements, settings.retention_days)

    @property
    def maker(self) -> async_sessionmaker[AsyncSession]:
        assert self.db is not None, "the database opens at application startup"
        return self.db


STATE = web.AppKey("transfer_state", TransferState)
INVESTIGATOR = web.RequestKey("investigator", Investigator)
SIGNED = web.RequestKey("signed_request", SignedRequest)


def create_transfer_app(
    config: Config, clock: Callable[[], float] = time.time, runtime: Runtime | None = None
) -> web.Application:
    """The transfer application. Raises ConfigError or KeyringError before anything listens:
    no listener configured, the same listener as the public app, or a transfer key the keyring
    does not pin. Without a shared `runtime` (see dropbox/runtime.py) it opens its own."""
    listen = config.transfer.listen
    if listen is None:
        raise ConfigError("[transfer] listen is not set")
    if listen == config.server.listen and listen.port != 0:
        raise ConfigError("[transfer] listen must differ from [server] listen (never the public)")
    owned = runtime is None
    runtime = runtime or Runtime.load(config)
    keyring = runtime.keyring.verified()
    state = TransferState(
        config=config,
        store=runtime.store,
        instance=transfer.instance_id(runtime.instance_salt),
        signing_key=transfer.load_transfer_key(config.transfer.signing_key, keyring),
        keyring_file=runtime.keyring,
        keyring=keyring,
        clock=clock,
    )
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[STATE] = state
    app.on_response_prepare.append(set_security_headers)
    app.cleanup_ctx.append(functools.partial(_database, runtime=runtime, owned=owned))
    app.cleanup_ctx.append(_periodic_purge)
    app.router.add_route("GET", "/v1/pull", pull)
    app.router.add_route("POST", "/v1/pull", pull)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/ack", ack)
    app.router.add_post("/v1/push", push)
    return app


# --- middlewares ------------------------------------------------------------------------------


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as JSON with a stable code; internals never leave the server."""
    try:
        return await handler(request)
    except RequestAuthError as exc:
        return json_error(exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except KeyringError as exc:
        logger.error("the keyring no longer verifies: %s", exc)
        return json_error(503, "keyring_unusable", "the server's keyring does not verify")
    except DiskReserveError:
        return json_error(507, "disk_full", "the server has no room for this")
    except BusyError:  # no turn to write in time (db.write_turn): nothing was done
        return json_error(503, "busy", "the server is busy; try again in a minute")
    except (BundleError, transfer.ReplyRefusedError) as exc:
        return json_error(400, "reply_refused", str(exc))
    except (TransferError, InputError) as exc:
        return json_error(400, "bad_request", str(exc))
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:
        resource = request.match_info.route.resource  # the route, never the path a client sent
        logger.error("unhandled %s on %s %s", type(exc).__name__, request.method,
                     resource.canonical if resource else "?")
        return json_error(500, "internal_error", "the server could not finish this request")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse anything an unrevoked investigator did not sign, before reading its body."""
    state = request.app[STATE]
    state.keyring = await asyncio.to_thread(state.keyring_file.verified)
    investigator, signed = state.verifier.verify(
        request.method, request.raw_path, request.headers, state.clock()
    )
    request[INVESTIGATOR] = investigator
    request[SIGNED] = signed
    return await handler(request)


async def read_signed_body(request: web.Request, limit: int) -> bytes:
    """The body, at most `limit` bytes, checked against its signed SHA-256."""
    digest = hashlib.sha256()
    parts, total = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
        digest.update(chunk)
        parts.append(chunk)
    check_body(request[SIGNED], digest.hexdigest())
    return b"".join(parts)


# --- handlers ---------------------------------------------------------------------------------


async def pull(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    await read_signed_body(request, 0)
    async with state.maker() as session:
        planned = await transfer.build_transfer(
            session, state.instance, db.today(), request[INVESTIGATOR].label,
            limits=intake_limits(state.config.limits),
        )
    filename = f"amanat-{planned.manifest.bundle_id}.tar"
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    response.content_length = planned.size
    await response.prepare(request)

    def produce(out: BinaryIO) -> None:
        transfer.write_transfer_bundle(out, planned, state.store, state.signing_key)

    try:
        await stream_from_thread(response, produce)
    except (BundleError, StorageError, OSError) as exc:
        # Headers are gone: the only honest signal left is a short body. Drop the connection so
        # the client sees fewer bytes than Content-Length (and the bundle would not verify).
        logger.error("pull aborted: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def ack(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_signed_body(request, MAX_ACK_BODY)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise transfer.AckRefusedError("the body is not JSON") from None
    ids = transfer.parse_ack_ids(document)
    result = await transfer.acknowledge_submissions(
        state.maker,
        state.store,
        ids,
        request[INVESTIGATOR].label,
        state.keyring,
        state.policy,
        db.today(),
    )
    return web.json_response(
        {
            "acknowledged": result.acknowledged,
            "already_acknowledged": result.already_acknowledged,
            "unknown": result.unknown,
            "retention_started": result.retention_started,
            "deleted": result.deleted,
            "retention_days": state.config.transfer.retention_days,
        }
    )


async def status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await read_signed_body(request, 0)
    async with state.maker() as session:
        counts = await transfer.waiting_status(session, request[INVESTIGATOR].label)
    return web.json_response(counts.as_json())


async def push(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_signed_body(request, MAX_PUSH_BODY)
    signer = request[INVESTIGATOR]
    # Only the investigator who signed the request may have signed the bundle.
    lookup = reply_key_lookup({signer.label: signer.verify_key})
    bundle = await asyncio.to_thread(read_bundle, io.BytesIO(body), lookup)
    result = await transfer.store_replies(
        state.maker, state.store, bundle, state.instance, db.today()
    )
    return web.json_response({"stored": result.stored, "already_stored": result.already_stored,
                              "deleted_by_source": result.deleted_by_source})


# --- streaming a blocking writer --------------------------------------------------------------


class _Cancelled(TransferError):
    """The response went away: stop producing."""


class _QueueWriter:
    """A write-only stream for a worker thread whose writes become chunks on an asyncio queue;
    the bounded queue keeps memory at a few chunks whatever the bundle size."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self.loop, self.queue = loop, queue
        self.cancelled = threading.Event()
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= STREAM_CHUNK:
            self.flush_chunk()
        return len(data)

    def flush_chunk(self) -> None:
        if self.buffer:
            self._put(bytes(self.buffer))
            self.buffer.clear()

    def _put(self, item: bytes | None) -> None:
        if self.cancelled.is_set():
            raise _Cancelled
        asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop).result()


async def stream_from_thread(
    response: web.StreamResponse, produce: Callable[[BinaryIO], None]
) -> None:
    """Run `produce(writer)` in a thread and send what it writes; re-raise its error (after
    prepare, aiohttp then drops the connection, so the client sees a short, refused body)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=STREAM_QUEUE_CHUNKS)
    writer = _QueueWriter(loop, queue)

    def run() -> None:
        try:
            produce(cast(BinaryIO, writer))  # write() is all a bundle writer calls
            writer.flush_chunk()
        finally:
            with contextlib.suppress(_Cancelled):
                writer._put(None)

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
    except BaseException:
        writer.cancelled.set()
        while not queue.empty():  # unblock a producer waiting for room
            queue.get_nowait()
        with contextlib.suppress(_Cancelled, Exception):
            await worker
        raise
    await worker


# --- lifecycle --------------------------------------------------------------------------------


async def _database(
    app: web.Application, *, runtime: Runtime, owned: bool
) -> AsyncIterator[None]:
    """The database, through the shared runtime (opened by `serve`) or one of the app's own
    (which leaves the sweeps to the source app: only it knows when no upload is in flight)."""
    state = app[STATE]
    async with runtime.opened(sweep=False) if owned else contextlib.nullcontext(runtime):
        state.db = runtime.maker
        try:
            yield
        finally:
            state.db = None


async def _periodic_purge(app: web.Application) -> AsyncIterator[None]:
    """At startup and every hour: start the retention of submissions whose acknowledgements now
    meet the policy (a revocation can complete one), then delete acknowledged ciphertexts whose
    retention ran out. A keyring that does not load skips the first step only."""
    state = app[STATE]

    async def settle() -> None:
        try:
            state.keyring = await asyncio.to_thread(state.keyring_file.verified)
            async with db.writing(state.maker) as session:
                await transfer.settle_acknowledgements(
                    session, state.keyring, state.policy, db.today()
                )
        except (StorageError, KeyringError, ConfigError, BusyError) as exc:
            logger.error("acknowledgement policy check failed: %s", type(exc).__name__)

    async def purge() -> None:
        await settle()
        try:
            deleted = await transfer.purge_due(state.maker, state.store, db.today())
            if deleted:
                logger.info("deleted %d acknowledged ciphertexts after retention", deleted)
        except (StorageError, BusyError) as exc:  # the next round tries again
            logger.error("retention purge failed: %s", type(exc).__name__)

    async with periodic.every(PURGE_INTERVAL_SECONDS, purge, at_start=True):
        yield
