"""`amanat onion status`: what tor says about itself and our services, plus a real fetch.

`collect()` asks tor; `StatusReport.render()` is pure text for the terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

from onion.controller import BootstrapState, TorController
from onion.services import PublishedService, is_descriptor_published


@dataclass(frozen=True)
class ServiceReport:
    service: PublishedService
    running: bool  # tor has it (detached ephemeral onion, or a torrc HiddenServiceDir)
    published: bool  # an HSDir returned its descriptor


@dataclass(frozen=True)
class SelfCheck:
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class StatusReport:
    version: str
    bootstrap: BootstrapState
    socks: tuple[str, int] | None
    services: tuple[ServiceReport, ...]
    self_check: SelfCheck | None

    @property
    def ok(self) -> bool:
        services_ok = all(
            s.running and s.published and (s.service.client_auth or s.service.name == "source")
            for s in self.services
        )
        check_ok = self.self_check is None or self.self_check.ok
        return self.bootstrap.done and bool(self.services) and services_ok and check_ok

    def render(self) -> str:
        yes = {True: "yes", False: "NO"}
        lines = [
            f"tor version:     {self.version}",
            f"bootstrap:       {self.bootstrap.progress}% ({self.bootstrap.summary})",
            f"socks port:      {f'{self.socks[0]}:{self.socks[1]}' if self.socks else 'none'}",
        ]
        if not self.services:
            lines.append("services:        none published")
        for rep in self.services:
            s = rep.service
            how = f"torrc {s.torrc_dir}" if s.torrc_dir else "ephemeral, key in data folder"
            auth = _auth_text(s)
            lines += [
                f"{s.name} onion:".ljust(17) + s.onion,
                f"  kind:          {how}; {auth}",
                f"  running:       {yes[rep.running]}",
                f"  descriptor:    {'published' if rep.published else 'NOT FOUND on HSDirs'}",
                f"  PoW defenses:  {'on' if s.pow_defenses else 'OFF'}",
            ]
        if self.self_check is not None:
            c = self.self_check
            verdict = "ok" if c.ok else "FAILED"
            lines.append(f"self-check:      {verdict}: {c.detail} ({c.seconds:.1f} s through tor)")
        return "\n".join(lines)


def _auth_text(s: PublishedService) -> str:
    if not s.client_auth:
        return "public" if s.name == "source" else "PUBLIC: NO CLIENT AUTHORIZATION"
    if s.clients is None:
        return "client auth (clients not readable by this user; run as root to list)"
    return f"client auth ({len(s.clients)} clients)"


async def collect(
    controller: TorController,
    services: Sequence[PublishedService],
    *,
    self_check: bool = True,
    timeout: float = 60.0,
) -> StatusReport:
    version = await controller.version()
    bootstrap = await controller.bootstrap_state()
    listeners = await controller.socks_listeners()
    socks = listeners[0] if listeners else None
    detached = set(await controller.onion_ids(detached=True))
    reports = []
    for s in services:
        running = bool(s.torrc_dir) or s.address in detached
        published = running and await is_descriptor_published(controller, s.address, timeout)
        reports.append(ServiceReport(s, running, published))
    check = None
    source = next((s for s in services if not s.client_auth), None)
    if self_check:
        if socks is None or source is None:
            check = SelfCheck(False, "no SOCKS port or no public onion to fetch", 0.0)
        else:
            check = await fetch_landing_page(socks, source.onion, timeout)
    return StatusReport(version, bootstrap, socks, tuple(reports), check)


async def fetch_landing_page(socks: tuple[str, int], onion: str, timeout: float) -> SelfCheck:
    """GET / from the onion through tor's SOCKS port (the name resolves inside tor)."""
    started = time.monotonic()
    try:
        status = await asyncio.wait_for(_http_status(socks, onion), timeout)
    except (OSError, ProxyError, ProxyTimeoutError, TimeoutError, ValueError) as exc:
        return SelfCheck(False, f"GET http://{onion}/ failed: {exc}", time.monotonic() - started)
    ok = status == 200
    return SelfCheck(ok, f"GET http://{onion}/ -> HTTP {status}", time.monotonic() - started)


async def _http_status(socks: tuple[str, int], host: str) -> int:
    proxy = Proxy.from_url(f"socks5://{socks[0]}:{socks[1]}", rdns=True)
    sock = await proxy.connect(dest_host=host, dest_port=80)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    return int(parts[1])

