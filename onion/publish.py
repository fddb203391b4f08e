"""`publish_onions(settings, address)`: the hook `amanat serve`/`amanat demo` use.

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
import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path

from keys.errors import ConfigError, TorError
from keys.files import replace_atomic
from onion.client_auth import ClientKeyPair, ClientRegistry, auth_private_line
from onion.controller import BootstrapState, LaunchedTor, TorController, launch_tor
from onion.errors import TorTimeoutError
from onion.instance import publish_instance, read_frontend, unpublish_instance
from onion.services import (
    PublishedService,
    ServiceSpec,
    load_or_create_key,
    onion_address,
    publish,
    read_hostname,
    unpublish,
)
from onion.settings import OnionPaths, OnionSettings
from onion.status import StatusReport, collect
from onion.watch import DEFAULT_INTERVAL, OnionWatch, stale_services

log = logging.getLogger("amanat.onion")


def tor_target(address: str) -> str:
    """`http://127.0.0.1:8080` or `unix:/path` (the app's address) -> an ADD_ONION target."""
    return address.removeprefix("http://").rstrip("/")


async def attach(settings: OnionSettings) -> TorController:
    """Connect to the running tor of `[tor] mode = "attach"`: cookie, or the password file."""
    tor = settings.tor
    password = None
    if tor.control_password_file is not None:
        try:
            password = tor.control_password_file.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[tor] control_password_file: {exc.strerror}") from None
    return await TorController.connect(
        socket_path=tor.control_socket, port=tor.control_port, password=password
    )


OnBootstrap = Callable[[int, str], None]  # (percent, tor's summary)


@contextlib.asynccontextmanager
async def tor_for(
    settings: OnionSettings, on_bootstrap: OnBootstrap | None = None
) -> AsyncIterator[TorController]:
    """A control connection to the tor `settings` names; a launched tor stops when it closes."""
    tor = settings.tor
    if tor.mode == "launch":
        data_dir = tor.data_dir
        launched: LaunchedTor | None = None
        try:
            launched, controller = await launch_tor(data_dir, tor_binary=tor.tor_binary)
            def progress(state: BootstrapState) -> None:
                if on_bootstrap is not None:
                    on_bootstrap(state.progress, state.summary)

            try:
                await controller.wait_bootstrapped(tor.bootstrap_timeout, progress)
            except TorTimeoutError as exc:
                await controller.close()
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
        async with await attach(settings) as controller:
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


async def ensure_instance(
    controller: TorController, settings: OnionSettings, address: str, *, warn: bool = True
) -> bool:
    """With `onionbalance_frontend` set: make tor serve the source onion as an Onionbalance
    instance of it, unless torrc already serves that target from a folder of the operator's
    (then ob_config there is the operator's; `warn`: say so if that service is no instance).
    True if tor was changed."""
    frontend = settings.onionbalance_frontend
    if frontend is None:
        return False
    hs_dir = settings.paths.instance_dir
    spec = ServiceSpec("source", settings.paths.source_key, tor_target(address))
    found = (await torrc_services(controller)).get(spec.target)
    if found is not None and found != hs_dir:
        options = (await controller.hidden_service_conf()).get(str(found), {})
        if warn and options.get("HiddenServiceOnionBalanceInstance", ["0"])[-1] != "1":
            log.error("torrc serves the source onion from %s without "
                      "HiddenServiceOnionBalanceInstance 1: it is NOT an instance of %s.onion "
                      "(add that line, and ob_config in that folder: docs/deploy.md)",
                      found, frontend)
        return False
    if found is not None and read_frontend(hs_dir) == frontend:
        return False
    # an ephemeral copy of the same key (published before this node became an instance) would
    # keep tor from adding the service again
    await unpublish(controller, onion_address(load_or_create_key(spec.key_file)))
    await publish_instance(controller, spec, hs_dir, frontend)
    return True


async def publish_all(
    controller: TorController, settings: OnionSettings, address: str
) -> list[PublishedService]:
    """Publish (or find in torrc) the source onion and, if possible, the transfer onion."""
    paths = settings.paths
    async with state_lock(paths):
        await ensure_instance(controller, settings, address)
        in_torrc = await torrc_services(controller)
        hs_conf = await controller.hidden_service_conf()
        published = []
        for spec in _wanted_specs(settings, address, in_torrc):
            if spec.target in in_torrc:
                hs_dir = in_torrc[spec.target]
                found = _torrc_service(spec.name, hs_dir, hs_conf.get(str(hs_dir), {}))
                published.append(_with_recorded_hsdirs(found, read_state(paths)))
            else:
                published.append(await publish(controller, spec))
        write_state(paths, published)
    if settings.transfer_target is not None and all(s.name != "transfer" for s in published):
        log.warning("no investigator client keys yet: the transfer onion is not published "
                    "(add one with `amanat onion add-client NAME`)")
    return published


async def sync_onions(
    controller: TorController, settings: OnionSettings, address: str, detached: list[str]
) -> tuple[set[str], set[str]]:
    """Bring tor in line with the persistent record: publish again each ephemeral onion it
    expects that tor does not list (or lists with other client keys), and take down one no
    longer wanted (the transfer onion after its last client was revoked). Returns (names
    published again, names taken down). The descriptor upload is not awaited: the watch must
    stay free to notice the next failure (tor may go away meanwhile), and it sees the service
    in tor's list as soon as ADD_ONION succeeded."""
    paths = settings.paths
    async with state_lock(paths):
        await ensure_instance(controller, settings, address, warn=False)  # said at start
        in_torrc = await torrc_services(controller)
        specs = {s.name: s for s in _wanted_specs(settings, address, in_torrc)
                 if s.target not in in_torrc}
        recorded = read_state(paths)
        expected = [_expected_service(spec, recorded) for spec in specs.values()]
        stale = stale_services(expected, recorded, detached)
        if stale:
            log.error("onion watch: tor no longer serves the %s onion as recorded; publishing it "
                      "again", ", ".join(s.name for s in stale))
        again = {s.name: await publish(controller, specs[s.name], await_publication=False)
                 for s in stale}
        dropped = {s.name for s in recorded if not s.torrc_dir and s.name not in specs}
        for old in recorded:
            if old.name in dropped:
                await unpublish(controller, old.address)
        services = [again.get(e.name, e) for e in expected]
        services += [s for s in recorded if s.torrc_dir]
        if services != recorded:
            write_state(paths, services)
    return set(again), dropped


def _expected_service(spec: ServiceSpec, recorded: list[PublishedService]) -> PublishedService:
    """What the record says the ephemeral `spec` should be in tor: its key's address, today's
    client keys (PoW as tor last took it)."""
    return _expected_at(spec, onion_address(load_or_create_key(spec.key_file)), recorded)


def _expected_at(
    spec: ServiceSpec, address: str, recorded: list[PublishedService]
) -> PublishedService:
    before = next((s for s in recorded if s.name == spec.name and not s.torrc_dir), None)
    same = before is not None and before.address == address
    return PublishedService(
        spec.name, address, before.pow_defenses if before else spec.pow_defenses,
        spec.client_keys is not None, tuple(sorted(spec.client_keys or {})),
        hsdirs=before.hsdirs if before is not None and same else (),
    )


def _wanted_specs(
    settings: OnionSettings, address: str, in_torrc: dict[str, Path]
) -> list[ServiceSpec]:
    """The source onion, and the transfer onion once it has a client key or torrc defines it."""
    paths = settings.paths
    wanted = [ServiceSpec("source", paths.source_key, tor_target(address))]
    if settings.transfer_target is not None:
        clients = ClientRegistry(paths.transfer_clients).public_keys()
        spec = ServiceSpec("transfer", paths.transfer_key, settings.transfer_target,
                           client_keys=clients)
        if clients or spec.target in in_torrc:
            wanted.append(spec)
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
    instance = options.get("HiddenServiceOnionBalanceInstance", ["0"])[-1] == "1"
    return PublishedService(name, read_hostname(hs_dir), pow_defenses=pow_on,
                            client_auth=clients is None or bool(clients), clients=clients,
                            torrc_dir=str(hs_dir),
                            onionbalance_frontend=(read_frontend(hs_dir) or "?") if instance
                            else "")


STATE_LOCK_TIMEOUT = 120.0  # a publication awaits a descriptor upload (90 s at most)


@contextlib.asynccontextmanager
async def state_lock(paths: OnionPaths) -> AsyncIterator[None]:
    """One process at a time publishes and rewrites `services.json` (the serving process's watch,
    `amanat onion add-client`): an exclusive lock on `<data>/onion/lock`, polled so that a
    cancelled waiter leaves nothing blocked behind it."""
    paths.ensure()
    fd = os.open(paths.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + STATE_LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TorTimeoutError(
                        f"another amanat process holds {paths.root / 'lock'}") from None
                await asyncio.sleep(0.1)
        yield
    finally:
        os.close(fd)  # also releases the lock


def write_state(paths: OnionPaths, services: list[PublishedService]) -> None:
    document = json.dumps([asdict(s) for s in services], indent=1).encode("utf-8")
    replace_atomic(paths.state, document, secret=True)


def read_state(paths: OnionPaths) -> list[PublishedService]:
    try:
        raw = json.loads(paths.state.read_text())
    except FileNotFoundError:
        return []
    return [PublishedService(**{**item, "clients": _tuple_or_none(item.get("clients")),
                                "hsdirs": tuple(item.get("hsdirs", ()))})
            for item in raw]


def _tuple_or_none(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@contextlib.asynccontextmanager
async def publish_onions(
    settings: OnionSettings, address: str, *, watch_interval: float = DEFAULT_INTERVAL,
    on_bootstrap: OnBootstrap | None = None,
) -> AsyncIterator[list[str]]:
    """The serve hook: publish, yield the onion URLs while an `OnionWatch` keeps them up, and
    take ephemeral services down after. `on_bootstrap` hears a launched tor's progress."""
    async with tor_for(settings, on_bootstrap) as controller:
        services = await publish_all(controller, settings, address)

        async def sync(ctl: TorController, detached: list[str]) -> tuple[set[str], set[str]]:
            return await sync_onions(ctl, settings, address, detached)

        reconnect = (lambda: attach(settings)) if settings.tor.mode == "attach" else None
        paths = settings.paths

        async def on_upload(onion: str, hsdir: str) -> None:
            await record_upload(paths, onion, hsdir)

        watch = OnionWatch(controller, sync, reconnect, watch_interval, on_upload)
        task = asyncio.create_task(watch.run(), name="amanat onion watch")
        try:
            yield [f"http://{s.onion}/" for s in services]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # every ephemeral onion of the record, also those another process added
            for service in read_state(paths):
                if not service.torrc_dir:
                    with contextlib.suppress(TorError):
                        await unpublish(watch.controller, service.address)
            if settings.onionbalance_frontend is not None:
                with contextlib.suppress(TorError):
                    await unpublish_instance(watch.controller, paths.instance_dir)
            await watch.close()


# --- commands that run beside a serving process (`amanat onion ...`) ---------------------------


@contextlib.asynccontextmanager
async def attach_for_cli(settings: OnionSettings) -> AsyncIterator[TorController]:
    """Attach to the tor `settings` uses without launching one (in launch mode: the tor that
    `amanat serve` started, through its control socket)."""
    tor = settings.tor
    if tor.mode == "launch":
        data_dir = tor.data_dir
        controller = await TorController.connect(socket_path=data_dir / "control.sock")
    elif tor.mode == "attach":
        controller = await attach(settings)
    else:
        raise ConfigError('[tor] mode is "none": there is no tor to ask')
    async with controller:
        yield controller


def _transfer_spec(settings: OnionSettings, clients: dict[str, bytes]) -> ServiceSpec:
    if settings.transfer_target is None:
        raise ConfigError("the config has no [transfer] listen address: no transfer onion")
    paths = settings.paths
    return ServiceSpec("transfer", paths.transfer_key, settings.transfer_target,
                       client_keys=clients)


async def _refresh_transfer(controller: TorController, settings: OnionSettings) -> None:
    """Re-publish the ephemeral transfer onion with the current client list (same address)."""
    paths = settings.paths
    async with state_lock(paths):
        clients = ClientRegistry(paths.transfer_clients).public_keys()
        spec = _transfer_spec(settings, clients)
        state = [s for s in read_state(paths) if s.name != "transfer"]
        if clients:
            state.append(await publish(controller, spec))
        else:
            await unpublish(controller, onion_address(load_or_create_key(spec.key_file)))
        write_state(paths, state)


async def add_client(settings: OnionSettings, name: str) -> str:
    """Authorize a new investigator workstation; returns its `.auth_private` line (print once)."""
    pair = ClientKeyPair.generate()
    paths = settings.paths
    paths.ensure()
    spec = _transfer_spec(settings, {})
    async with attach_for_cli(settings) as controller:
        hs_dir = (await torrc_services(controller)).get(spec.target)
        if hs_dir is not None:
            ClientRegistry(hs_dir / "authorized_clients").add(name, pair.public)
            await controller.reload()
            return auth_private_line(read_hostname(hs_dir), pair.private)
        ClientRegistry(paths.transfer_clients).add(name, pair.public)
        await _refresh_transfer(controller, settings)
    address = onion_address(load_or_create_key(paths.transfer_key))
    return auth_private_line(address, pair.private)


async def revoke_client(settings: OnionSettings, name: str) -> None:
    """Remove an investigator workstation's key; tor stops serving it the descriptor."""
    spec = _transfer_spec(settings, {})
    async with attach_for_cli(settings) as controller:
        hs_dir = (await torrc_services(controller)).get(spec.target)
        if hs_dir is not None:
            ClientRegistry(hs_dir / "authorized_clients").remove(name)
            await controller.reload()
            return
        ClientRegistry(settings.paths.transfer_clients).remove(name)
        await _refresh_transfer(controller, settings)


async def status(settings: OnionSettings, *, self_check: bool = True) -> StatusReport:
    """Every onion the persistent record expects (the source onion; the transfer onion once it
    has client keys or torrc defines it), as tor has it now. An expected onion tor does not
    serve is reported as not running, whichever process published it or failed to."""
    paths = settings.paths
    recorded = read_state(paths)
    async with attach_for_cli(settings) as controller:
        in_torrc = await torrc_services(controller)
        hs_conf = await controller.hidden_service_conf()
        services = []
        instance_dir = str(settings.paths.instance_dir)
        if settings.onionbalance_frontend is not None and instance_dir in hs_conf:
            # the instance is found by its folder: the configured listen address may differ
            # from the bound one (port 0)
            in_torrc[tor_target(settings.source_target)] = Path(instance_dir)
        for spec in _wanted_specs(settings, settings.source_target, in_torrc):
            if spec.target in in_torrc:
                hs_dir = in_torrc[spec.target]
                found = _torrc_service(spec.name, hs_dir, hs_conf.get(str(hs_dir), {}))
                services.append(_with_recorded_hsdirs(found, recorded))
            else:
                services.append(_expected_at(spec, _existing_key_address(spec.key_file),
                                             recorded))
        return await collect(controller, services, self_check=self_check)


def _existing_key_address(key_file: Path) -> str:
    """The address of an existing service key, or "" (status never creates a key: run as root,
    it would leave one the service cannot read)."""
    try:
        if not key_file.exists():
            return ""
        return onion_address(load_or_create_key(key_file))
    except OSError as exc:
        raise ConfigError(f"cannot read the onion key {key_file}: {exc.strerror}") from None


def _with_recorded_hsdirs(
    found: PublishedService, recorded: list[PublishedService]
) -> PublishedService:
    before = next((s for s in recorded if s.address == found.address), None)
    return dataclasses.replace(found, hsdirs=before.hsdirs) if before is not None else found


# --- while serving: which HSDirs took each upload ----------------------------------------------


MAX_HSDIRS = 6


def note_upload(
    services: list[PublishedService], address: str, hsdir: str
) -> list[PublishedService] | None:
    """`services` with `hsdir` first in the record of the service at `address` (pure); None
    when nothing changes."""
    changed = False
    out = []
    for s in services:
        if s.address == address and s.hsdirs[:1] != (hsdir,):
            hsdirs = (hsdir, *[d for d in s.hsdirs if d != hsdir])[:MAX_HSDIRS]
            s = dataclasses.replace(s, hsdirs=hsdirs)
            changed = True
        out.append(s)
    return out if changed else None


async def record_upload(paths: OnionPaths, address: str, hsdir: str) -> None:
    """Note in `services.json` that `hsdir` took the latest upload of the onion at `address`
    (tor uploads again every hour or two, and to other HSDirs as time periods turn):
    `amanat onion status` asks those very HSDirs."""
    async with state_lock(paths):
        updated = note_upload(read_state(paths), address, hsdir)
        if updated is not None:
            write_state(paths, updated)
