"""onion/ pieces that need no tor: formats, commands, parsing, rendering (fed values)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest
from nacl.bindings import crypto_scalarmult

from onion.client_auth import (
    ClientKeyPair,
    ClientRegistry,
    auth_line,
    auth_private_line,
    b32encode_key,
    control_port_private_key,
    normalize_address,
    parse_auth_line,
    parse_auth_private_line,
)
from onion.controller import (
    BootstrapState,
    HsDescEvent,
    TorController,
    launch_tor,
    render_torrc,
)
from onion.errors import (
    ClientAuthKeyError,
    OnionKeyError,
    TorAuthError,
    TorCommandError,
    TorConnectError,
    TorLaunchError,
    TorNotFoundError,
)
from onion.instance import prepare_dir, read_frontend, setconf_command, tor_secret_key_file
from onion.publish import ensure_instance, note_upload
from onion.services import (
    NOT_BUILT,
    NOT_FOUND,
    PUBLISHED,
    UNCONFIRMED,
    PublishedService,
    ServiceSpec,
    add_onion_command,
    generate_service_key,
    load_or_create_key,
    onion_address,
)
from onion.settings import OnionPaths, OnionSettings, TorSettings
from onion.status import DEGRADED, DOWN, EXIT_STATUS, OK, SelfCheck, ServiceReport, StatusReport
from onion.watch import OnionWatch, stale_services

ROOT = Path(__file__).resolve().parent.parent

# A v3 address from rend-spec-v3 examples' shape: 56 base32 characters.
ADDRESS = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd"


def test_client_key_pair_is_x25519() -> None:
    a, b = ClientKeyPair.generate(), ClientKeyPair.generate()
    assert crypto_scalarmult(a.private, b.public) == crypto_scalarmult(b.private, a.public)
    assert "private" not in repr(a)
    assert b32encode_key(a.private) not in repr(a)


def test_auth_lines_round_trip() -> None:
    pair = ClientKeyPair.generate()
    line = auth_line(pair.public)
    assert line.startswith("descriptor:x25519:")
    assert len(line.split(":")[2]) == 52  # base32 of 32 bytes, no padding
    assert parse_auth_line(line) == pair.public
    private_line = auth_private_line(ADDRESS + ".onion", pair.private)
    assert private_line.startswith(ADDRESS + ":descriptor:x25519:")
    assert parse_auth_private_line(private_line) == (ADDRESS, pair.private)
    assert control_port_private_key(pair.private) == "x25519:" + base64.b64encode(
        pair.private).decode()


@pytest.mark.parametrize("bad", ["", "descriptor:x25519:", "descriptor:ed25519:AAAA",
                                 "descriptor:x25519:not base32!", "descriptor:x25519:AAAA"])
def test_bad_auth_lines_are_input_errors(bad: str) -> None:
    with pytest.raises(ClientAuthKeyError) as info:
        parse_auth_line(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", ["example.com", ADDRESS[:-1], ADDRESS.upper() + "1", ""])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ClientAuthKeyError):
        normalize_address(bad)


def test_registry_adds_once_and_removes(tmp_path: Path) -> None:
    registry = ClientRegistry(tmp_path / "authorized_clients")
    pair = ClientKeyPair.generate()
    path = registry.add("laptop-a", pair.public)
    assert path.stat().st_mode & 0o777 == 0o600
    assert registry.public_keys() == {"laptop-a": pair.public}
    with pytest.raises(ClientAuthKeyError, match="already exists"):
        registry.add("laptop-a", pair.public)
    for bad in ("../x", "a/b", "", ".hidden", "x.auth"):
        with pytest.raises(ClientAuthKeyError):
            registry.add(bad, pair.public)
    registry.remove("laptop-a")
    assert registry.names() == []
    with pytest.raises(ClientAuthKeyError, match="no client"):
        registry.remove("laptop-a")


def test_service_key_is_created_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "source.key"
    blob = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == blob
    address = onion_address(blob)
    assert len(address) == 56
    assert address.endswith("d")  # version byte 3 in the last base32 character
    path.chmod(0o644)
    with pytest.raises(OnionKeyError, match="readable by others"):
        load_or_create_key(path)


def test_onion_address_rejects_garbage() -> None:
    with pytest.raises(OnionKeyError):
        onion_address("not base64!")
    with pytest.raises(OnionKeyError):
        onion_address(base64.b64encode(b"short").decode())
    assert onion_address(generate_service_key()) != onion_address(generate_service_key())


def test_add_onion_command() -> None:
    pair = ClientKeyPair.generate()
    spec = ServiceSpec("transfer", Path("k"), "unix:/run/amanat/transfer.sock",
                       max_streams=8, client_keys={"a": pair.public})
    command = add_onion_command(spec, "BLOB", pow_defenses=True)
    flags = "Flags=Detach,MaxStreamsCloseCircuit,V3Auth"
    assert command.startswith(f"ADD_ONION ED25519-V3:BLOB {flags} ")
    assert "MaxStreams=8 Port=80,unix:/run/amanat/transfer.sock" in command
    assert f"ClientAuthV3={b32encode_key(pair.public)}" in command
    assert "PoWDefensesEnabled=1 PoWQueueRate=" in command
    public = ServiceSpec("source", Path("k"), "127.0.0.1:8080")
    plain = add_onion_command(public, "BLOB", pow_defenses=False)
    assert "PoW" not in plain
    assert "V3Auth" not in plain
    assert "ClientAuthV3" not in plain
    with pytest.raises(OnionKeyError, match="no clients"):
        add_onion_command(ServiceSpec("transfer", Path("k"), "x", client_keys={}), "B",
                          pow_defenses=False)


def test_bootstrap_state_parse() -> None:
    state = BootstrapState.parse('NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo '
                                 'SUMMARY="Loaded enough directory info to build circuits"')
    assert (state.progress, state.tag, state.done) == (75, "enough_dirinfo", False)
    assert state.summary == "Loaded enough directory info to build circuits"
    assert BootstrapState.parse("NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"").done
    with pytest.raises(TorCommandError):
        BootstrapState.parse("garbage")


def test_torrc_rendering_refuses_injection() -> None:
    assert render_torrc([("SocksPort", "auto")]) == "SocksPort auto\n"
    with pytest.raises(TorLaunchError):
        render_torrc([("SocksPort", "auto\nControlPort 9051")])
    with pytest.raises(TorLaunchError):
        render_torrc([("Socks Port", "1")])


def _report(*services: ServiceReport, check: SelfCheck | None) -> StatusReport:
    return StatusReport("0.4.9.11", BootstrapState(100, "done", "Done"), ("127.0.0.1", 9050),
                        tuple(services), check)


def test_status_report_states_render_and_json() -> None:
    source = PublishedService("source", ADDRESS, pow_defenses=True, client_auth=False)
    transfer = PublishedService("transfer", ADDRESS, pow_defenses=True, client_auth=True,
                                clients=("a", "b"))
    good = _report(ServiceReport(source, True, PUBLISHED),
                   ServiceReport(transfer, True, PUBLISHED),
                   check=SelfCheck(True, "GET / -> HTTP 200", 0.4))
    assert good.state == OK
    assert good.ok
    text = good.render()
    assert f"source onion:    {ADDRESS}.onion" in text
    assert "client auth (2 clients)" in text
    assert "self-check:      ok" in text
    assert text.endswith("state:           ok")
    fields = json.loads(good.to_json())
    assert fields["state"] == "ok"
    assert fields["bootstrap"] == {"progress": 100, "summary": "Done"}
    assert [s["name"] for s in fields["services"]] == ["source", "transfer"]
    assert fields["services"][1]["clients"] == ["a", "b"]
    assert fields["services"][1]["descriptor"] == PUBLISHED
    assert fields["self_check"]["ok"] is True
    # every line of the text has its field
    assert len(text.splitlines()) == 3 + 5 * 2 + 2
    assert EXIT_STATUS[OK] == 0

    no_pow = dataclasses.replace(transfer, pow_defenses=False)
    weak = _report(ServiceReport(source, True, PUBLISHED), ServiceReport(no_pow, True, PUBLISHED),
                   check=None)
    assert weak.state == DEGRADED
    assert "PoW defenses:  OFF" in weak.render()
    assert _report(ServiceReport(source, True, UNCONFIRMED), check=None).state == DEGRADED
    public_transfer = PublishedService("transfer", ADDRESS, pow_defenses=True, client_auth=False)
    assert _report(ServiceReport(public_transfer, True, PUBLISHED), check=None).state == DEGRADED
    assert "PUBLIC: NO CLIENT AUTHORIZATION" in _report(
        ServiceReport(public_transfer, True, PUBLISHED), check=None).render()

    unpublished = _report(ServiceReport(source, True, NOT_FOUND), check=None)
    assert unpublished.state == DOWN
    assert "NOT FOUND" in unpublished.render()
    assert _report(ServiceReport(source, True, NOT_BUILT), check=None).state == DOWN
    assert _report(ServiceReport(source, True, PUBLISHED),
                   check=SelfCheck(False, "timeout", 30.0)).state == DOWN
    assert _report(check=None).state == DOWN  # nothing at all
    # the record expects the transfer onion but tor does not serve it: down, and said so
    gone = _report(ServiceReport(source, True, PUBLISHED), ServiceReport(transfer, False, "-"),
                   check=None)
    assert gone.state == DOWN
    assert "running:       NO: tor does not serve it" in gone.render()
    assert json.loads(gone.to_json())["services"][1]["running"] is False
    never = dataclasses.replace(transfer, address="")
    text = _report(ServiceReport(never, False, "-"), check=None).render()
    assert "transfer onion:  (none yet)" in text
    assert "NO: it has no key yet" in text
    assert EXIT_STATUS[DOWN] == 2


async def test_missing_tor_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TorNotFoundError, match="not installed"):
        await launch_tor(tmp_path / "tor", tor_binary="no-such-tor-binary")


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")
async def test_tor_refusing_its_config_reports_tors_own_words(tmp_path: Path) -> None:
    with pytest.raises(TorLaunchError, match="NoSuchOption"):
        await launch_tor(tmp_path / "tor", extra_options=[("NoSuchOption", "1")])
    assert (tmp_path / "tor").stat().st_mode & 0o777 == 0o700


async def test_unreachable_control_socket(tmp_path: Path) -> None:
    with pytest.raises(TorConnectError):
        await TorController.connect(socket_path=tmp_path / "nothing.sock")
    with pytest.raises(TorConnectError, match="no control socket or control port"):
        await TorController.connect()


async def test_nothing_listening_on_the_control_port() -> None:
    from tornet import PortPicker

    with pytest.raises(TorConnectError):
        await TorController.connect(port=PortPicker().take())


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")
async def test_password_authentication(tmp_path: Path) -> None:
    """A tor that also takes a control password (no network needed: nothing is fetched)."""
    hashed = subprocess.run(["tor", "--quiet", "--hash-password", "s3cret"], check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    launched, owner = await launch_tor(tmp_path / "tor", extra_options=[
        ("HashedControlPassword", hashed), ("DisableNetwork", "1")])
    try:
        await owner.msg("SETCONF CookieAuthentication=0")  # from now on: the password only
        async with await TorController.connect(socket_path=launched.control_socket,
                                               password="s3cret") as controller:
            assert (await controller.version()).startswith("0.")
        with pytest.raises(TorAuthError):
            await TorController.connect(socket_path=launched.control_socket, password="wrong")
    finally:
        await owner.close()
        launched.stop()
    assert not launched.running()


def _service(name: str, address: str, torrc_dir: str = "",
             clients: tuple[str, ...] = ()) -> PublishedService:
    return PublishedService(name, address, pow_defenses=True, client_auth=bool(clients),
                            clients=clients, torrc_dir=torrc_dir)


def test_the_watch_republishes_only_ephemeral_services_tor_forgot() -> None:
    source, transfer = "a" * 56, "b" * 56
    services = [_service("source", source), _service("transfer", transfer, clients=("alice",))]
    assert stale_services(services, services, [source, transfer]) == []
    assert stale_services(services, services, [transfer, "c" * 56]) == [services[0]]
    assert stale_services(services, services, []) == services
    # torrc owns a HiddenServiceDir service: never in onions/detached, never ours to publish
    in_torrc = [_service("source", source, torrc_dir="/var/lib/tor/amanat-source")]
    assert stale_services(in_torrc, in_torrc, []) == []


def test_the_watch_follows_the_record_whichever_process_changed_it() -> None:
    source, transfer = "a" * 56, "b" * 56
    at_start = [_service("source", source)]
    # `amanat onion add-client` (another process) published the transfer onion and recorded it
    recorded = [*at_start, _service("transfer", transfer, clients=("alice",))]
    expected = list(recorded)
    assert stale_services(expected, recorded, [source, transfer]) == []
    # tor restarted: both are gone from tor, both come back
    assert stale_services(expected, recorded, []) == expected
    # a client was added to the record but tor still serves the old client list
    expected_bob = [at_start[0], _service("transfer", transfer, clients=("alice", "bob"))]
    assert stale_services(expected_bob, recorded, [source, transfer]) == [expected_bob[1]]
    # never published (no record of it yet): published, although tor lists the address
    assert stale_services(expected, at_start, [source, transfer]) == [expected[1]]
    # the key changed (a restored backup): the recorded address is not the expected one
    moved = [_service("source", "c" * 56)]
    assert stale_services(moved, at_start, [source]) == moved


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed")
async def test_reload_then_close_never_hangs(tmp_path: Path) -> None:
    """`amanat onion add-client` reloads tor and exits at once. stem deadlocked in close() when
    its SIGNAL event was still being handled (seen in CI; a bare SIGNAL RELOAD hung after 3 to
    153 rounds when this was found); reload() now returns only after that. The tor is a plain one
    (no owning controller: each round's connection must not take it over), with no network."""
    data = tmp_path / "tor"
    data.mkdir(mode=0o700)
    sock = data / "control.sock"
    (data / "torrc").write_text(render_torrc([
        ("DataDirectory", str(data)), ("ControlSocket", str(sock)),
        ("CookieAuthentication", "1"), ("SocksPort", "0"), ("DisableNetwork", "1"),
    ]))
    tor = subprocess.Popen(["tor", "--defaults-torrc", os.devnull, "-f", str(data / "torrc")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = textwrap.dedent(f"""
        import asyncio, pathlib
        from onion.controller import TorController
        async def main():
            for _ in range(250):
                controller = await TorController.connect(socket_path=pathlib.Path({str(sock)!r}))
                await controller.reload()
                await controller.close()
        asyncio.run(main())
    """)
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.1)
        # In a child process, the way the command runs: a deadlock is a timeout, not a hung suite.
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", rounds, cwd=ROOT)
        try:
            assert await asyncio.wait_for(child.wait(), timeout=90) == 0
        except TimeoutError:
            child.kill()
            await child.wait()
            raise AssertionError("reload() then close() hung") from None
    finally:
        tor.terminate()
        tor.wait(10)


def test_the_record_keeps_the_latest_hsdirs_of_each_onion() -> None:
    source, transfer = "a" * 56, "b" * 56
    services = [_service("source", source), _service("transfer", transfer, clients=("a",))]
    once = note_upload(services, source, "F1")
    assert once is not None
    assert once[0].hsdirs == ("F1",)
    assert once[1].hsdirs == ()
    assert note_upload(once, source, "F1") is None  # nothing new: the file is not rewritten
    assert note_upload(once, "c" * 56, "F9") is None  # not ours
    latest = once
    for n in range(2, 10):
        updated = note_upload(latest, source, f"F{n}")
        assert updated is not None
        latest = updated
    assert latest[0].hsdirs == ("F9", "F8", "F7", "F6", "F5", "F4")  # the latest first, bounded
    again = note_upload(latest, source, "F6")
    assert again is not None
    assert again[0].hsdirs == ("F6", "F9", "F8", "F7", "F5", "F4")


def test_status_without_tor_is_down_and_without_config_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dropbox.cli import main
    from dropbox.demo import create_demo_org

    org = create_demo_org(tmp_path / "org", port=0, cheap_kdf=True, tor_mode="attach")
    config = org.config_path
    config.write_text(config.read_text() + f'control_socket = "{tmp_path / "no.sock"}"\n')
    assert main(["onion", "status", "--json", "--config", str(config)]) == 2
    fields = json.loads(capsys.readouterr().out)
    assert fields["state"] == "down"
    assert "nothing answers at tor's control" in fields["error"]
    assert main(["onion", "status", "--config", str(config)]) == 2
    assert capsys.readouterr().err.endswith("state:           down\n")

    config.write_text("[tor]\nmode = 'attach'\nno_such_key = 1\n")
    assert main(["onion", "status", "--json", "--config", str(config)]) == 3
    assert json.loads(capsys.readouterr().out)["state"] == "unknown"


class _FakeTor:
    """Just what OnionWatch asks of tor: its ephemeral onions, and HS_DESC events."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[HsDescEvent] = asyncio.Queue()

    async def onion_ids(self, detached: bool) -> list[str]:
        return ["a" * 56]

    @contextlib.asynccontextmanager
    async def hs_desc_events(self) -> AsyncIterator[asyncio.Queue[HsDescEvent]]:
        yield self.events


async def test_the_watch_survives_a_bad_record_and_notes_uploads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tor = _FakeTor()
    looks: list[int] = []
    uploads: list[tuple[str, str]] = []

    async def sync(ctl: object, detached: list[str]) -> tuple[set[str], set[str]]:
        looks.append(len(detached))
        if len(looks) == 1:  # a malformed .auth file in transfer_clients/
            raise ClientAuthKeyError("an .auth line must read descriptor:x25519:<base32 key>")
        return set(), set()

    async def on_upload(address: str, hsdir: str) -> None:
        uploads.append((address, hsdir))

    watch = OnionWatch(cast(TorController, tor), sync, None, 0.01, on_upload)
    await tor.events.put(HsDescEvent("UPLOADED", "a" * 56, "$" + "F" * 40 + "~relay", None))
    await tor.events.put(HsDescEvent("UPLOAD", "a" * 56, "$" + "E" * 40 + "~relay", None))
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(_until(lambda: len(looks) >= 3 and uploads), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert "an .auth line must read" in caplog.text  # said, and the watch went on
    assert uploads == [("a" * 56, "F" * 40)]


async def _until(condition: Callable[[], object]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- the source onion as an Onionbalance instance (onion/instance.py) ----------------------------


def test_instance_files_are_what_tor_and_onionbalance_read(tmp_path: Path) -> None:
    key_file = tmp_path / "source.key"
    blob = load_or_create_key(key_file)
    hs_dir = tmp_path / "instance"
    prepare_dir(hs_dir, key_file, f"{ADDRESS.upper()}.onion")
    secret = (hs_dir / "hs_ed25519_secret_key").read_bytes()
    assert secret == b"== ed25519v1-secret: type0 ==\x00\x00\x00" + base64.b64decode(blob)
    assert len(secret) == 96
    assert (hs_dir / "ob_config").read_text() == f"MasterOnionAddress {ADDRESS}.onion\n"
    assert read_frontend(hs_dir) == ADDRESS
    for path in (hs_dir, hs_dir / "hs_ed25519_secret_key", hs_dir / "ob_config"):
        assert path.stat().st_mode & 0o077 == 0
    prepare_dir(hs_dir, key_file, "b" * 52 + "bbad")  # another frontend: replaced
    assert read_frontend(hs_dir) == "b" * 52 + "bbad"
    assert read_frontend(tmp_path / "nowhere") is None
    (hs_dir / "ob_config").write_text("MasterOnionAddress not-an-onion\n")
    assert read_frontend(hs_dir) is None
    with pytest.raises(OnionKeyError):
        tor_secret_key_file(base64.b64encode(b"short").decode())


def test_instance_setconf_keeps_the_other_services() -> None:
    spec = ServiceSpec("source", Path("/k"), "unix:/run/amanat/source.sock")
    others = {"/var/lib/tor/transfer": {"HiddenServicePort": ["80 127.0.0.1:8081"]},
              "/data/onion/source_instance": {"HiddenServicePort": ["80 127.0.0.1:1"]}}
    line = setconf_command(others, drop=Path("/data/onion/source_instance"),
                           add=(Path("/data/onion/source_instance"), spec))
    assert line.startswith('SETCONF HiddenServiceDir="/var/lib/tor/transfer" '
                           'HiddenServicePort="80 127.0.0.1:8081" ')
    assert line.count("HiddenServiceDir=") == 2
    assert "80 127.0.0.1:1" not in line  # the old copy of the instance is replaced
    assert ('HiddenServiceDir="/data/onion/source_instance" '
            'HiddenServicePort="80 unix:/run/amanat/source.sock" '
            "HiddenServiceOnionBalanceInstance=1") in line
    assert "HiddenServicePoWDefensesEnabled=1" in line
    no_pow = dataclasses.replace(spec, pow_defenses=False)
    assert "PoW" not in setconf_command({}, add=(Path('/a "b"'), no_pow))
    assert 'HiddenServiceDir="/a \\"b\\""' in setconf_command({}, add=(Path('/a "b"'), no_pow))
    # taking the instance out leaves the others; with none left the options are reset
    assert setconf_command(others, drop=Path("/data/onion/source_instance")) == (
        'SETCONF HiddenServiceDir="/var/lib/tor/transfer" HiddenServicePort="80 127.0.0.1:8081"')
    one = {"/data/onion/source_instance": others["/data/onion/source_instance"]}
    assert setconf_command(one, drop=Path("/data/onion/source_instance")) == (
        "RESETCONF HiddenServiceDir")


def test_status_names_the_frontend_of_an_instance() -> None:
    source = PublishedService("source", ADDRESS, pow_defenses=True, client_auth=False,
                              torrc_dir="/data/onion/source_instance",
                              onionbalance_frontend="b" * 52 + "bbad")
    report = _report(ServiceReport(source, True, PUBLISHED), check=None)
    assert f"  onionbalance:  instance of {'b' * 52}bbad.onion" in report.render()
    assert json.loads(report.to_json())["services"][0]["onionbalance_frontend"] == (
        "b" * 52 + "bbad.onion")
    plain = dataclasses.replace(source, onionbalance_frontend="")
    assert "onionbalance" not in _report(ServiceReport(plain, True, PUBLISHED),
                                         check=None).render()
    hidden = dataclasses.replace(source, onionbalance_frontend="?")
    assert "cannot read" in _report(ServiceReport(hidden, True, PUBLISHED), check=None).render()


class _FakeInstanceTor:
    """Just what ensure_instance asks of tor: its HiddenServiceDir services, commands, onions."""

    def __init__(self, conf: dict[str, dict[str, list[str]]]) -> None:
        self.conf = conf
        self.sent: list[str] = []

    async def hidden_service_conf(self) -> dict[str, dict[str, list[str]]]:
        return self.conf

    async def onion_ids(self, detached: bool) -> list[str]:
        return []

    async def msg(self, command: str) -> list[str]:
        self.sent.append(command)
        return []


async def test_ensure_instance_adds_it_once_and_leaves_an_operators_torrc(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frontend = "b" * 52 + "bbad"
    paths = OnionPaths(tmp_path / "onion")
    paths.ensure()
    settings = OnionSettings(TorSettings("attach", tmp_path / "tor"), paths,
                             "127.0.0.1:8080", onionbalance_frontend=frontend)
    tor = _FakeInstanceTor({})
    ctl = cast(TorController, tor)
    assert not await ensure_instance(ctl, dataclasses.replace(settings, onionbalance_frontend=None),
                                     "http://127.0.0.1:8080")
    assert tor.sent == []
    assert await ensure_instance(ctl, settings, "http://127.0.0.1:8080")
    (line,) = tor.sent
    assert f'HiddenServiceDir="{paths.instance_dir}"' in line
    assert read_frontend(paths.instance_dir) == frontend
    # tor now serves it: nothing more to do, until the frontend changes
    tor.conf = {str(paths.instance_dir): {"HiddenServicePort": ["80 127.0.0.1:8080"],
                                          "HiddenServiceOnionBalanceInstance": ["1"]}}
    assert not await ensure_instance(ctl, settings, "http://127.0.0.1:8080")
    other = dataclasses.replace(settings, onionbalance_frontend="c" * 52 + "ccad")
    assert await ensure_instance(ctl, other, "http://127.0.0.1:8080")
    assert read_frontend(paths.instance_dir) == "c" * 52 + "ccad"
    # the operator's torrc serves the source onion: left alone, but said if it is no instance
    tor.conf = {"/var/lib/tor/amanat-source": {"HiddenServicePort": ["80 127.0.0.1:8080"]}}
    sent = len(tor.sent)
    with caplog.at_level(logging.ERROR, logger="amanat.onion"):
        assert not await ensure_instance(ctl, settings, "http://127.0.0.1:8080", warn=False)
        assert "NOT an instance" not in caplog.text  # the watch's every look stays quiet
        assert not await ensure_instance(ctl, settings, "http://127.0.0.1:8080")
    assert len(tor.sent) == sent
    assert "NOT an instance" in caplog.text
