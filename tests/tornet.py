"""A private Tor network on 127.0.0.1 for the tor-marked tests. Written for Amanat.

Shape: one directory authority (keys from tor-gencert; also a relay), three relays, one client
with a SocksPort, and the service's tor, launched through `onion.controller.launch_tor` exactly
as `amanat demo` launches it, plus the options that join it to this network. Every tor runs with
`TestingTorNetwork 1`, in its own session, with `__OwningControllerProcess` set to this process;
every PID is killed on stop(), at exit and on SIGTERM/SIGINT. Nothing leaves 127.0.0.1.

Start order matters: authority and relays first; the client and service only once the authority
serves a consensus that lists every relay (a client bootstrapped on a one-relay consensus picks
bad guards and stalls).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from onion.controller import LaunchedTor, TorController, launch_tor

RELAYS = 3  # plus the authority: onion circuits need four distinct relays
_live_pids: set[int] = set()
_handlers_installed = False


def _kill_all() -> None:
    for pid in list(_live_pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _live_pids.discard(pid)


def _install_exit_handlers() -> None:
    """Kill every tor we started at interpreter exit and on SIGTERM/SIGINT, then carry on."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_kill_all)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(signum)

        def handler(num: int, frame: FrameType | None, previous: Any = previous) -> None:
            _kill_all()
            if callable(previous):
                previous(num, frame)
            else:
                signal.signal(num, signal.SIG_DFL)
                os.kill(os.getpid(), num)

        signal.signal(signum, handler)


def track_pid(pid: int) -> None:
    """Kill this process too on every exit path (another daemon a test starts)."""
    _install_exit_handlers()
    _live_pids.add(pid)


def untrack_pid(pid: int) -> None:
    _live_pids.discard(pid)


class PortPicker:
    """Free TCP ports on 127.0.0.1 below 32768 (the ephemeral range collides with TIME_WAIT)."""

    def __init__(self) -> None:
        self._next = random.randint(12000, 30000)
        self._taken: set[int] = set()

    def take(self) -> int:
        for _ in range(2000):
            port = self._next
            self._next = 12000 if self._next >= 32000 else self._next + 1
            if port not in self._taken and _port_free(port):
                self._taken.add(port)
                return port
        raise RuntimeError("no free port below 32768 on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    name: str
    data_dir: Path
    control_port: int
    options: list[tuple[str, str]]
    process: subprocess.Popen[bytes] | None = None

    def start(self, tor: str) -> None:
        torrc = self.data_dir / "torrc"
        torrc.write_text("".join(f"{k} {v}\n" for k, v in self.options))
        with (self.data_dir / "tor.out").open("wb") as out:
            self.process = subprocess.Popen(
                [tor, "--defaults-torrc", os.devnull, "-f", str(torrc)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live_pids.add(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            _stop_pid(self.process)


def _stop_pid(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
    _live_pids.discard(process.pid)


@dataclass
class TorNetwork:
    """Start with `start()`, always `stop()`; the attributes below are valid in between."""

    root: Path
    tor: str = "tor"
    gencert: str = "tor-gencert"
    # seconds between consensuses once the network runs; tor derives the onion-service time
    # period from it on a test network (24 intervals), and Onionbalance's --is-testnet assumes 20
    voting_interval: int = 10
    relays: int = RELAYS  # besides the authority
    # Relays as directory caches: needed where HSDirs other than the authority must serve
    # descriptors (each relay gets the HSDir flag); off by default (see _make_relay)
    relay_dir_cache: bool = False
    ports: PortPicker = field(default_factory=PortPicker)
    nodes: list[Node] = field(default_factory=list)
    service: LaunchedTor | None = None
    service_owner: TorController | None = None  # closing it makes the service's tor exit
    client_owner: TorController | None = None  # the same for the client's tor
    socks_port: int = 0
    client_control_port: int = 0
    client_auth_dir: Path = Path()
    dir_authority_line: str = ""
    launch_to_consensus: float = 0.0
    launch_to_first_fetch: float = 0.0
    _t0: float = 0.0

    # -- the common options ------------------------------------------------------------------

    def _base(self, name: str, control_port: int) -> tuple[Path, list[tuple[str, str]]]:
        data = self.root / name
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        data.chmod(0o700)
        return data, [
            ("TestingTorNetwork", "1"),
            ("DataDirectory", str(data)),
            ("RunAsDaemon", "0"),
            ("Nickname", name),
            ("ControlPort", f"127.0.0.1:{control_port}"),
            ("CookieAuthentication", "1"),
            *self.joining_options(),
            ("Log", f"notice file {data / 'notice.log'}"),
            ("__OwningControllerProcess", str(os.getpid())),
        ]

    def joining_options(self) -> list[tuple[str, str]]:
        """What any tor needs to join this network (also used for the service's tor)."""
        empty = self.root / "empty-geoip"
        empty.touch()
        return [
            ("GeoIPFile", str(empty)),  # saves ~35 MB RSS per process
            ("GeoIPv6File", str(empty)),
            ("DirAuthority", self.dir_authority_line),
        ]

    # -- the start sequence ------------------------------------------------------------------

    # Quiet, the network is up in 9-14 s. On a loaded 2-core machine (CI beside other work) the
    # first consensus can miss a relay's descriptor; the next votes come every 10 s, so the
    # deadline leaves room for several of them.
    def start(self, timeout: float = 180.0) -> None:
        _install_exit_handlers()
        self._t0 = time.monotonic()
        deadline = self._t0 + timeout
        relays = [f"relay{i}" for i in range(self.relays)]
        orports = {name: self.ports.take() for name in ["auth", *relays]}
        dir_port = self.ports.take()
        self._fingerprints(orports, dir_port)
        self._make_authority(orports["auth"], dir_port)
        for name in relays:
            self._make_relay(name, orports[name])
        for node in self.nodes:
            node.start(self.tor)
        self._wait_for_consensus(dir_port, self.relays + 1, deadline)
        self._freeze_descriptors()
        self.launch_to_consensus = time.monotonic() - self._t0
        self._make_client().start(self.tor)

    def _fingerprints(self, orports: dict[str, int], dir_port: int) -> dict[str, str]:
        """Make every relay's identity key (and the authority's v3 keys), all at once."""
        placeholder = "placeholder 127.0.0.1:1 " + "0" * 40  # TestingTorNetwork insists
        jobs = {}
        for name, orport in orports.items():
            data = self.root / name
            data.mkdir(mode=0o700, parents=True)
            jobs[name] = subprocess.Popen(
                [self.tor, "--defaults-torrc", os.devnull, "--list-fingerprint",
                 "--DataDirectory", str(data), "--ORPort", str(orport), "--Address", "127.0.0.1",
                 "--Nickname", name, "--TestingTorNetwork", "1", "--DirAuthority", placeholder],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        v3ident = self._authority_certificate(dir_port)
        fingerprints = {}
        for name, job in jobs.items():
            out, _ = job.communicate(timeout=30)
            assert job.returncode == 0, out
            fingerprints[name] = out.strip().splitlines()[-1].split(" ", 1)[1].replace(" ", "")
        self.dir_authority_line = (
            f"auth orport={orports['auth']} v3ident={v3ident} 127.0.0.1:{dir_port} "
            f"{fingerprints['auth']}"
        )
        return fingerprints

    def _authority_certificate(self, dir_port: int) -> str:
        keys = self.root / "auth" / "keys"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            [self.gencert, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
             "-i", str(keys / "authority_identity_key"), "-s", str(keys / "authority_signing_key"),
             "-c", str(keys / "authority_certificate"), "-a", f"127.0.0.1:{dir_port}"],
            input=b"\n", check=True, capture_output=True, cwd=keys,
        )
        cert = (keys / "authority_certificate").read_text()
        return next(ln.split()[1] for ln in cert.splitlines() if ln.startswith("fingerprint "))

    def _make_authority(self, orport: int, dir_port: int) -> None:
        ctl = self.ports.take()
        data, options = self._base("auth", ctl)
        # First consensus about 5.5 s after launch: its vote then lands after the authority's own
        # descriptor (an earlier first vote costs a whole extra voting round).
        offset = int(time.time() + 5.5) % 5
        options += [
            ("ORPort", str(orport)), ("Address", "127.0.0.1"), ("DirPort", str(dir_port)),
            ("SocksPort", "0"), ("ExitRelay", "0"), ("ExitPolicy", "reject *:*"),
            ("AuthoritativeDirectory", "1"), ("V3AuthoritativeDirectory", "1"),
            ("AssumeReachable", "1"), ("ContactInfo", "amanat-tests@127.0.0.1"),
            ("TestingDirAuthVoteGuard", "*"), ("TestingDirAuthVoteHSDir", "*"),
            ("TestingDirAuthVoteExit", "*"), ("TestingMinExitFlagThreshold", "0"),
            ("TestingMinFastFlagThreshold", "0"),
            ("V3AuthNIntervalsValid", "2"),
            ("TestingV3AuthInitialVotingInterval", "5"),
            ("TestingV3AuthInitialVoteDelay", "2"), ("TestingV3AuthInitialDistDelay", "2"),
            ("V3AuthVotingInterval", str(self.voting_interval)), ("V3AuthVoteDelay", "2"),
            ("V3AuthDistDelay", "2"),
            ("TestingV3AuthVotingStartOffset", str(offset)),
        ]
        self.nodes.append(Node("auth", data, ctl, options))

    def _make_relay(self, name: str, orport: int) -> None:
        ctl = self.ports.take()
        data, options = self._base(name, ctl)
        options += [
            ("ORPort", str(orport)), ("Address", "127.0.0.1"), ("SocksPort", "0"),
            ("ExitRelay", "0"), ("ExitPolicy", "reject *:*"), ("AssumeReachable", "1"),
            ("ContactInfo", "amanat-tests@127.0.0.1"),
            # relay caches answered 404 for microdescriptors: a 10 s retry
            ("DirCache", "1" if self.relay_dir_cache else "0"),
        ]
        self.nodes.append(Node(name, data, ctl, options))

    def _make_client(self) -> Node:
        self.socks_port, self.client_control_port = self.ports.take(), self.ports.take()
        data, options = self._base("client", self.client_control_port)
        self.client_auth_dir = data / "onion_auth"
        self.client_auth_dir.mkdir(mode=0o700)
        options += [
            ("SocksPort", f"127.0.0.1:{self.socks_port} ExtendedErrors"),
            ("ClientOnionAuthDir", str(self.client_auth_dir)),
            ("VanguardsLiteEnabled", "0"),  # in a 4-relay network its paths fail for up to 17 s
        ]
        node = Node("client", data, self.client_control_port, options)
        self.nodes.append(node)
        return node

    def service_options(self) -> list[tuple[str, str]]:
        """Extra torrc options for `launch_tor` so the service's tor joins this network."""
        return [("TestingTorNetwork", "1"), *self.joining_options(), ("VanguardsLiteEnabled", "0")]

    async def connect_client(self) -> TorController:
        """The first control connection to the client takes ownership: keep it for the session."""
        if self.client_owner is None:
            self.client_owner = await TorController.connect(port=self.client_control_port)
        return self.client_owner

    async def launch_service_tor(self) -> TorController:
        """The service's tor, launched through onion/ the way `amanat demo` does."""

        def register(launched: LaunchedTor) -> None:
            self.service = launched
            _live_pids.add(launched.pid)

        _, self.service_owner = await launch_tor(
            self.root / "service", socks_port=str(self.ports.take()),
            extra_options=self.service_options(), on_spawn=register,
        )
        return self.service_owner

    def _freeze_descriptors(self) -> None:
        """Stop every relay from publishing a new descriptor for the rest of the session.

        A relay's first descriptor advertises 0 KB/s (no traffic seen yet), so the first
        consensus weighs all relays 0 and clients pick uniformly. About a minute later each relay
        would republish with the bandwidth it has since seen; in a consensus that mixes zero and
        non-zero weights the zero-weight relays are never picked, fewer than four stay usable and
        circuits stall ("Failed to find node for hop #1", bootstrap stuck at 75%).
        """
        self._check_alive()
        for node in self.nodes:
            cookie = (node.data_dir / "control_auth_cookie").read_bytes().hex()
            # A raw control connection: stem would send TAKEOWNERSHIP (our PID owns these tors)
            # and the relay would exit when the connection closes.
            with socket.create_connection(("127.0.0.1", node.control_port), timeout=5) as conn:
                conn.sendall(f"AUTHENTICATE {cookie}\r\nSETCONF PublishServerDescriptor=0\r\n"
                             "QUIT\r\n".encode())
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
            if reply.count(b"250 ") < 3:
                raise RuntimeError(f"tor {node.name} refused SETCONF: {reply!r}")

    def _wait_for_consensus(self, dir_port: int, usable: int, deadline: float) -> None:
        """Until the authority serves a consensus with `usable` relays of non-zero weight."""
        url = f"http://127.0.0.1:{dir_port}/tor/status-vote/current/consensus-microdesc"
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = response.read().decode(errors="replace")
                listed = [ln for ln in body.splitlines() if ln.startswith("r ")]
                weights = {ln.split()[1] for ln in body.splitlines() if ln.startswith("w ")}
                # all weights equal: uniform choice (see _freeze_descriptors)
                if len(listed) >= usable and len(weights) == 1:
                    return
            time.sleep(0.2)
        raise RuntimeError(
            f"no consensus with {usable} usable relays; see {self.root}/*/notice.log"
        )

    def _check_alive(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                tail = (node.data_dir / "tor.out").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"tor {node.name} exited:\n{tail}")

    def first_fetch_done(self) -> None:
        self.launch_to_first_fetch = time.monotonic() - self._t0

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of every tor of this network, from /proc."""
        pids = {n.name: n.process.pid for n in self.nodes if n.process is not None}
        if self.service is not None:
            pids["service"] = self.service.pid
        out = {}
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) / 1024
        return out

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            _live_pids.discard(self.service.pid)
        for node in reversed(self.nodes):
            node.stop()


# --- small helpers the tests share ----------------------------------------------------------------


def report(text: str, config: Any = None) -> None:
    """Print to the real terminal, past pytest's output capture (fd level included)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter") if config else None
    capture = config.pluginmanager.get_plugin("capturemanager") if config else None
    if reporter is None or capture is None:
        stream = sys.__stderr__
        if stream is not None:
            stream.write(f"\n[tornet] {text}\n")
            stream.flush()
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n[tornet] {text}")


class StaticSite:
    """A tiny HTTP server on 127.0.0.1 for the fixture's own first fetch."""

    def __init__(self, body: bytes) -> None:
        def handler_factory(*args: Any) -> BaseHTTPRequestHandler:
            return _Handler(body, *args)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, body: bytes, *args: Any) -> None:
        self.body = body
        super().__init__(*args)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def retry(
    attempt: Callable[[], Any], *, timeout: float, what: str, pause: float = 0.3
) -> Any:
    """Await `attempt()` until it returns without raising, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not succeed in {timeout:.0f} s: {exc!r}") from exc
            await asyncio.sleep(pause)
