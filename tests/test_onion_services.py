"""onion/ against the private Tor network: persistent keys, PoW, client authorization, status,
and a real submission over the onion landing as ciphertext."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector, ProxyError
from conftest import SourceClient, serve_org
from conftest_tor import socks_get
from tornet import StaticSite, TorNetwork, report, retry

from dropbox.demo import create_demo_org
from dropbox.pages import STATE
from onion.client_auth import ClientKeyPair, auth_line, auth_private_line
from onion.controller import LaunchedTor, TorController, launch_tor
from onion.publish import publish_onions, read_state
from onion.services import ServiceSpec, await_upload, onion_address, publish, unpublish

pytestmark = pytest.mark.tor


@pytest.fixture
async def site() -> AsyncIterator[StaticSite]:
    s = StaticSite(b"transfer api stand-in")
    yield s
    s.close()


async def test_source_key_is_persistent_and_private(
    service_tor: TorController, tmp_path: Path, site: StaticSite, tor_network: TorNetwork
) -> None:
    spec = ServiceSpec("source", tmp_path / "source.key", f"127.0.0.1:{site.port}")
    first = await publish(service_tor, spec)
    assert (spec.key_file.stat().st_mode & 0o777) == 0o600
    assert first.address == onion_address(spec.key_file.read_text().split(":", 1)[1].strip())
    assert first.pow_defenses  # Debian's tor 0.4.9 takes PoWDefensesEnabled=1
    again = await publish(service_tor, spec)  # replaces the running copy, same key
    assert again.address == first.address
    assert await service_tor.onion_ids(detached=True) == [first.address]
    status, body = await retry(
        lambda: socks_get(tor_network.socks_port, f"http://{again.onion}/", timeout=20),
        timeout=45, what="fetching the re-published onion",
    )
    assert (status, body) == (200, "transfer api stand-in")
    assert await unpublish(service_tor, first.address)


async def test_refused_pow_warns_loudly_and_publishes_anyway(
    service_tor: TorController, tmp_path: Path, site: StaticSite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # tor refuses a negative queue rate, which makes it reject the PoW variant of ADD_ONION.
    spec = ServiceSpec("source", tmp_path / "k", f"127.0.0.1:{site.port}", pow_queue_rate=-1)
    with caplog.at_level(logging.WARNING, logger="amanat.onion"):
        published = await publish(service_tor, spec, await_publication=False)
    assert not published.pow_defenses
    assert "REFUSED PROOF-OF-WORK" in caplog.text
    assert published.address in await service_tor.onion_ids(detached=True)
    await unpublish(service_tor, published.address)


async def test_transfer_onion_needs_the_client_key(
    service_tor: TorController, tmp_path: Path, site: StaticSite, tor_network: TorNetwork
) -> None:
    pair = ClientKeyPair.generate()
    spec = ServiceSpec("transfer", tmp_path / "transfer.key", f"127.0.0.1:{site.port}",
                       client_keys={"alice": pair.public})
    transfer = await publish(service_tor, spec)
    url = f"http://{transfer.onion}/"
    try:
        # Without the key tor fetches the descriptor but cannot decrypt it: with ExtendedErrors
        # its SOCKS reply is 0xF4, "onion service missing client authorization".
        async def refused() -> None:
            with pytest.raises(ProxyError) as info:
                await socks_get(tor_network.socks_port, url, timeout=20)
            # python-socks reports codes outside RFC 1928 only in its message
            assert "0XF4" in str(info.value).upper(), info.value
        await retry(refused, timeout=45, what="a refusal for the missing client key")

        # With the key, the way a workstation holds it: ClientOnionAuthDir + SIGNAL RELOAD.
        key_file = tor_network.client_auth_dir / "amanat.auth_private"
        key_file.write_text(auth_private_line(transfer.address, pair.private) + "\n")
        key_file.chmod(0o600)
        client = await tor_network.connect_client()
        await client.reload()
        status, body = await retry(
            lambda: socks_get(tor_network.socks_port, url, timeout=20),
            timeout=45, what="fetching the transfer onion with the client key",
        )
        assert (status, body) == (200, "transfer api stand-in")
    finally:
        await unpublish(service_tor, transfer.address)
        (tor_network.client_auth_dir / "amanat.auth_private").unlink(missing_ok=True)


async def _amanat(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dropbox.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:  # a command that hangs fails its test instead of stalling the suite
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"`amanat {' '.join(args)}` did not finish in 120 s") from None
    return proc.returncode or 0, out.decode()


async def test_submission_over_the_onion_lands_as_ciphertext(
    tor_network: TorNetwork, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    """The real intake app behind a published onion; a source submits through tor's SOCKS
    port; `amanat onion status/add-client/revoke-client` run as real commands beside it."""
    assert tor_network.service is not None
    org = create_demo_org(tmp_path / "org", port=0, cheap_kdf=True)
    transfer = StaticSite(b"transfer api stand-in")
    tor = {"mode": "attach", "control_socket": str(tor_network.service.control_socket)}
    transfer_listen = {"listen": f"127.0.0.1:{transfer.port}"}
    try:
        async with (
            serve_org(org, tor=tor, transfer=transfer_listen) as server,
            publish_onions(server.config.onion_settings(), server.url) as onions,
        ):
            assert len(onions) == 1  # no investigator client keys yet: no transfer onion
            await _submit_over_tor(tor_network, onions[0], server)
            report("amanat onion status:\n" + await _status_and_clients(server.config_path),
                   pytestconfig)
        assert read_state(server.config.onion_settings().paths)
    finally:
        transfer.close()


async def _submit_over_tor(tor_network: TorNetwork, onion_url: str, server: object) -> None:
    canary = "onion-canary-7f3a"
    async with SourceClient(onion_url.rstrip("/")) as source:
        await source.http.close()
        connector = ProxyConnector.from_url(f"socks5://127.0.0.1:{tor_network.socks_port}",
                                            rdns=True)
        source.http = aiohttp.ClientSession(connector=connector)
        await retry(lambda: source.get("/"), timeout=45, what="the onion landing page")
        await source.start()
        status, html = await source.submit(canary, [("note.txt", canary.encode(), "text/plain")])
        assert status == 200
        assert 'id="submitted"' in html
    rows = server.submissions()  # type: ignore[attr-defined]
    assert len(rows) == 1
    names = server.ciphertexts(rows[0][0])  # type: ignore[attr-defined]
    message = names["message"][0]
    stored = server.app[STATE].store.path(message).read_bytes()  # type: ignore[attr-defined]
    assert canary.encode() not in stored
    assert server.decrypt(message) == canary.encode()  # type: ignore[attr-defined]


async def _status_and_clients(config_path: Path) -> str:
    code, out = await _amanat("onion", "add-client", "alice", "--config", str(config_path))
    assert code == 0, out
    line = out.strip().splitlines()[-1]
    assert line.count(":") == 3
    assert ":descriptor:x25519:" in line
    # The transfer onion was just published: its descriptor may still be on its way (under
    # load an HSDir took longer than status waits). An operator runs status again; so does this.
    async def clean_status() -> str:
        code, out = await _amanat("onion", "status", "--config", str(config_path))
        assert code == 0, out
        return out
    out = await retry(clean_status, timeout=90, what="a clean status after add-client", pause=2)
    assert "bootstrap:       100%" in out
    assert out.count("descriptor:    published") == 2  # source and transfer
    assert "transfer onion:" in out
    assert "client auth (1 clients)" in out
    assert "PoW defenses:  on" in out
    assert "self-check:      ok: GET http://" in out
    status_output = out
    code, out = await _amanat("onion", "revoke-client", "alice", "--config", str(config_path))
    assert code == 0, out
    code, out = await _amanat("onion", "add-client", "bad/name", "--config", str(config_path))
    assert code == 1
    assert "client name" in out
    return status_output


async def test_torrc_services_production_style(
    tor_network: TorNetwork, service_tor: TorController, tmp_path: Path
) -> None:
    """torrc owns both onions (HiddenServiceDir, as deploy/torrc does): amanat reads their
    addresses, adds a client to authorized_clients/ and reports on them."""
    assert tor_network.service is not None
    tmp_path.chmod(0o700)
    source_dir, transfer_dir = tmp_path / "hs-source", tmp_path / "hs-transfer"
    (transfer_dir / "authorized_clients").mkdir(mode=0o700, parents=True)
    placeholder = transfer_dir / "authorized_clients" / "install-placeholder.auth"
    placeholder.write_text(auth_line(ClientKeyPair.generate().public) + "\n")
    transfer = StaticSite(b"transfer api stand-in")
    socket_path = tmp_path / "source.sock"
    await service_tor.msg(
        f'SETCONF HiddenServiceDir="{source_dir}" '
        f'HiddenServicePort="80 unix:{socket_path}" HiddenServicePoWDefensesEnabled=1 '
        f'HiddenServiceDir="{transfer_dir}" HiddenServicePort="80 127.0.0.1:{transfer.port}" '
        "HiddenServicePoWDefensesEnabled=1"
    )
    await service_tor.msg("SAVECONF")  # so that SIGNAL RELOAD (add-client) keeps them
    org = create_demo_org(tmp_path / "org", port=0, cheap_kdf=True)
    tor = {"mode": "attach", "control_socket": str(tor_network.service.control_socket)}
    try:
        async with (
            serve_org(org, tor=tor, server={"listen": f"unix:{socket_path}"},
                      transfer={"listen": f"127.0.0.1:{transfer.port}"}) as server,
            publish_onions(server.config.onion_settings(), server.url) as onions,
        ):
            source_address = (source_dir / "hostname").read_text().strip()
            transfer_address = (transfer_dir / "hostname").read_text().strip()
            assert onions == [f"http://{source_address}/", f"http://{transfer_address}/"]
            assert await service_tor.onion_ids(detached=True) == []  # nothing ephemeral added
            # The reload makes tor upload a new descriptor that names bob. A client that asked
            # before it arrived would get the old one and, having asked every HSDir, would not
            # ask again for many minutes: so wait for the upload, as an operator would.
            async with service_tor.hs_desc_events() as events:
                code, out = await _amanat("onion", "add-client", "bob", "--config",
                                          str(server.config_path))
                assert code == 0, out
                await await_upload(events, transfer_address.removesuffix(".onion"), 90)
            line = out.strip().splitlines()[-1]
            assert line.startswith(transfer_address.removesuffix(".onion") + ":descriptor:")
            assert (transfer_dir / "authorized_clients" / "bob.auth").exists()
            key_file = tor_network.client_auth_dir / "bob.auth_private"
            key_file.write_text(line + "\n")
            await (await tor_network.connect_client()).reload()
            status, body = await retry(
                lambda: socks_get(tor_network.socks_port, f"http://{transfer_address}/", 20),
                timeout=60, what="the torrc transfer onion with bob's key",
            )
            assert (status, body) == (200, "transfer api stand-in")

            async def status_ok() -> str:
                code, out = await _amanat("onion", "status", "--config", str(server.config_path))
                assert code == 0, out
                return out
            out = await retry(status_ok, timeout=90, what="amanat onion status", pause=2)
            assert f"kind:          torrc {transfer_dir}; client auth (2 clients)" in out
            assert out.count("PoW defenses:  on") == 2
    finally:
        transfer.close()
        (tor_network.client_auth_dir / "bob.auth_private").unlink(missing_ok=True)
        await service_tor.msg("RESETCONF HiddenServiceDir")
        await service_tor.msg("SAVECONF")


async def test_the_watch_brings_the_onion_back_after_tor_forgets_it_or_restarts(
    tor_network: TorNetwork, tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tor of its own, attached to like a system tor: first the onion is deleted behind
    Amanat's back, then that tor is stopped and started again (ephemeral onions die with it).
    Both times the watch publishes the onion again, at the same address."""
    root = tmp_path_factory.mktemp("watch")
    tor_dir = root / "tor"

    async def start_tor() -> tuple[LaunchedTor, TorController]:
        launched, owner = await launch_tor(tor_dir, extra_options=tor_network.service_options())
        await owner.wait_bootstrapped(60)
        return launched, owner

    launched, owner = await start_tor()
    org = create_demo_org(root / "org", port=0, cheap_kdf=True)
    tor = {"mode": "attach", "control_socket": str(tor_dir / "control.sock")}

    async def fetch(url: str, what: str) -> None:
        status, _ = await retry(lambda: socks_get(tor_network.socks_port, url, timeout=20),
                                timeout=60, what=what)
        assert status == 200

    async def served_again(address: str) -> None:
        assert address in await owner.onion_ids(detached=True)

    try:
        with caplog.at_level(logging.WARNING, logger="amanat.onion"):
            async with (
                serve_org(org, tor=tor) as server,
                publish_onions(server.config.onion_settings(), server.url,
                               watch_interval=0.5) as onions,
            ):
                (url,) = onions
                address = url.removeprefix("http://").split(".onion")[0]
                await fetch(url, "the onion landing page")

                await owner.msg(f"DEL_ONION {address}")
                await retry(lambda: served_again(address), timeout=30, what="re-publishing")
                await fetch(url, "the landing page after tor forgot the onion")

                await owner.close()  # tor exits with its owning controller
                launched.stop()
                launched, owner = await start_tor()
                await retry(lambda: served_again(address), timeout=60, what="after a restart")
                await fetch(url, "the landing page after tor restarted")
        assert "reconnecting" in caplog.text
        assert caplog.text.count("publishing it again") == 2
    finally:
        await owner.close()
        launched.stop()
