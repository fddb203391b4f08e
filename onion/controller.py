"""The one façade around stem: attach to a running tor or launch one, and talk to it.

stem is synchronous and thread-safe, so every call goes through `asyncio.to_thread`; stem's
exceptions are translated into `onion.errors` at this boundary and never escape it. Nothing else
in Amanat imports stem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import stem
import stem.connection
import stem.control

from onion.errors import (
    TorAuthError,
    TorCommandError,
    TorConnectError,
    TorLaunchError,
    TorNotFoundError,
    TorTimeoutError,
)

T = TypeVar("T")

# Unix socket paths longer than this do not fit in sockaddr_un on Linux (108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
RELOAD_EVENT_TIMEOUT = 10.0


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn any stem exception raised inside the block into an `onion.errors` exception."""
    try:
        yield
    except stem.connection.AuthenticationFailure as exc:
        raise TorAuthError(f"{what}: tor refused our authentication ({exc})") from exc
    except stem.SocketError as exc:
        raise TorConnectError(f"{what}: the control connection failed ({exc})") from exc
    except stem.Timeout as exc:
        raise TorTimeoutError(f"{what}: tor did not answer in time") from exc
    except stem.OperationFailed as exc:
        raise TorCommandError(f"{what}: tor answered {exc.code} {exc.message}") from exc
    except stem.ControllerError as exc:
        raise TorCommandError(f"{what}: {exc}") from exc


@dataclass(frozen=True)
class BootstrapState:
    """Where tor is in its bootstrap (GETINFO status/bootstrap-phase)."""

    progress: int
    tag: str
    summary: str

    @classmethod
    def parse(cls, line: str) -> BootstrapState:
        """Parse `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`."""
        fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        try:
            progress = int(fields.get("PROGRESS", ""))
        except ValueError as exc:
            raise TorCommandError(f"unexpected bootstrap status from tor: {line!r}") from exc
        return cls(progress, fields.get("TAG", ""), fields.get("SUMMARY", "").strip('"'))

    @property
    def done(self) -> bool:
        return self.progress >= 100


@dataclass(frozen=True)
class HsDescEvent:
    """One HS_DESC event, detached from stem's types."""

    action: str  # UPLOAD, UPLOADED, REQUESTED, RECEIVED, FAILED, ...
    address: str  # the onion address without ".onion"
    directory: str | None
    reason: str | None


def _probe(socket_path: Path | None, host: str, port: int | None, where: str) -> None:
    """Fail early, and cleanly, if nothing listens: stem leaks its socket object on a failed
    connect (a ResourceWarning later), so it is only called once a connection has worked."""
    try:
        if socket_path is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(5)
                probe.connect(str(socket_path))
        else:
            with socket.create_connection((host, port or 0), timeout=5):
                pass
    except OSError as exc:
        raise TorConnectError(f"nothing answers at tor's control {where}: {exc.strerror}") from None


class TorController:
    """An authenticated control connection to one tor: from `connect()` or `launch_tor()`."""

    def __init__(self, controller: stem.control.Controller) -> None:
        self._ctl = controller

    @classmethod
    async def connect(
        cls,
        *,
        socket_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
    ) -> TorController:
        """Attach to a running tor by control socket or control port; cookie or password auth."""
        if socket_path is None and port is None:
            raise TorConnectError("no control socket or control port configured for tor")
        where = str(socket_path) if socket_path is not None else f"{host}:{port}"
        await asyncio.to_thread(_probe, socket_path, host, port, where)

        def attach() -> stem.control.Controller:
            with translated(f"connecting to tor's control interface at {where}"):
                if socket_path is not None:
                    ctl = stem.control.Controller.from_socket_file(str(socket_path))
                else:
                    ctl = stem.control.Controller.from_port(address=host, port=port)
                try:
                    ctl.authenticate(password=password)
                except BaseException:
                    ctl.close()
                    raise
                return ctl

        return cls(await asyncio.to_thread(attach))

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            with translated(what):
                return fn(*args, **kwargs)

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        await asyncio.to_thread(self._ctl.close)

    async def __aenter__(self) -> TorController:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def version(self) -> str:
        return str(await self._call("asking tor's version", self._ctl.get_info, "version"))

    async def get_info(self, key: str) -> str:
        return str(await self._call(f"GETINFO {key}", self._ctl.get_info, key))

    async def msg(self, command: str) -> list[str]:
        """Send a raw control command; return the reply lines' text, raise if tor refused it."""
        reply = await self._call(command.split(" ", 1)[0], self._ctl.msg, command)
        if not reply.is_ok():
            code, _, text = reply.content()[0]
            raise TorCommandError(f"tor refused {command.split(' ', 1)[0]}: {code} {text}")
        return [str(line) for line in reply]

    async def bootstrap_state(self) -> BootstrapState:
        return BootstrapState.parse(await self.get_info("status/bootstrap-phase"))

    async def wait_bootstrapped(
        self, timeout: float = 120.0,
        on_progress: Callable[[BootstrapState], None] | None = None,
    ) -> BootstrapState:
        """Poll until tor reports 100%; raise `TorTimeoutError` with the last state otherwise.
        `on_progress` hears each new state (for a person watching tor come up)."""
        deadline = time.monotonic() + timeout
        last: BootstrapState | None = None
        while True:
            state = await self.bootstrap_state()
            if on_progress is not None and state != last:
                on_progress(state)
            last = state
            if state.done:
                return state
            if time.monotonic() > deadline:
                raise TorTimeoutError(
                    f"tor did not finish bootstrapping in {timeout:.0f} s "
                    f"(stuck at {state.progress}%: {state.summary})"
                )
            await asyncio.sleep(0.2)

    async def socks_listeners(self) -> list[tuple[str, int]]:
        """The SOCKS listeners tor actually bound (resolves `auto` ports)."""
        raw = await self.get_info("net/listeners/socks")
        found = []
        for item in raw.split():
            host, _, port = item.strip('"').rpartition(":")
            if port.isdigit():
                found.append((host.strip("[]"), int(port)))
        return found

    async def onion_ids(self, detached: bool) -> list[str]:
        """Service ids of ephemeral onions: detached ones, or those of this connection."""
        key = "onions/detached" if detached else "onions/current"
        raw = await self.get_info(key)
        return [line.strip() for line in raw.splitlines() if line.strip()]

    async def hidden_service_conf(self) -> dict[str, dict[str, list[str]]]:
        """The torrc-configured onion services: {HiddenServiceDir: {option: [values]}}.

        Parsed here because stem's parser rejects `HiddenServicePort 80 unix:/path`.
        """
        services: dict[str, dict[str, list[str]]] = {}
        current: dict[str, list[str]] | None = None
        for line in await self.msg("GETCONF HiddenServiceOptions"):
            key, sep, value = line.partition("=")
            if not sep:
                continue
            value = value.strip('"')
            if key == "HiddenServiceDir":
                current = services.setdefault(value, {})
            elif current is not None:
                current.setdefault(key, []).append(value)
        return services

    async def reload(self) -> None:
        """SIGNAL RELOAD: re-read torrc and `authorized_clients/`.

        Returns only once stem has handled the SIGNAL event that the reload causes. stem reacts
        to it on its event thread, under the socket's send lock, and `close()` holds that lock
        while it joins that thread: closing in between (as a command that reloads and exits
        does) deadlocks. Our listener runs after stem's own one, so when it fires that is done.
        """
        handled = threading.Event()

        def listener(event: Any) -> None:  # runs on stem's event thread
            if event.signal == stem.Signal.RELOAD:
                handled.set()

        signal_events = stem.control.EventType.SIGNAL
        await self._call("SETEVENTS SIGNAL", self._ctl.add_event_listener, listener, signal_events)
        try:
            await self._call("SIGNAL RELOAD", self._ctl.signal, stem.Signal.RELOAD)
            if not await asyncio.to_thread(handled.wait, RELOAD_EVENT_TIMEOUT):
                raise TorTimeoutError("tor did not report the reload it was asked for")
        finally:
            with contextlib.suppress(TorConnectError, TorCommandError):
                await self._call("SETEVENTS", self._ctl.remove_event_listener, listener)

    @contextlib.asynccontextmanager
    async def hs_desc_events(self) -> AsyncIterator[asyncio.Queue[HsDescEvent]]:
        """Subscribe to HS_DESC events for the duration of the block."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[HsDescEvent] = asyncio.Queue()

        def listener(event: Any) -> None:  # runs on stem's event thread
            item = HsDescEvent(
                str(event.action), str(event.address), event.directory, event.reason
            )
            loop.call_soon_threadsafe(queue.put_nowait, item)

        hs_desc = stem.control.EventType.HS_DESC
        await self._call("SETEVENTS HS_DESC", self._ctl.add_event_listener, listener, hs_desc)
        try:
            yield queue
        finally:
            with contextlib.suppress(TorConnectError, TorCommandError):
                await self._call("SETEVENTS", self._ctl.remove_event_listener, listener)


# --- launching our own tor (demo mode) -----------------------------------------------------------


def find_tor(binary: str | None = None) -> str:
    found = shutil.which(binary or "tor")
    if found is None:
        raise TorNotFoundError(f"tor is not installed (looked for {binary or 'tor'!r} on PATH)")
    return found


def render_torrc(options: Sequence[tuple[str, str]]) -> str:
    """Render `(option, value)` pairs as torrc text; refuses values that would inject lines."""
    lines = []
    for key, value in options:
        if "\n" in value or "\r" in value or not re.fullmatch(r"_*[A-Za-z0-9]+", key):
            raise TorLaunchError(f"refusing an unsafe torrc line for {key!r}")
        lines.append(f"{key} {value}")
    return "\n".join(lines) + "\n"


@dataclass
class LaunchedTor:
    """A tor process we started in its own session; `stop()` ends it by PID."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    control_socket: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (tor exits at once, even as a relay), then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait()


def launch_options(data_dir: Path, socks_port: str) -> list[tuple[str, str]]:
    """The torrc of a tor that Amanat launches itself, with everything inside `data_dir`."""
    return [
        ("DataDirectory", str(data_dir)),
        ("ControlSocket", str(data_dir / "control.sock")),
        ("CookieAuthentication", "1"),
        ("CookieAuthFile", str(data_dir / "control_auth_cookie")),
        ("SocksPort", socks_port),
        ("SafeLogging", "1"),
        ("Log", f"notice file {data_dir / 'notice.log'}"),
        # stem answers this with TAKEOWNERSHIP on our first control connection: tor then exits
        # as soon as that connection closes, including when this process dies by SIGKILL.
        ("__OwningControllerProcess", str(os.getpid())),
    ]


async def launch_tor(
    data_dir: Path,
    *,
    tor_binary: str | None = None,
    socks_port: str = "auto",
    extra_options: Sequence[tuple[str, str]] = (),
    timeout: float = 30.0,
    on_spawn: Callable[[LaunchedTor], None] | None = None,
) -> tuple[LaunchedTor, TorController]:
    """Start tor with its own DataDirectory and attach to it through its control socket.

    The returned controller owns the process: closing it makes tor exit (see launch_options).
    `on_spawn` is called as soon as the process exists, so a caller can register its PID for
    cleanup before anything can go wrong. Bootstrap is not awaited here.
    """
    tor = find_tor(tor_binary)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # tor refuses a DataDirectory others can read
    sock = data_dir / "control.sock"
    if len(str(sock)) > _MAX_SOCKET_PATH:
        raise TorLaunchError(f"the data folder path is too long for a control socket: {sock}")
    torrc = data_dir / "torrc"
    torrc.write_text(render_torrc([*launch_options(data_dir, socks_port), *extra_options]))
    with (data_dir / "tor.out").open("wb") as out:
        process = subprocess.Popen(
            [tor, "--defaults-torrc", os.devnull, "-f", str(torrc)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    launched = LaunchedTor(process, data_dir, sock)
    if on_spawn is not None:
        on_spawn(launched)
    try:
        controller = await _attach_when_ready(launched, timeout)
    except BaseException:
        launched.stop()
        raise
    return launched, controller


async def _attach_when_ready(launched: LaunchedTor, timeout: float) -> TorController:
    deadline = time.monotonic() + timeout
    while True:
        if not launched.running():
            tail = (launched.data_dir / "tor.out").read_text(errors="replace")[-800:]
            raise TorLaunchError(f"tor exited with status {launched.process.returncode}:\n{tail}")
        if launched.control_socket.exists():
            with contextlib.suppress(TorConnectError):
                return await TorController.connect(socket_path=launched.control_socket)
        if time.monotonic() > deadline:
            raise TorLaunchError(f"tor did not open its control socket within {timeout:.0f} s")
        await asyncio.sleep(0.05)
