"""`amanat serve`: run the intake service until SIGTERM or SIGINT (`amanat demo` serves through
the same `serve`).

Publishing onion services is the onion package's job. When `[tor] mode` is not "none", this
module imports `onion.publish.publish_onions` when it needs it (so the service runs without stem
in "none" mode) and uses it as an async context manager, with what onion/ needs of the config:

    async with publish_onions(config.onion_settings(), app_address) as onion_urls:  # list[str]
        ...serve until a signal...

`app_address` is "http://127.0.0.1:PORT" or "unix:/path": where tor should forward to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from dropbox.config import Config, Listen, load_config
from keys.errors import ConfigError, TorError

T = TypeVar("T")
Ready = Callable[[str, list[str]], None]
# The packages whose log records may reach the log. aiohttp's and asyncio's describe clients: a
# traceback when an upload breaks, the raw bytes of a malformed request, the peer's address.
OWN_LOGGERS = ("dropbox", "onion", "keys")


@dataclass(frozen=True)
class OnionHooks:
    """What a person at the terminal hears about the onion while it comes up (`amanat demo`)."""

    bootstrap: Callable[[int, str], None] | None = None  # a launched tor's progress, summary
    # Set: when the onion cannot be published (no route to the Tor network), say why here and
    # keep serving on the local address; unset: the error ends `serve`.
    failed: Callable[[str], None] | None = None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `serve` to `amanat`."""
    serve = subparsers.add_parser("serve", help="run the intake service from a config file")
    serve.add_argument("--config", metavar="FILE",
                       required=True, type=Path, help="the TOML config file")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    def ready(address: str, onions: list[str]) -> None:
        print(f"amanat: serving on {address}", flush=True)
        for url in onions:
            print(f"amanat: onion service {url}", flush=True)

    def transfer_ready(address: str) -> None:
        print(f"amanat: transfer API on {address}", flush=True)

    return asyncio.run(serve(config, ready, transfer_ready))


async def serve(
    config: Config, ready: Ready, transfer_ready: Callable[[str], None] | None = None,
    hooks: OnionHooks = OnionHooks(),
) -> int:
    """Serve until SIGTERM or SIGINT; `ready(address, onion_urls)` is called once listening.
    With `[transfer] listen` set, the transfer API also runs on its own listener and
    `transfer_ready(address)` is called (before `ready`) once it listens."""
    # Imported here: the web and database stack take most of a second to import, and
    # `amanat --help`, `amanat keys` and `amanat onion` need neither.
    from dropbox.app import create_app
    from dropbox.runtime import Runtime

    quiet_logging()
    # One engine, store and keyring for both applications; the keys are verified here, before
    # anything listens (a keyring that does not verify, an unpinned transfer key).
    runtime = Runtime.load(config)
    app = create_app(config, runtime)
    transfer_app = None
    if config.transfer.listen is not None:
        from dropbox.transfer_api import create_transfer_app

        transfer_app = create_transfer_app(config, runtime=runtime)
    with _stop_on_signals() as stop:  # a signal during startup still ends in a clean exit
        async with runtime.opened():
            return await _serve_until(app, transfer_app, config, stop, ready, transfer_ready,
                                      hooks)


async def _serve_until(
    app: web.Application,
    transfer_app: web.Application | None,
    config: Config,
    stop: asyncio.Event,
    ready: Ready,
    transfer_ready: Callable[[str], None] | None,
    hooks: OnionHooks,
) -> int:
    from dropbox.app import start_site  # see serve(): imported only when serving

    runner, address = await start_site(app, config.server.listen, config)
    runners = [runner]
    try:
        if transfer_app is not None and config.transfer.listen is not None:
            transfer_runner, transfer_address = await start_site(
                transfer_app, config.transfer.listen, config
            )
            runners.append(transfer_runner)
            config = _with_bound_transfer_port(config, transfer_address)
            if transfer_ready is not None:
                transfer_ready(transfer_address)
        async with contextlib.AsyncExitStack() as stack:
            # Publishing can wait minutes on tor's bootstrap: a signal must still end it.
            publishing = stack.enter_async_context(_onions(config, address, hooks))
            try:
                onions = await _unless_stopped(stop, publishing)
            except TorError as exc:
                if hooks.failed is None:
                    raise
                hooks.failed(str(exc))
                onions = []
            if onions is not None:
                ready(address, onions)
                await stop.wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()
    return 0


def _with_bound_transfer_port(config: Config, address: str) -> Config:
    """With `[transfer] listen` on port 0, the port actually bound (for its onion to point to)."""
    listen = config.transfer.listen
    if listen is None or listen.unix_path is not None or listen.port != 0:
        return config
    bound = Listen(host=listen.host, port=int(address.rsplit(":", 1)[1]))
    return dataclasses.replace(config, transfer=dataclasses.replace(config.transfer, listen=bound))


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None (with `work` cancelled) if `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _onions(
    config: Config, address: str, hooks: OnionHooks
) -> AbstractAsyncContextManager[list[str]]:
    if config.tor.mode == "none":
        return _no_onions()
    try:
        from onion.publish import publish_onions  # imports stem: only when a tor is wanted
    except ImportError:
        raise ConfigError(
            f"[tor] mode = {config.tor.mode!r} needs onion publishing, which this build lacks; "
            "set mode = \"none\" (or use --no-tor) and publish the onion service yourself"
        ) from None
    manager: AbstractAsyncContextManager[list[str]] = publish_onions(
        config.onion_settings(), address, on_bootstrap=hooks.bootstrap)
    return manager


@contextlib.asynccontextmanager
async def _no_onions() -> AsyncIterator[list[str]]:
    yield []


class _OwnRecordsOnly(logging.Filter):
    """Let through only Amanat's own records, and never with a traceback: a record's time is
    not printed, but whatever writes the log (the journal) stamps each line with the moment, so
    nothing a client causes may be logged (issue 10, "A seized disk shows days")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in OWN_LOGGERS:
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_logging() -> None:
    """Warnings and errors of Amanat's own loggers to stderr, without time or traceback;
    every other library's records nowhere."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_OwnRecordsOnly())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a warning raised while serving a client: dropped likewise


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
