"""Publishing Amanat's two onion services.

- the public *source* onion, with a persistent ED25519-V3 key stored (mode 0600) in the data folder;
- the *transfer* onion, the same but with v3 client authorization, for investigators only.

Ephemeral services are added with a raw ADD_ONION so that the `PoWDefensesEnabled=1` keyword can
be sent (stem has no parameter for it), detached so they outlive the control connection of the
process that made them (`amanat onion status` runs in another process). Production deployments may
instead let torrc own the services (`HiddenServiceDir`); `read_hostname` reads their address.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

from keys.errors import ConfigError
from keys.files import write_new
from onion.client_auth import b32encode_key, normalize_address
from onion.controller import HsDescEvent, TorController
from onion.errors import OnionKeyError, TorCommandError, TorTimeoutError

log = logging.getLogger("amanat.onion")

KEY_PREFIX = "ED25519-V3:"


# --- keys (pure, plus the one file they live in) --------------------------------------------------


def generate_service_key() -> str:
    """A new tor ED25519-V3 key blob: the 64-byte expanded secret key, base64."""
    expanded = bytearray(hashlib.sha512(os.urandom(32)).digest())
    expanded[0] &= 248
    expanded[31] &= 63
    expanded[31] |= 64
    return base64.b64encode(bytes(expanded)).decode()


def onion_address(key_blob: str) -> str:
    """The 56-character v3 address (no `.onion`) of an ED25519-V3 key blob (rend-spec-v3 §6)."""
    try:
        expanded = base64.b64decode(key_blob, validate=True)
    except binascii.Error as exc:
        raise OnionKeyError("the onion service key is not valid base64") from exc
    if len(expanded) != 64:
        raise OnionKeyError("the onion service key must be a 64-byte expanded ed25519 key")
    public = crypto_scalarmult_ed25519_base_noclamp(expanded[:32])
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public + version).digest()[:2]
    return b32encode_key(public + checksum + version).lower()


def load_or_create_key(path: Path) -> str:
    """Read the service key at `path`, creating it (0600, never overwritten) the first time."""
    if not path.exists():
        try:
            write_new(path, (KEY_PREFIX + generate_service_key() + "\n").encode(), secret=True)
        except ConfigError:
            if not path.exists():  # else another process made it first: use theirs
                raise
    return _read_key(path)


def _read_key(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise OnionKeyError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    text = path.read_text().strip()
    if not text.startswith(KEY_PREFIX):
        raise OnionKeyError(f"{path} does not hold an ED25519-V3 onion key")
    blob = text.removeprefix(KEY_PREFIX)
    onion_address(blob)  # validates
    return blob


def read_hostname(hidden_service_dir: Path) -> str:
    """The address of a torrc-configured service, from the `hostname` file tor writes."""
    try:
        return normalize_address((hidden_service_dir / "hostname").read_text())
    except OSError as exc:
        raise OnionKeyError(f"cannot read {hidden_service_dir / 'hostname'}: {exc}") from exc


# --- publishing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    """What to publish. `target` is `unix:/path/to.sock` or `127.0.0.1:PORT`."""

    name: str
    key_file: Path
    target: str
    virtual_port: int = 80
    pow_defenses: bool = True
    max_streams: int = 32  # concurrent streams per rendezvous circuit; more closes the circuit
    client_keys: Mapping[str, bytes] | None = None  # None: public; otherwise client auth required
    pow_queue_rate: int = 250
    pow_queue_burst: int = 2500


@dataclass(frozen=True)
class PublishedService:
    name: str
    address: str  # 56 characters, no ".onion"
    pow_defenses: bool
    client_auth: bool
    clients: tuple[str, ...] | None = field(default=())  # None: not readable by this user
    torrc_dir: str = ""  # set when torrc owns the service (HiddenServiceDir)
    hsdirs: tuple[str, ...] = ()  # fingerprints of HSDirs that took its latest uploads
    # an Onionbalance instance of this frontend address ("?": ob_config unreadable); "": not one
    onionbalance_frontend: str = ""

    @property
    def onion(self) -> str:
        return f"{self.address}.onion"


def add_onion_command(spec: ServiceSpec, key_blob: str, *, pow_defenses: bool) -> str:
    """The ADD_ONION line for `spec` (pure). Client keys are base32 public keys."""
    if spec.client_keys is not None and not spec.client_keys:
        raise OnionKeyError(f"the {spec.name} onion requires client auth but has no clients")
    flags = ["Detach", "MaxStreamsCloseCircuit"]
    if spec.client_keys:
        flags.append("V3Auth")
    parts = [
        f"ADD_ONION {KEY_PREFIX}{key_blob}",
        f"Flags={','.join(flags)}",
        f"MaxStreams={spec.max_streams}",
        f"Port={spec.virtual_port},{spec.target}",
    ]
    for _name, public in sorted((spec.client_keys or {}).items()):
        parts.append(f"ClientAuthV3={b32encode_key(public)}")
    if pow_defenses:
        parts += [
            "PoWDefensesEnabled=1",
            f"PoWQueueRate={spec.pow_queue_rate}",
            f"PoWQueueBurst={spec.pow_queue_burst}",
        ]
    return " ".join(parts)


async def publish(
    controller: TorController, spec: ServiceSpec, *, await_publication: bool = True,
    timeout: float = 90.0,
) -> PublishedService:
    """Publish `spec` (replacing a running copy of the same key) and await its first upload."""
    key_blob = load_or_create_key(spec.key_file)
    address = onion_address(key_blob)
    await unpublish(controller, address)
    hsdirs: tuple[str, ...] = ()
    async with controller.hs_desc_events() as events:
        pow_on = await _add_onion(controller, spec, key_blob)
        if await_publication:
            hsdirs = (await await_upload(events, address, timeout),)
    clients = tuple(sorted(spec.client_keys or {}))
    return PublishedService(spec.name, address, pow_on, spec.client_keys is not None, clients,
                            hsdirs=hsdirs)


async def _add_onion(controller: TorController, spec: ServiceSpec, key_blob: str) -> bool:
    """Send ADD_ONION; with PoW if tor takes it, else warn loudly and go on without."""
    if spec.pow_defenses:
        try:
            await controller.msg(add_onion_command(spec, key_blob, pow_defenses=True))
            return True
        except TorCommandError as exc:
            log.warning(
                "TOR REFUSED PROOF-OF-WORK DEFENSES for the %s onion (%s): publishing it WITHOUT "
                "DoS protection. Upgrade tor to 0.4.8 or later, built with the pow module.",
                spec.name, exc,
            )
    await controller.msg(add_onion_command(spec, key_blob, pow_defenses=False))
    return False


def hsdir_fingerprint(directory: str) -> str:
    """`$FINGERPRINT~nickname` (an HS_DESC event's directory) -> `FINGERPRINT`."""
    return directory.lstrip("$").split("~", 1)[0].split("=", 1)[0].upper()


async def await_upload(
    events: asyncio.Queue[HsDescEvent], address: str, timeout: float
) -> str:
    """Wait for the first HSDir to take the descriptor; its fingerprint."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TorTimeoutError(f"the descriptor of {address}.onion was not uploaded in time")
        try:
            event = await asyncio.wait_for(events.get(), remaining)
        except TimeoutError:
            continue
        if event.address == address and event.action == "UPLOADED" and event.directory:
            return hsdir_fingerprint(event.directory)


async def unpublish(controller: TorController, address: str) -> bool:
    """Remove a detached ephemeral onion if tor has it; True if it was there."""
    address = normalize_address(address)
    if address not in await controller.onion_ids(detached=True):
        return False
    await controller.msg(f"DEL_ONION {address}")
    return True


PUBLISHED = "published"
NOT_FOUND = "NOT FOUND on HSDirs"
NOT_BUILT = "NOT BUILT: tor has no descriptor for it yet"
UNCONFIRMED = "unconfirmed: tor asked the HSDirs about it minutes ago and will not ask again yet"
NO_ANSWER = "unconfirmed: no HSDir answered in time"
STALE_RECORD = ("unconfirmed: the HSDirs that took its last recorded upload no longer have it, "
                "and tor asked the others minutes ago")


async def check_descriptor(
    controller: TorController, service: PublishedService, timeout: float = 15.0
) -> str:
    """Is the descriptor of this running service on the HSDirs? One of the texts above.

    First the service side: tor has built a descriptor (GETINFO hs/service/desc/id). Then a
    fetch: from the HSDirs that took its latest uploads when they are recorded, naming them
    (an HSFETCH with SERVER= is not held back by tor's per-HSDir request cache, so this is right
    on every run); otherwise a plain HSFETCH, which tor skips for HSDirs it asked in the last
    minutes (no event at all: "unconfirmed"). A descriptor the fetching tor cannot decrypt
    (client auth) still proves publication: tor then reports a failure other than NOT_FOUND.
    """
    address = normalize_address(service.address)
    try:
        await controller.get_info(f"hs/service/desc/id/{address}")
    except TorCommandError:
        return NOT_BUILT
    verdict = await _fetch(controller, address, service.hsdirs[:3], timeout)
    if verdict == NOT_FOUND and service.hsdirs:
        # The record may be old (tor stopped, or `amanat serve` did not run to hear the latest
        # upload): let tor pick the HSDirs that are responsible now.
        again = await _fetch(controller, address, (), timeout)
        verdict = STALE_RECORD if again == UNCONFIRMED else again
    return verdict


async def _fetch(
    controller: TorController, address: str, hsdirs: Sequence[str], timeout: float
) -> str:
    servers = "".join(f" SERVER={fp}" for fp in hsdirs)
    async with controller.hs_desc_events() as events:
        await controller.msg(f"HSFETCH {address}{servers}")
        # without servers tor picks (and may skip) the HSDirs: how many, it tells in events
        return await _fetch_verdict(events, address, len(hsdirs) or None, timeout)


async def _fetch_verdict(
    events: asyncio.Queue[HsDescEvent], address: str, asked: int | None, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    requested = not_found = 0
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(events.get(), remaining)
        except TimeoutError:
            break
        if event.address != address:
            continue
        if event.action == "REQUESTED":
            requested += 1
        elif event.action == "RECEIVED" or (
            event.action == "FAILED" and event.reason not in (None, "NOT_FOUND")
        ):
            return PUBLISHED
        elif event.action == "FAILED":
            not_found += 1
            if not_found >= (asked or requested):
                return NOT_FOUND
    return NO_ANSWER if asked or requested else UNCONFIRMED
