"""SOCKS failures on the way to the transfer onion: a sentence and exit status 2, never a
traceback; "not reachable yet" answers are tried again. A small SOCKS5 server on 127.0.0.1 gives
tor's answers (the same bytes tor sends with ExtendedErrors) and, once it lets a request through,
relays it to the real transfer API. The real tor's 0xF4 is in tests/test_onion_ops.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp_socks import ProxyConnectionError, ProxyError
from test_transfer_api import keyring_of, servers, submit

from dropbox.demo import DemoOrg, create_demo_org
from keys.bundle import read_bundle, transfer_key_lookup
from workstation import socks_errors
from workstation.client import TransferClient
from workstation.socks_errors import SocksRouteError, explain, socks_code

SOCKS = ("127.0.0.1", 9050)
ONION = "http://" + "a" * 56 + ".onion"


@pytest.fixture
def org(tmp_path: Path) -> DemoOrg:
    return create_demo_org(tmp_path / "org", port=0, cheap_kdf=True)


def test_each_answer_of_tor_has_its_sentence() -> None:
    f4 = explain(ProxyError("Invalid reply code: 0XF4"), SOCKS)
    assert "this workstation is not authorized for the transfer onion" in f4
    assert "0xF4" in f4
    assert "add-client" in f4
    for code in ("0XF2", "0XF3", "0XF0", "0XF7"):
        text = explain(ProxyError(f"Invalid reply code: {code}"), SOCKS)
        assert "not reachable yet" in text, text
    plain = explain(ProxyError("Host unreachable", error_code=4), SOCKS)
    assert "not reachable yet" in plain
    assert "ExtendedErrors" in plain  # tor without it answers a missing key with 0x04 too
    assert "ExtendedErrors" not in explain(ProxyError("Invalid reply code: 0XF2"), SOCKS)
    assert "revoked" in explain(ProxyError("Invalid reply code: 0XF5"), SOCKS)
    refused = explain(ProxyConnectionError("Couldn't connect to proxy"), SOCKS)
    assert "tor is not running on that port" in refused
    assert "127.0.0.1:9050" in refused
    odd = explain(ProxyError("Invalid reply code: 0X99"), SOCKS)
    assert "0x99" in odd


def test_the_code_is_read_from_the_field_or_the_message() -> None:
    assert socks_code(ProxyError("Host unreachable", error_code=4)) == 4
    assert socks_code(ProxyError("Invalid reply code: 0XF4")) == 0xF4
    assert socks_code(ProxyError("Connection closed")) is None


class FakeSocks:
    """A SOCKS5 server: answers `codes` in turn (0 = success: relay to the target)."""

    def __init__(self, codes: list[int], target: tuple[str, int] | None = None) -> None:
        self.codes, self.target, self.connects = codes, target, 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeSocks:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            greeting = await reader.readexactly(2)
            await reader.readexactly(greeting[1])
            writer.write(b"\x05\x00")
            head = await reader.readexactly(4)  # VER CMD RSV ATYP
            # a name (rdns, as for an onion), or the IPv4/IPv6 address of a loopback URL
            size = (await reader.readexactly(1))[0] if head[3] == 3 else {1: 4, 4: 16}[head[3]]
            await reader.readexactly(size + 2)  # and the port
            code = self.codes[min(self.connects, len(self.codes) - 1)]
            self.connects += 1
            writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            await writer.drain()
            if code == 0 and self.target is not None:
                await self._relay(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.target is not None
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socks_errors, "RETRY_PAUSE", 0.05)
    monkeypatch.setattr(socks_errors, "RETRY_FOR", 1.0)


@contextlib.asynccontextmanager
async def via_socks(org: DemoOrg, codes: list[int]) -> AsyncIterator[tuple[FakeSocks, str]]:
    async with servers(org) as pair:
        await submit(pair, "through a proxy", [("a.txt", b"relayed", "text/plain")])
        target = urlsplit(pair.url)
        assert target.hostname is not None
        assert target.port is not None
        async with FakeSocks(codes, (target.hostname, target.port)) as proxy:
            yield proxy, pair.url


async def test_not_reachable_yet_is_tried_again_and_then_works(
    org: DemoOrg, quick_retries: None
) -> None:
    # as tor answers for a few seconds after it reloaded a newly saved client key
    said: list[str] = []
    async with via_socks(org, [0x04, 0xF2, 0]) as (proxy, url):
        out = io.BytesIO()
        async with TransferClient(url, org.credential.signing_key,
                                  f"127.0.0.1:{proxy.port}", say=said.append) as client:
            await client.pull(out)
    assert proxy.connects == 3
    out.seek(0)
    bundle = read_bundle(out, transfer_key_lookup(keyring_of(org).transfer_verify_key))
    assert len(bundle.manifest.items) == 1
    assert sum("not reachable yet" in line for line in said) == 2


async def test_not_reachable_for_too_long_is_a_sentence(org: DemoOrg, quick_retries: None) -> None:
    async with via_socks(org, [0xF3]) as (proxy, url):
        client = TransferClient(url, org.credential.signing_key, f"127.0.0.1:{proxy.port}")
        async with client:
            with pytest.raises(SocksRouteError, match="not reachable yet"):
                await client.pull(io.BytesIO())
    assert 2 <= proxy.connects <= 25  # bounded: it gives up


async def test_not_authorized_is_not_tried_again(org: DemoOrg, quick_retries: None) -> None:
    async with via_socks(org, [0xF4]) as (proxy, url):
        client = TransferClient(url, org.credential.signing_key, f"127.0.0.1:{proxy.port}")
        async with client:
            with pytest.raises(SocksRouteError, match="not authorized for the transfer onion"):
                await client.ack(["0" * 32])
    assert proxy.connects == 1


async def _amanat(*args: object) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dropbox.cli", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _cli(org: DemoOrg, tmp_path: Path, command: str, socks: str) -> tuple[int, str]:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(org.passphrase + "\n")
    extra: list[object] = {"pull": ["--out", tmp_path / "b.tar"], "ack": ["0" * 32],
                           "push": [tmp_path]}[command]
    (tmp_path / "reply.tar").write_bytes(b"not even read")
    return await _amanat("transfer", command, "--url", ONION, "--socks", socks,
                         "--credential", org.credential_path, "--passphrase-file", passphrase,
                         *extra)


@pytest.mark.parametrize("command", ["pull", "ack", "push"])
async def test_tor_not_running_is_a_sentence_and_exit_2(
    org: DemoOrg, tmp_path: Path, command: str
) -> None:
    code, out = await _cli(org, tmp_path, command, f"127.0.0.1:{_closed_port()}")
    assert code == 2, out
    assert "tor is not running on that port" in out
    assert "Traceback" not in out
    assert not (tmp_path / "b.tar").exists()


async def test_the_cli_says_0xf4_and_exits_2(org: DemoOrg, tmp_path: Path) -> None:
    async with FakeSocks([0xF4]) as proxy:
        code, out = await _cli(org, tmp_path, "pull", f"127.0.0.1:{proxy.port}")
    assert code == 2, out
    assert "this workstation is not authorized for the transfer onion" in out
    assert "Traceback" not in out


async def test_a_proxy_that_hangs_up_or_talks_nonsense_is_a_sentence(
    org: DemoOrg, tmp_path: Path
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 400 nonsense\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        code, out = await _cli(org, tmp_path, "pull", f"127.0.0.1:{port}")
    finally:
        server.close()
    assert code == 2, out
    assert "Traceback" not in out
    assert "amanat: tor on 127.0.0.1:" in out
