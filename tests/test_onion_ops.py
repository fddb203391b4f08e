"""Operating the onions as docs/deploy.md orders it, on the private Tor network: a client added
while Amanat serves, a workstation before and after it has its key, `amanat onion status` run
again and again, and a tor restart that must bring back every onion of the record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import serve_org
from test_onion_services import _amanat
from tornet import TorNetwork, report, retry

from dropbox.app import start_site
from dropbox.demo import create_demo_org
from dropbox.transfer_api import create_transfer_app
from onion.controller import LaunchedTor, TorController, launch_tor
from onion.publish import publish_onions, read_state
from onion.services import await_upload

pytestmark = pytest.mark.tor

F4_SENTENCE = "this workstation is not authorized for the transfer onion"


async def test_a_client_added_while_serving_survives_a_tor_restart(
    tor_network: TorNetwork, tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> None:
    root = tmp_path_factory.mktemp("ops")
    tor_dir = root / "tor"

    async def start_tor() -> tuple[LaunchedTor, TorController]:
        launched, owner = await launch_tor(tor_dir, extra_options=tor_network.service_options())
        await owner.wait_bootstrapped(60)
        return launched, owner

    launched, owner = await start_tor()
    org = create_demo_org(root / "org", port=0, cheap_kdf=True)
    passphrase = root / "passphrase"
    passphrase.write_text(org.passphrase + "\n")
    tor = {"mode": "attach", "control_socket": str(tor_dir / "control.sock")}
    transfer = {"listen": f"127.0.0.1:{tor_network.ports.take()}"}
    key_file = tor_network.client_auth_dir / "amanat-ops.auth_private"
    bundles = iter(range(1000))

    async def pull(url: str) -> tuple[int, str]:
        return await _amanat(
            "transfer", "pull", "--url", url, "--socks", f"127.0.0.1:{tor_network.socks_port}",
            "--credential", str(org.credential_path), "--passphrase-file", str(passphrase),
            "--out", str(root / f"bundle-{next(bundles)}.tar"))

    try:
        async with serve_org(org, tor=tor, transfer=transfer) as server:
            assert server.config.transfer.listen is not None
            runner, _ = await start_site(create_transfer_app(server.config),
                                         server.config.transfer.listen)
            config = str(server.config_path)
            try:
                settings = server.config.onion_settings()
                async with publish_onions(settings, server.url, watch_interval=0.5) as onions:
                    assert len(onions) == 1  # no client yet: the source onion only
                    code, out = await _amanat("onion", "add-client", "alice", "--config", config)
                    assert code == 0, out
                    line = out.strip().splitlines()[-1]
                    transfer_address = line.split(":", 1)[0]
                    url = f"http://{transfer_address}.onion"

                    # A workstation without its key: tor's 0xF4, in words, exit status 2.
                    async def refused() -> None:
                        code, out = await pull(url)
                        assert code == 2, out
                        assert F4_SENTENCE in out, out
                        assert "Traceback" not in out
                    await retry(refused, timeout=90, what="the 0xF4 sentence", pause=1)

                    # The key installed as docs/deploy.md says (file, reload): the very next
                    # pull works, with no NEWNYM and no second try by hand.
                    key_file.write_text(line + "\n")
                    key_file.chmod(0o600)
                    await (await tor_network.connect_client()).reload()
                    code, out = await pull(url)
                    assert code == 0, out
                    assert "pulled a bundle" in out

                    code, out = await _amanat("onion", "status", "--json", "--config", config)
                    assert code == 0, out
                    fields = json.loads(out)
                    assert fields["state"] == "ok"
                    assert [s["name"] for s in fields["services"]] == ["source", "transfer"]
                    assert fields["services"][1]["clients"] == ["alice"]
                    assert fields["services"][1]["onion"] == f"{transfer_address}.onion"

                    # tor restarts: every onion of the record comes back, the transfer onion
                    # (published by another process) with its client.
                    await owner.close()  # tor exits with its owning controller
                    launched.stop()
                    launched, owner = await launch_tor(
                        tor_dir, extra_options=tor_network.service_options())
                    source_address = onions[0].removeprefix("http://").split(".onion")[0]
                    async with owner.hs_desc_events() as events:
                        await owner.wait_bootstrapped(60)
                        async def both_back() -> None:
                            detached = await owner.onion_ids(detached=True)
                            assert {source_address, transfer_address} <= set(detached), detached
                        await retry(both_back, timeout=60, what="both onions after the restart")
                        # Until the restarted tor uploads its descriptor, the HSDirs hand out the
                        # old one, whose introduction points are gone: a pull then waits out
                        # tor's 120 s SocksTimeout (seen once in CI). A workstation pulling that
                        # early gets there by trying again; the test waits for the upload.
                        await await_upload(events, transfer_address, timeout=90)

                    async def pulled() -> None:
                        code, out = await pull(url)
                        assert code == 0, out
                    await retry(pulled, timeout=120, what="a pull after the restart", pause=1)

                    seconds = await _status_three_times(config, transfer_address)
                    # what status asked: the HSDirs the watch heard take the uploads
                    recorded = read_state(server.config.onion_settings().paths)
                    assert {s.name for s in recorded if s.hsdirs} == {"source", "transfer"}
                    report("amanat onion status after a tor restart, three runs: "
                           + ", ".join(f"{s:.1f} s" for s in seconds), pytestconfig)

                    # revoked while serving: taken down now, and the watch leaves it down
                    code, out = await _amanat("onion", "revoke-client", "alice", "--config",
                                              config)
                    assert code == 0, out
                    await asyncio.sleep(2)  # the watch looks every 0.5 s
                    assert transfer_address not in await owner.onion_ids(detached=True)
                    code, out = await _amanat("onion", "status", "--json", "--no-self-check",
                                              "--config", config)
                    assert [s["name"] for s in json.loads(out)["services"]] == ["source"], out
            finally:
                await runner.cleanup()
        assert all(s.name != "transfer" for s in read_state(server.config.onion_settings().paths))
    finally:
        key_file.unlink(missing_ok=True)
        await owner.close()
        launched.stop()


async def _status_three_times(config: str, transfer_address: str) -> list[float]:
    """The first run may wait for the descriptors the restart made tor upload; then three runs
    in a row must each find both descriptors (tor would answer a plain HSFETCH from its cache)."""

    async def ok_once() -> None:
        code, out = await _amanat("onion", "status", "--config", config)
        assert code == 0, out

    await retry(ok_once, timeout=90, what="a first clean status after the restart", pause=2)
    seconds = []
    for _ in range(3):
        started = time.monotonic()
        code, out = await _amanat("onion", "status", "--config", config)
        seconds.append(time.monotonic() - started)
        assert code == 0, out
        assert out.count("descriptor:    published") == 2, out
        assert f"transfer onion:  {transfer_address}.onion" in out
        assert "client auth (1 clients)" in out
        assert out.endswith("state:           ok\n")
    return seconds


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _tor_without_a_route(path: Path) -> Path:
    """A tor whose only directory authority is a closed port on 127.0.0.1: it never bootstraps,
    and asks nothing outside this machine."""
    tor = shutil.which("tor")
    assert tor is not None
    port = _closed_port()
    authority = f"nowhere orport={port} v3ident={'A' * 40} 127.0.0.1:{port} {'B' * 40}"
    path.write_text(f'#!/bin/sh\nexec {tor} "$@" --TestingTorNetwork 1 '
                    f'--UseDefaultFallbackDirs 0 --DirAuthority "{authority}"\n')
    path.chmod(0o755)
    return path


def _running_with(needle: str) -> list[int]:
    """PIDs whose command line mentions `needle` (to find a tor left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and needle in (proc / "cmdline").read_text(errors="replace"):
                found.append(int(proc.name))
    return found


NO_TOR = pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")


@NO_TOR
async def test_the_demo_without_a_route_serves_locally_with_the_onion_down(
    tmp_path: Path,
) -> None:
    root = tmp_path / "demo"
    create_demo_org(root, port=0, cheap_kdf=True, tor_mode="launch")
    config = root / "amanat.toml"
    text = config.read_text()
    tor_binary = _tor_without_a_route(tmp_path / "tor-without-a-route")
    config.write_text(text + f'tor_binary = "{tor_binary}"\nbootstrap_timeout = 4\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dropbox.cli", "demo", "--data", str(root), "--cheap-kdf",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not any(line.startswith("amanat demo: serving http://") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the demo exited:\n" + "".join(lines)
            lines.append(line.decode())
        out = "".join(lines)
        assert re.search(r"amanat demo: tor bootstrap \d+%: \w", out), out
        assert ("amanat demo: the onion service is NOT up: tor did not finish bootstrapping "
                "in 4 s") in out
        assert "Can this machine reach the Tor network?" in out
        assert "serving on this computer only (127.0.0.1)" in out
        assert "Traceback" not in out
        url = lines[-1].split("serving ", 1)[1].strip()
        async with aiohttp.ClientSession() as http, http.get(url + "/") as response:
            assert response.status == 200
        assert json.loads((root / "demo.json").read_text())["onions"] == []
        assert _running_with(str(root / "data" / "tor")) == []  # its tor was stopped
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0


@NO_TOR
async def test_a_no_tor_folder_run_with_tor_says_so_and_launches_it(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    create_demo_org(root, port=0, cheap_kdf=True, tor_mode="none")  # as `--no-tor` made it
    config = root / "amanat.toml"
    tor_binary = _tor_without_a_route(tmp_path / "tor-without-a-route")
    config.write_text(config.read_text() + f'tor_binary = "{tor_binary}"\nbootstrap_timeout = 1\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dropbox.cli", "demo", "--data", str(root), "--cheap-kdf",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not any(line.startswith("amanat demo: serving http://") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the demo exited:\n" + "".join(lines)
            lines.append(line.decode())
        out = "".join(lines)
        assert 'says [tor] mode = "none" (made with --no-tor); launching tor' in out
        assert "amanat demo: tor bootstrap" in out  # it did launch tor
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
