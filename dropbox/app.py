"""The application factory: `create_app(config)` builds the source-facing aiohttp application,
and `start_site` serves it on the configured loopback address or unix socket.

Keys are read and verified here (dropbox/runtime.py), before anything listens: a server whose
keyring does not verify against the pinned organization key refuses to start. Database
initialisation and the sweeps of leftovers from a crash run at startup, before the first request
is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from dropbox import db, handlers_source, handlers_tus, pages, periodic
from dropbox.cluster import (
    CLOCK_SKEW_SECONDS,
    SealedSessions,
    load_cluster_key,
    shared_offset,
    subkey,
)
from dropbox.config import Config, LimitsConfig, Listen, ServerConfig
from dropbox.form_tokens import FormTokens, PendingCodenames
from dropbox.load import BASE_RESERVED_FDS, ConnectionGuard, UploadSlots, connection_limit
from dropbox.questionnaire import load_questionnaire
from dropbox.resumable import ResumableUploads
from dropbox.runtime import Runtime
from dropbox.security import (
    HardenedRequest,
    error_middleware,
    session_middleware,
    set_security_headers,
)
from dropbox.sessions import KeyDeriver, LoginLimiter, SessionStore
from dropbox.store import coarsen_times
from keys.errors import ConfigError

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SMALL_FORM_BYTES = 64 * 1024  # login, confirm, logout: a few hundred bytes in practice
SESSION_SWEEP_SECONDS = 60.0
# Request line and header limits (aiohttp's defaults are 8190 bytes and 128 headers); Tor
# Browser sends a dozen short headers.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 64
READ_BUFSIZE = 64 * 1024
"""aiohttp's body buffer per connection (its default is 256 KiB): it stops reading a socket once
twice this waits unread. Reads take one age chunk (64 KiB, dropbox/intake.py READ_CHUNK), so
this keeps one read ready and bounds what any connection's body holds to about 128 KiB plus one
socket read, instead of half a MiB (issue 15: memory per open upload)."""


def create_app(config: Config, runtime: Runtime | None = None) -> web.Application:
    """The source-facing application. Raises KeyringError (the keyring does not verify) or
    ConfigError (a key file is missing or unusable) before anything listens. Without a shared
    `runtime` (see dropbox/runtime.py) it opens its own."""
    owned = runtime is None
    runtime = runtime or Runtime.load(config)
    if not runtime.keyring.current().active_recipients():
        raise ConfigError("the keyring has no active investigator: nobody could read submissions")
    app = web.Application(
        middlewares=[session_middleware, error_middleware],
        client_max_size=SMALL_FORM_BYTES,
    )
    app[pages.STATE] = _app_state(config, runtime)
    app.cleanup_ctx.append(functools.partial(_database, runtime=runtime, owned=owned))
    app.on_response_prepare.append(set_security_headers)
    app.cleanup_ctx.append(_session_expiry)
    app.cleanup_ctx.append(_daily_maintenance)
    app.cleanup_ctx.append(_resumable_expiry)
    handlers_source.add_routes(app)
    handlers_tus.add_routes(app)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    return app


def _app_state(config: Config, runtime: Runtime) -> pages.AppState:
    forms, pending, sealed = _shared_keys(config)
    return pages.AppState(
        config=config,
        keyring_file=runtime.keyring,
        instance_salt=runtime.instance_salt,
        store=runtime.store,
        sessions=SessionStore(
            idle_timeout=config.server.idle_timeout_minutes * 60.0,
            max_sessions=config.server.max_sessions,
        ),
        deriver=KeyDeriver(runtime.instance_salt, config.keys.profile,
                           config.keys.max_concurrent_argon2, config.keys.argon2_queue),
        limiter=LoginLimiter(config.keys.login_attempts_per_session_per_minute,
                             config.server.max_anonymous_clients, config.server.cluster_nodes),
        questionnaire=load_questionnaire(config.i18n.questionnaire),
        uploads=UploadSlots(config.limits.max_concurrent_uploads,
                            config.limits.max_concurrent_uploads_per_session),
        resumable=ResumableUploads(runtime.store, config.limits),
        forms=forms, pending=pending, sealed=sealed,
    )


def _shared_keys(config: Config) -> tuple[FormTokens, PendingCodenames, SealedSessions | None]:
    """On the nodes of a cluster (`[server] session_key_file`), the keys and clock every node
    shares: sealed sessions, form tokens and pending codenames (dropbox/cluster.py). Alone, the
    form keys are this process's own and sessions live in its memory only."""
    idle = config.server.idle_timeout_minutes * 60.0
    if config.server.session_key_file is None:
        return FormTokens(max_age=idle), PendingCodenames(), None
    key = load_cluster_key(config.server.session_key_file)
    return (FormTokens(max_age=idle, secret=subkey(key, "form"), offset=shared_offset(key),
                       skew=CLOCK_SKEW_SECONDS),
            PendingCodenames(subkey(key, "pending")), SealedSessions(key, idle))


async def start_site(
    app: web.Application, listen: Listen, config: Config | None = None
) -> tuple[web.AppRunner, str]:
    """Serve `app` on `listen` without an access log; returns the runner and the real address
    ("http://127.0.0.1:PORT" or "unix:/path"). The header deadline and the connection cap come
    from `config` (the defaults without one)."""
    server_config = config.server if config else ServerConfig()
    limits = config.limits if config else LimitsConfig()
    # aiohttp's keep-alive timer runs from a connection's start (and from each response) until
    # its next request's headers are complete: it is the header deadline.
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES,
                           max_headers=MAX_HEADERS, read_bufsize=READ_BUFSIZE,
                           keepalive_timeout=server_config.header_timeout_seconds)
    await runner.setup()
    assert runner.server is not None
    runner.server.request_factory = functools.partial(app._make_request, _cls=HardenedRequest)
    reserved = (BASE_RESERVED_FDS + limits.max_concurrent_uploads * (limits.max_files + 1)
                + limits.max_resumable_uploads)  # each unfinished one keeps its file open
    ConnectionGuard(connection_limit(server_config.max_connections, reserved)).attach(
        runner.server)
    site: web.BaseSite
    if listen.unix_path is not None:
        site = web.UnixSite(runner, str(listen.unix_path))
    else:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    if listen.unix_path is not None:
        return runner, f"unix:{listen.unix_path}"
    server = site._server  # the bound socket tells the real port when 0 was asked for
    assert isinstance(server, asyncio.base_events.Server)
    host, port = server.sockets[0].getsockname()[:2]
    return runner, f"http://{host}:{port}"


# --- startup and cleanup ----------------------------------------------------------------------


async def _database(
    app: web.Application, *, runtime: Runtime, owned: bool
) -> AsyncIterator[None]:
    """The database, through the shared runtime (opened by `serve`) or one of the app's own."""
    app_state = app[pages.STATE]
    async with runtime.opened() if owned else contextlib.nullcontext(runtime):
        app_state.db = runtime.maker
        try:
            yield
        finally:
            app_state.db = None
            app_state.deriver.close()


async def _session_expiry(app: web.Application) -> AsyncIterator[None]:
    """Drop idle sessions (and the reply identities in them) even if nobody comes back, and the
    login counters of visitors who stopped trying."""
    app_state = app[pages.STATE]

    async def expire() -> None:
        app_state.sessions.expire(pages.now())
        app_state.limiter.expire(pages.now())

    async with periodic.every(SESSION_SWEEP_SECONDS, expire):
        yield


async def _resumable_expiry(app: web.Application) -> AsyncIterator[None]:
    """Delete resumable uploads past their expiry, checked often enough that none outlives it
    by more than a quarter; at shutdown, the temporary files of unfinished ones (their keys die
    with the process)."""
    uploads = app[pages.STATE].resumable

    async def expire() -> None:
        await uploads.expire(pages.now())

    interval = min(SESSION_SWEEP_SECONDS, uploads.expiry / 4)
    try:
        async with periodic.every(interval, expire):
            yield
    finally:
        await uploads.close()


async def _daily_maintenance(app: web.Application) -> AsyncIterator[None]:
    """At startup and every midnight UTC: the store's and the database files' times back to
    their day (which sets every change time to this moment, the same each day) and the
    database's write-ahead log truncated, so a seized disk shows days, never moments."""
    app_state = app[pages.STATE]

    async def maintain() -> None:
        try:
            if app_state.db is not None:
                async with db.write_turn(app_state.db), app_state.db() as dbs:
                    await db.truncate_journal(dbs)
            files = db.sqlite_files(app_state.config.storage.database_url)
            await asyncio.to_thread(coarsen_times, [*files, *(f.parent for f in files[:1])])
            await asyncio.to_thread(app_state.store.coarsen_times)
        except Exception as exc:  # the next day tries again; the service keeps serving
            logger.error("daily maintenance failed: %s", type(exc).__name__)

    async with periodic.daily(maintain, at_start=True):
        yield
