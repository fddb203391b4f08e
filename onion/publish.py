"""`publish_onions(config, address)`: the hook `amanat serve`/`amanat demo` use.

It reaches tor the way `[tor] mode` says ("launch": our own tor with its DataDirectory inside the
data folder; "attach": a running tor's control socket or port), then publishes the source onion
and, when the transfer listener is configured and investigators have client keys, the transfer
onion. A service that torrc already defines (`HiddenServiceDir` pointing at the same target) is
not duplicated: its address is read from the `hostname` file. What was published is recorded in
`<data>/onion/services.json` for `amanat onion status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keys.errors import ConfigError, TorError
from onion.client_auth import ClientKeyPair, ClientRegistry, auth_private_line
from onion.controller import LaunchedTor, TorController, launch_tor
from onion.errors import TorTimeoutError
from onion.services import (
    PublishedService,
    ServiceSpec,
    load_or_create_key,
    onion_address,
    publish,
    read_hostname,
    unpublish,
)
from onion.status import StatusReport, collect
from onion.watch import DEFAULT_INTERVAL, OnionWatch

if TYPE_CHECKING:
    from dropbox.config import Config

log = logging.getLogger("amanat.onion")


@dataclass(frozen=True)
class OnionPaths:
    """Where onion/ keeps its files inside the data folder."""

    root: Path

    @classmethod
    def for_config(cls, config: Config) -> OnionPaths:
        return cls(config.storage.data_dir / "onion")

    @property
    def source_key(self) -> Path:
        return self.root / "source.key"

    @property
    def transfer_key(self) -> Path:
        return self.root / "transfer.key"

    @property
    def transfer_clients(self) -> Path:
        return self.root / "transfer_clients"

    @property
    def state(self) -> Path:
        return self.root / "services.json"

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)


def tor_target(address: str) -> str:
    """`http://127.0.0.1:8080` or `unix:/path` (the app's address) -> an ADD_ONION target."""
    return address.removeprefix("http://").rstrip("/")


def listen_target(listen: object) -> str:
    """A dropbox `Listen` -> an ADD_ONION target (`unix:/path` or `host:port`)."""
    return str(listen)


async def attach(config: Config) -> TorController:
    """Connect to the running tor of `[tor] mode = "attach"`: cookie, or the password file."""
    tor = config.tor
    password = None
    if tor.control_password_file is not None:
        try:
            password = tor.control_password_file.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[tor] control_password_file: {exc.strerror}") from None
    return await TorController.connect(
        socket_path=tor.control_socket, port=tor.control_port, password=password
    )


@contextlib.asynccontextmanager
async def tor_for(config: Config) -> AsyncIterator[TorController]:
    """A control connection to the tor `config` names; a launched tor stops when it closes."""
    tor = config.tor
    if tor.mode == "launch":
        data_dir = tor.data_dir or config.storage.data_dir / "tor"
        launched: LaunchedTor | None = None
        try:
            launched, controller = await launch_tor(data_dir, tor_binary=tor.tor_binary)
            try:
                await controller.wait_bootstrapped(180)
            except TorTimeoutError as exc:
                raise TorTimeoutError(
                    f"{exc}. Can this machine reach the Tor network? (See {data_dir}/notice.log;"
                    " `amanat demo --no-tor` serves without an onion.)"
                ) from exc
            yield controller
        finally:
            if launched is not None:
                launched.stop()
        return
    if tor.mode == "attach":
        async with await attach(config) as controller:
            yield controller
        return
    raise ConfigError(f"[tor] mode is {tor.mode!r}: there is no tor to talk to")


async def torrc_services(controller: TorController) -> dict[str, Path]:
    """Targets of torrc-defined services -> their HiddenServiceDir."""
    found: dict[str, Path] = {}
    for hs_dir, options in (await controller.hidden_service_conf()).items():
        for port_line in options.get("HiddenServicePort", []):
            _virtual, _, target = port_line.partition(" ")
            found[target or "127.0.0.1:" + port_line] = Path(hs_dir)
    return found


async def publish_all(
    controller: TorController, config: Config, address: str
) -> list[PublishedService]:
    """Publish (or find in torrc) the source onion and, if possible, the transfer onion."""
    paths = OnionPaths.for_config(config)
    paths.ensure()
    in_torrc = await torrc_services(controller)
    hs_conf = await controller.hidden_service_conf()
    published = []
    for spec in _wanted_specs(config, address, in_torrc):
        if spec.target in in_torrc:
            hs_dir = in_torrc[spec.target]
            published.append(_torrc_service(spec.name, hs_dir, hs_conf.get(str(hs_dir), {})))
        else:
            published.append(await publish(controller, spec))
    write_state(paths, published)
    return published


async def publish_again(
    controller: TorController, config: Config, address: str, names: set[str],
    current: list[PublishedService],
) -> list[PublishedService]:
    """Publish the ephemeral services `names` of `current` again (same keys, same addresses,
    today's client keys); returns `current` with those replaced, less any no longer wanted (the
    transfer onion after its last client was revoked). The descriptor upload is not
    awaited: the watch must stay free to notice the next failure (tor may go away meanwhile),
    and it sees the service in tor's list as soon as ADD_ONION succeeded."""
    specs = {s.name: s for s in _wanted_specs(config, address, await torrc_services(controller))}
    again = {
        n: await publish(controller, specs[n], await_publication=False)
        for n in sorted(names) if n in specs
    }
    services = [again.get(s.name, s) for s in current if s.name in specs or s.torrc_dir]
    write_state(OnionPaths.for_config(config), services)
    return services


def _wanted_specs(config: Config, address: str, in_torrc: dict[str, Path]) -> list[ServiceSpec]:
    """The source onion, and the transfer onion once it has a client key or torrc defines it."""
    paths = OnionPaths.for_config(config)
    wanted = [ServiceSpec("source", paths.source_key, tor_target(address))]
    if config.transfer.listen is not None:
        clients = ClientRegistry(paths.transfer_clients).public_keys()
        spec = ServiceSpec("transfer", paths.transfer_key, listen_target(config.transfer.listen),
                           client_keys=clients)
        if clients or spec.target in in_torrc:
            wanted.append(spec)
        else:
            log.warning("no investigator client keys yet: the transfer onion is not published "
                        "(add one with `amanat onion add-client NAME`)")
    return wanted


def _torrc_service(name: str, hs_dir: Path, options: dict[str, list[str]]) -> PublishedService:
    pow_on = options.get("HiddenServicePoWDefensesEnabled", ["0"])[-1] == "1"
    try:  # tor turns client auth on as soon as authorized_clients/ holds a key
        clients: tuple[str, ...] | None = tuple(sorted(
            p.name.removesuffix(".auth") for p in (hs_dir / "authorized_clients").iterdir()
            if p.name.endswith(".auth")
        ))
    except FileNotFoundError:
        clients = ()
    except PermissionError:
        clients = None  # only root and debian-tor may look
    return PublishedService(name, read_hostname(hs_dir), pow_defenses=pow_on,
                            client_auth=clients is None or bool(clients), clients=clients,
                            torrc_dir=str(hs_dir))


def write_state(paths: OnionPaths, services: list[PublishedService]) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(s) for s in services], indent=1))
    os.replace(tmp, paths.state)


def read_state(paths: OnionPaths) -> list[PublishedService]:
    try:
        raw = json.loads(paths.state.read_text())
    except FileNotFoundError:
        return []
    return [PublishedService(**{**item, "clients": _tuple_or_none(item.get("clients"))})
            for item in raw]


def _tuple_or_none(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@contextlib.asynccontextmanager
async def publish_onions(
    config: Config, address: str, *, watch_interval: float = DEFAULT_INTERVAL
) -> AsyncIterator[list[str]]:
    """The serve hook: publish, yield the onion URLs while an `OnionWatch` keeps them up, and
    take ephemeral services down after."""
    async with tor_for(config) as controller:
        services = await publish_all(controller, config, address)

        async def republish(
            ctl: TorController, names: set[str], current: list[PublishedService]
        ) -> list[PublishedService]:
            return await publish_again(ctl, config, address, names, current)

        reconnect = (lambda: attach(config)) if config.tor.mode == "attach" else None
        watch = OnionWatch(controller, services, republish, reconnect, watch_interval)
        task = asyncio.create_task(watch.run(), name="amanat onion watch")
        try:
            yield [f"http://{s.onion}/" for s in services]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for service in watch.services:
                if not service.torrc_dir:
                    with contextlib.suppress(TorError):
                        await unpublish(watch.controller, service.address)
            await watch.close()


# --- commands that run beside a serving process (`amanat onion ...`) ---------------------------


@contextlib.asynccontextmanager
async def attach_for_cli(config: Config) -> AsyncIterator[TorController]:
    """Attach to the tor `config` uses without launching one (in launch mode: the tor that
    `amanat serve` started, through its control socket)."""
    tor = config.tor
    if tor.mode == "launch":
        data_dir = tor.data_dir or config.storage.data_dir / "tor"
        controller = await TorController.connect(socket_path=data_dir / "control.sock")
    elif tor.mode == "attach":
        controller = await attach(config)
    else:
        raise ConfigError('[tor] mode is "none": there is no tor to ask')
    async with controller:
        yield controller


def _transfer_spec(config: Config, clients: dict[str, bytes]) -> ServiceSpec:
    if config.transfer.listen is None:
        raise ConfigError("the config has no [transfer] listen address: no transfer onion")
    paths = OnionPaths.for_config(config)
    return ServiceSpec("transfer", paths.transfer_key, listen_target(config.transfer.listen),
                       client_keys=clients)


async def _refresh_transfer(controller: TorController, config: Config) -> None:
    """Re-publish the ephemeral transfer onion with the current client list (same address)."""
    paths = OnionPaths.for_config(config)
    clients = ClientRegistry(paths.transfer_clients).public_keys()
    spec = _transfer_spec(config, clients)
    state = [s for s in read_state(paths) if s.name != "transfer"]
    if clients:
        state.append(await publish(controller, spec))
    else:
        await unpublish(controller, onion_address(load_or_create_key(spec.key_file)))
    write_state(paths, state)


async def add_client(config: Config, name: str) -> str:
    """Authorize a new investigator workstation; returns its `.auth_private` line (print once)."""
    pair = ClientKeyPair.generate()
    paths = OnionPaths.for_config(config)
    paths.ensure()
    spec = _transfer_spec(config, {})
    async with attach_for_cli(config) as controller:
        hs_dir = (await torrc_services(controller)).get(spec.target)
        if hs_dir is not None:
            ClientRegistry(hs_dir / "authorized_clients").add(name, pair.public)
            await controller.reload()
            return auth_private_line(read_hostname(hs_dir), pair.private)
        ClientRegistry(paths.transfer_clients).add(name, pair.public)
        await _refresh_transfer(controller, config)
    address = onion_address(load_or_create_key(paths.transfer_key))
    return auth_private_line(address, pair.private)


async def revoke_client(config: Config, name: str) -> None:
    """Remove an investigator workstation's key; tor stops serving it the descriptor."""
    spec = _transfer_spec(config, {})
    async with attach_for_cli(config) as controller:
        hs_dir = (await torrc_services(controller)).get(spec.target)
        if hs_dir is not None:
            ClientRegistry(hs_dir / "authorized_clients").remove(name)
            await controller.reload()
            return
        ClientRegistry(OnionPaths.for_config(config).transfer_clients).remove(name)
        await _refresh_transfer(controller, config)


async def status(config: Config, *, self_check: bool = True) -> StatusReport:
    """Ephemeral services from the state file; torrc services looked up afresh (as this user)."""
    async with attach_for_cli(config) as controller:
        services = [s for s in read_state(OnionPaths.for_config(config)) if not s.torrc_dir]
        in_torrc = await torrc_services(controller)
        hs_conf = await controller.hidden_service_conf()
        targets = {"source": listen_target(config.server.listen)}
        if config.transfer.listen is not None:
            targets["transfer"] = listen_target(config.transfer.listen)
        for name, target in targets.items():
            if target in in_torrc and all(s.name != name for s in services):
                hs_dir = in_torrc[target]
                services.append(_torrc_service(name, hs_dir, hs_conf.get(str(hs_dir), {})))
        return await collect(controller, services, self_check=self_check)
