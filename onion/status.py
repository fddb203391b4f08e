"""`amanat onion status`: what tor says about itself and our services, plus a real fetch.

`collect()` asks tor; `StatusReport.render()` (text for the terminal) and `to_json()` (the same
fields, for monitoring) are pure, and so is the verdict: `state` is ok, degraded or down, and
`EXIT_STATUS` maps it to the exit code of `amanat onion status` (docs/deploy.md, section 6).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

from onion.controller import BootstrapState, TorController
from onion.services import (
    NOT_BUILT,
    NOT_FOUND,
    PUBLISHED,
    PublishedService,
    check_descriptor,
)

OK, DEGRADED, DOWN = "ok", "degraded", "down"
EXIT_STATUS = {OK: 0, DEGRADED: 1, DOWN: 2}  # 3: the status could not be determined


@dataclass(frozen=True)
class ServiceReport:
    service: PublishedService  # address "": the record expects it but its key does not exist
    running: bool  # tor has it (detached ephemeral onion, or a torrc HiddenServiceDir)
    descriptor: str  # one of onion.services' PUBLISHED, NOT_FOUND, NOT_BUILT, ... texts

    @property
    def published(self) -> bool:
        return self.descriptor == PUBLISHED

    @property
    def state(self) -> str:
        s = self.service
        if not self.running or self.descriptor in (NOT_FOUND, NOT_BUILT):
            return DOWN
        unprotected = not s.pow_defenses or (s.name != "source" and not s.client_auth)
        return DEGRADED if unprotected or not self.published else OK

    def fields(self) -> dict[str, object]:
        s = self.service
        return {
            "name": s.name,
            "onion": s.onion if s.address else None,
            "kind": "torrc" if s.torrc_dir else "ephemeral",
            "torrc_dir": s.torrc_dir or None,
            "onionbalance_frontend": _frontend_onion(s),
            "auth": _auth_text(s),
            "clients": None if s.clients is None else list(s.clients),
            "running": self.running,
            "descriptor": self.descriptor,
            "pow_defenses": s.pow_defenses,
            "state": self.state,
        }


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
    def state(self) -> str:
        """down: tor or an expected onion is not there, or sources cannot load the page;
        degraded: all there, but less protected or not confirmed; ok: all is well."""
        if not self.bootstrap.done or not self.services:
            return DOWN
        if self.self_check is not None and not self.self_check.ok:
            return DOWN
        states = {r.state for r in self.services}
        return DOWN if DOWN in states else DEGRADED if DEGRADED in states else OK

    @property
    def ok(self) -> bool:
        return self.state == OK

    def render(self) -> str:
        yes = {True: "yes", False: "NO"}
        lines = [
            f"tor version:     {self.version}",
            f"bootstrap:       {self.bootstrap.progress}% ({self.bootstrap.summary})",
            f"socks port:      {f'{self.socks[0]}:{self.socks[1]}' if self.socks else 'none'}",
        ]
        if not self.services:
            lines.append("services:        NONE: Amanat expects a source onion")
        for rep in self.services:
            s = rep.service
            how = f"torrc {s.torrc_dir}" if s.torrc_dir else "ephemeral, key in data folder"
            running = yes[rep.running] if rep.running else (
                "NO: tor does not serve it (is `amanat serve` running?)" if s.address
                else "NO: it has no key yet (`amanat serve` has never published it)")
            lines += [
                f"{s.name} onion:".ljust(17) + (s.onion if s.address else "(none yet)"),
                f"  kind:          {how}; {_auth_text(s)}",
                *([f"  onionbalance:  instance of {_frontend_onion(s)}"]
                  if s.onionbalance_frontend else []),
                f"  running:       {running}",
                f"  descriptor:    {rep.descriptor}",
                f"  PoW defenses:  {'on' if s.pow_defenses else 'OFF'}",
            ]
        if self.self_check is not None:
            c = self.self_check
            verdict = "ok" if c.ok else "FAILED"
            lines.append(f"self-check:      {verdict}: {c.detail} ({c.seconds:.1f} s through tor)")
        lines.append(f"state:           {self.state}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The same as `render()`, one field per line of it, for monitoring."""
        check = self.self_check
        return json.dumps({
            "state": self.state,
            "tor_version": self.version,
            "bootstrap": {"progress": self.bootstrap.progress,
                          "summary": self.bootstrap.summary},
            "socks_port": f"{self.socks[0]}:{self.socks[1]}" if self.socks else None,
            "services": [r.fields() for r in self.services],
            "self_check": None if check is None else {
                "ok": check.ok, "detail": check.detail, "seconds": round(check.seconds, 2)},
        }, indent=1)


def _frontend_onion(s: PublishedService) -> str | None:
    if not s.onionbalance_frontend:
        return None
    if s.onionbalance_frontend == "?":
        return "a frontend named in an ob_config this user cannot read"
    return f"{s.onionbalance_frontend}.onion"


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
    timeout: float = 15.0,
) -> StatusReport:
    version = await controller.version()
    bootstrap = await controller.bootstrap_state()
    listeners = await controller.socks_listeners()
    socks = listeners[0] if listeners else None
    detached = set(await controller.onion_ids(detached=True))
    reports = []
    for s in services:
        running = bool(s.torrc_dir) or (bool(s.address) and s.address in detached)
        descriptor = await check_descriptor(controller, s, timeout) if running else "-"
        reports.append(ServiceReport(s, running, descriptor))
    check = None
    source = next((s for s in services if s.name == "source" and s.address), None)
    if self_check:
        if socks is None or source is None:
            check = SelfCheck(False, "no SOCKS port or no source onion to fetch", 0.0)
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

