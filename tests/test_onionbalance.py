"""Two intake nodes behind one Onionbalance frontend onion, on a private Tor network.

Debian's `onionbalance` (v3) runs as it would on the frontend machine: its own tor, its
config.yaml naming the frontend key and the nodes' own onions. Each node is `amanat serve`'s
code with `[tor] onionbalance_frontend` set, attached to a tor of its own. A source reaches the
frontend address; the node that served it is stopped; once Onionbalance has published a
descriptor without it, the next source submits through the same address to the other node.

The network here differs from the session's in two ways, both forced by onionbalance 0.2.2:
- it votes every 20 s, not 10 s: on a test network tor derives the onion-service time period
  from the voting interval (24 intervals; hs_common.c get_time_period_length) and Onionbalance's
  `--is-testnet` mode hard-codes chutney's 20 s (hs_v3/consensus.py). With 10 s, tor's period
  is 4 minutes and Onionbalance's 8: the frontend descriptor would carry a blinded key for the
  wrong period, on the wrong HSDirs;
- it has 6 HSDirs that serve descriptors (relays with DirCache 1; the session's relays have
  DirCache 0 and only the authority answers). hs_v3/hashring.py get_responsible_hsdirs walks the
  ring for the second replica skipping HSDirs the first one took, and stops only on meeting one
  of its own: when the first replica took every HSDir (4 or fewer in the ring) that loop never
  ends, and Onionbalance hangs before uploading its second descriptor (seen with 4).

Onionbalance keeps a stopped node's introduction points in the frontend descriptor: it refetches
the node's last descriptor from the HSDirs, which keep it for its lifetime, and counts that as a
fresh one. Sources get through anyway because their tor, refused by a dead introduction point,
tries the next one in the descriptor; that is what the second half of the test shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector
from conftest import RunningServer, SourceClient, serve_org
from conftest_tor import tor_missing
from tornet import TorNetwork, report, retry, track_pid, untrack_pid

from dropbox.demo import create_demo_org
from onion.controller import LaunchedTor, TorController, launch_tor
from onion.instance import tor_secret_key_file
from onion.publish import publish_onions, status
from onion.services import generate_service_key, load_or_create_key, onion_address

pytestmark = [pytest.mark.tor, pytest.mark.slow]

VOTING_INTERVAL = 20  # what onionbalance --is-testnet assumes (see the module's docstring)
HSDIRS = 6  # Onionbalance's HSDir walk needs more than 4 (see the module's docstring)


def _onionbalance() -> str | None:
    return shutil.which("onionbalance") or shutil.which("onionbalance", path="/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def ob_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorNetwork]:
    missing = tor_missing() or (None if _onionbalance() else
                                "onionbalance is not installed (Debian package onionbalance)")
    if missing:
        pytest.skip(missing)
    net = TorNetwork(tmp_path_factory.mktemp("obnet"), voting_interval=VOTING_INTERVAL,
                     relays=HSDIRS - 1, relay_dir_cache=True)
    try:
        net.start(timeout=180)  # a missed vote costs 20 s here
        yield net
    finally:
        net.stop()


@dataclass
class Frontend:
    """The frontend machine: its key, Onionbalance's config.yaml, its tor and onionbalance."""

    root: Path
    address: str
    tor: LaunchedTor | None = None
    owner: TorController | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "onionbalance.log"

    def write_config(self, key_blob: str, instances: list[str]) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.root / "frontend.key"
        key.write_bytes(tor_secret_key_file(key_blob))
        key.chmod(0o600)
        config = self.root / "config.yaml"
        config.write_text("services:\n- key: frontend.key\n  instances:\n"
                          + "".join(f"  - address: {a}.onion\n" for a in instances))
        return config

    async def start(self, net: TorNetwork, config: Path) -> None:
        self.tor, self.owner = await launch_tor(self.root / "tor",
                                                extra_options=net.service_options(),
                                                on_spawn=lambda t: track_pid(t.pid))
        await self.owner.wait_bootstrapped(60)
        binary = _onionbalance()
        assert binary is not None
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "--is-testnet", "-v", "info", "-s", str(self.tor.control_socket),
                 "-c", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PATH": "/usr/bin:/bin"},
            )
        track_pid(self.process.pid)

    def uploads(self) -> int:
        """How many descriptor uploads onionbalance has made so far."""
        return len(re.findall(r"Uploading (first|second) descriptor", self.text()))

    def instances_used(self, since: int) -> list[int]:
        """From how many instances each descriptor built after log offset `since` took intros."""
        return [int(n) for n in re.findall(r"intros from (\d+) instances", self.text()[since:])]

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            untrack_pid(self.process.pid)
        if self.owner is not None:
            await self.owner.close()
        if self.tor is not None:
            self.tor.stop()
            untrack_pid(self.tor.pid)


@contextlib.asynccontextmanager
async def node(net: TorNetwork, root: Path, frontend: str) -> AsyncIterator[RunningServer]:
    """An intake node: a demo org's server with its own tor, its source onion an instance."""
    launched, owner = await launch_tor(root / "tor", extra_options=net.service_options(),
                                       on_spawn=lambda t: track_pid(t.pid))
    try:
        await owner.wait_bootstrapped(60)
        org = create_demo_org(root / "org", port=0, cheap_kdf=True)
        tor = {"mode": "attach", "control_socket": str(launched.control_socket),
               "onionbalance_frontend": f"{frontend}.onion"}
        async with (
            serve_org(org, tor=tor) as server,
            publish_onions(server.config.onion_settings(), server.url),
        ):
            yield server
    finally:
        await owner.close()  # tor exits with its owning controller: its intro points go
        launched.stop()
        untrack_pid(launched.pid)


async def submit_through(net: TorNetwork, url: str, who: str, text: str) -> None:
    """A new source, with circuits of its own (SOCKS isolation), submits `text` at `url`."""
    async with SourceClient(url) as source:
        await source.http.close()
        connector = ProxyConnector.from_url(
            f"socks5://{who}:x@127.0.0.1:{net.socks_port}", rdns=True)
        source.http = aiohttp.ClientSession(connector=connector,
                                            timeout=aiohttp.ClientTimeout(total=30))
        await retry(lambda: source.get("/"), timeout=150, what=f"{who}: the frontend onion",
                    pause=2)
        await source.start()
        status_code, html = await source.submit(text)
        assert status_code == 200
        assert 'id="submitted"' in html


def _instance_address(root: Path) -> str:
    """A node's own source onion (its key is made before it starts, for config.yaml)."""
    return onion_address(load_or_create_key(root / "org" / "data" / "onion" / "source.key"))


async def test_the_frontend_onion_survives_the_loss_of_a_node(
    ob_network: TorNetwork, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    net = ob_network
    tmp_path.chmod(0o700)
    started = time.monotonic()
    frontend_key = generate_service_key()
    frontend = Frontend(tmp_path / "frontend", onion_address(frontend_key))
    roots = {name: tmp_path / name for name in ("node-a", "node-b")}
    for root in roots.values():
        (root / "org" / "data" / "onion").mkdir(mode=0o700, parents=True)
    instances = {name: _instance_address(root) for name, root in roots.items()}
    config = frontend.write_config(frontend_key, list(instances.values()))
    url = f"http://{frontend.address}.onion"
    client = await retry(net.connect_client, timeout=30, what="the client's control port")
    await client.wait_bootstrapped(60)
    timings: dict[str, float] = {}
    stacks = {name: contextlib.AsyncExitStack() for name in roots}
    try:
        servers = {name: await stacks[name].enter_async_context(
            node(net, root, frontend.address)) for name, root in roots.items()}
        for name, server in servers.items():
            report_ = await status(server.config.onion_settings(), self_check=False)
            source = next(r for r in report_.services if r.service.name == "source")
            assert source.service.address == instances[name]
            assert source.service.onionbalance_frontend == frontend.address
            assert f"onionbalance:  instance of {frontend.address}.onion" in report_.render()
        timings["nodes up"] = time.monotonic() - started
        await frontend.start(net, config)

        await submit_through(net, url, "source-1", "the first testimony")
        timings["first source through the frontend"] = time.monotonic() - started
        landed = {name: len(s.submissions()) for name, s in servers.items()}
        assert sorted(landed.values()) == [0, 1], landed
        served = next(name for name, count in landed.items() if count)
        other = next(name for name in roots if name != served)

        uploads_before, log_at_stop = frontend.uploads(), len(frontend.text())
        await stacks[served].aclose()  # the node that served the source goes away
        stopped_at = time.monotonic()

        async def refreshed() -> None:
            assert frontend.uploads() > uploads_before, "no new frontend descriptor yet"

        await retry(refreshed, timeout=120, what="Onionbalance's next descriptor", pause=1)
        timings["descriptor refresh after the stop"] = time.monotonic() - stopped_at
        # the next sources come with no cached descriptor: NEWNYM drops tor's client HS state
        await client.msg("SIGNAL NEWNYM")
        for who in ("source-2", "source-3"):
            await submit_through(net, url, who, f"a testimony from {who}")
        timings["two sources after the refresh"] = (time.monotonic() - stopped_at
                                                   - timings["descriptor refresh after the stop"])
        assert len(servers[other].submissions()) == 2
        assert frontend.process is not None
        assert frontend.process.poll() is None  # onionbalance is still running
        report(f"onionbalance failover: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}"
               f"; frontend uploads before the stop {uploads_before}, after "
               f"{frontend.uploads()}; instances in the descriptors built after the stop: "
               f"{frontend.instances_used(log_at_stop)}", pytestconfig)
    finally:
        for stack in stacks.values():
            await stack.aclose()
        await frontend.stop()
        report("onionbalance log tail:\n" + frontend.text()[-3000:], pytestconfig)
