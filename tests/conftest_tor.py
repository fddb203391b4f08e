"""Fixtures for the tor-marked tests: one private Tor network for the whole session.

Loaded from tests/conftest.py through `pytest_plugins`. The network starts the first time a test
asks for it; tests without the `tor` mark never pay for it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector
from tornet import StaticSite, TorNetwork, report, retry

from onion.controller import TorController
from onion.services import ServiceSpec, publish, unpublish


def tor_missing() -> str | None:
    for binary in ("tor", "tor-gencert"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian package tor)"
    return None


async def socks_get(socks_port: int, url: str, timeout: float = 30.0) -> tuple[int, str]:
    """GET `url` through tor's SOCKS port; the name resolves at the far end (rdns)."""
    connector = ProxyConnector.from_url(f"socks5://127.0.0.1:{socks_port}", rdns=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session,
        session.get(url) as response,
    ):
        return response.status, await response.text()


async def _first_fetch(net: TorNetwork) -> None:
    """Bootstrap client and service, publish a probe onion, fetch it once through the client."""
    service = await net.launch_service_tor()
    client = await net.connect_client()
    site = StaticSite(b"amanat tornet probe")
    try:
        await asyncio.gather(service.wait_bootstrapped(60), client.wait_bootstrapped(60))
        spec = ServiceSpec("probe", net.root / "probe.key", f"127.0.0.1:{site.port}")
        probe = await publish(service, spec, timeout=60)
        status, body = await retry(
            lambda: socks_get(net.socks_port, f"http://{probe.onion}/", timeout=20),
            timeout=60, what="the first onion fetch",
        )
        assert (status, body) == (200, "amanat tornet probe")
        net.first_fetch_done()
        await unpublish(service, probe.address)
    finally:
        site.close()


@pytest.fixture(scope="session")
def tor_network(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[TorNetwork]:
    missing = tor_missing()
    if missing:
        pytest.skip(missing)
    net = TorNetwork(Path(tmp_path_factory.mktemp("tornet")))
    try:
        net.start()
        asyncio.run(_first_fetch(net))
        rss = net.rss_mib()
        report(
            f"private Tor network: consensus {net.launch_to_consensus:.1f} s, first onion fetch "
            f"{net.launch_to_first_fetch:.1f} s after launch; {len(rss)} tor processes, "
            f"RSS {sum(rss.values()):.0f} MiB in all "
            f"({', '.join(f'{k} {v:.0f}' for k, v in rss.items())})",
            pytestconfig,
        )
        yield net
    finally:
        started = time.monotonic()
        net.stop()
        report(f"private Tor network stopped in {time.monotonic() - started:.1f} s", pytestconfig)


@pytest.fixture
async def service_tor(tor_network: TorNetwork) -> TorController:
    """A fresh control connection to the service's tor (its control socket, cookie auth)."""
    assert tor_network.service is not None
    controller = await TorController.connect(socket_path=tor_network.service.control_socket)
    yield controller  # type: ignore[misc]
    await controller.close()
