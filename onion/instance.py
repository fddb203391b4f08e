"""The source onion as an Onionbalance v3 instance (`[tor] onionbalance_frontend`).

Onionbalance (Debian's `onionbalance` package, run on a machine of its own) publishes one
*frontend* onion whose descriptor lists introduction points taken from every node's own onion.
A node's tor must accept introductions made for the frontend's address too: that takes
`HiddenServiceOnionBalanceInstance 1` (tor's spelling; option names are case-insensitive) and a
file `ob_config` holding `MasterOnionAddress <frontend>.onion` in the service's HiddenServiceDir.
An ephemeral ADD_ONION service has no such folder, so an instance is a HiddenServiceDir service
that this module adds with SETCONF: its key is the node's own `source.key` (written in tor's key
file format), so the node keeps its own address whether or not it is an instance.

The pure part (file contents, the SETCONF line) is separate from the one function that talks
to tor.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from keys.files import replace_atomic
from onion.client_auth import normalize_address
from onion.controller import TorController
from onion.errors import OnionKeyError
from onion.services import ServiceSpec, load_or_create_key

log = logging.getLogger("amanat.onion")

# tor's on-disk ed25519 secret key: a 32-byte header, then the 64-byte expanded secret key
TOR_KEY_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
OB_CONFIG = "ob_config"


def tor_secret_key_file(key_blob: str) -> bytes:
    """The `hs_ed25519_secret_key` file tor reads for the ED25519-V3 key blob `key_blob`."""
    expanded = base64.b64decode(key_blob, validate=True)
    if len(expanded) != 64:
        raise OnionKeyError("the onion service key must be a 64-byte expanded ed25519 key")
    return TOR_KEY_HEADER + expanded


def ob_config_text(frontend: str) -> str:
    return f"MasterOnionAddress {normalize_address(frontend)}.onion\n"


def read_frontend(hs_dir: Path) -> str | None:
    """The frontend address in `hs_dir/ob_config`, or None when there is none (or unreadable)."""
    try:
        text = (hs_dir / OB_CONFIG).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "MasterOnionAddress":
            try:
                return normalize_address(value)
            except ValueError:
                return None
    return None


def prepare_dir(hs_dir: Path, key_file: Path, frontend: str) -> None:
    """Write the instance's HiddenServiceDir: the node's key in tor's format and `ob_config`."""
    hs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    hs_dir.chmod(0o700)  # tor refuses a HiddenServiceDir others can read
    blob = load_or_create_key(key_file)
    replace_atomic(hs_dir / "hs_ed25519_secret_key", tor_secret_key_file(blob), secret=True)
    replace_atomic(hs_dir / OB_CONFIG, ob_config_text(frontend).encode(), secret=True)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def setconf_command(
    services: Mapping[str, Mapping[str, Sequence[str]]], drop: Path | None = None,
    add: tuple[Path, ServiceSpec] | None = None,
) -> str:
    """The SETCONF line that keeps every HiddenServiceDir service in `services` (tor's current
    ones: SETCONF replaces them all), without the one at `drop`, plus `add` as an instance.
    Without any service left it resets the options instead (pure)."""
    parts: list[str] = []
    for hs_dir, options in services.items():
        if drop is not None and Path(hs_dir) == drop:
            continue
        parts.append(f"HiddenServiceDir={_quote(hs_dir)}")
        for key, values in options.items():
            parts += [f"{key}={_quote(v)}" for v in values]
    if add is not None:
        new_dir, spec = add
        parts += [
            f"HiddenServiceDir={_quote(str(new_dir))}",
            f"HiddenServicePort={_quote(f'{spec.virtual_port} {spec.target}')}",
            "HiddenServiceOnionBalanceInstance=1",
            f"HiddenServiceMaxStreams={spec.max_streams}",
            "HiddenServiceMaxStreamsCloseCircuit=1",
        ]
        if spec.pow_defenses:
            parts += ["HiddenServicePoWDefensesEnabled=1",
                      f"HiddenServicePoWQueueRate={spec.pow_queue_rate}",
                      f"HiddenServicePoWQueueBurst={spec.pow_queue_burst}"]
    return "SETCONF " + " ".join(parts) if parts else "RESETCONF HiddenServiceDir"


async def publish_instance(
    controller: TorController, spec: ServiceSpec, hs_dir: Path, frontend: str
) -> None:
    """Serve `spec` as an Onionbalance instance of `frontend` from `hs_dir` (replacing an
    earlier copy there); tor then builds and uploads its descriptor as for any torrc service."""
    prepare_dir(hs_dir, spec.key_file, frontend)
    current = await controller.hidden_service_conf()
    await controller.msg(setconf_command(current, drop=hs_dir, add=(hs_dir, spec)))
    log.info("the source onion is an Onionbalance instance of %s.onion",
             normalize_address(frontend))


async def unpublish_instance(controller: TorController, hs_dir: Path) -> bool:
    """Take the instance at `hs_dir` out of tor (other HiddenServiceDir services stay)."""
    current = await controller.hidden_service_conf()
    if str(hs_dir) not in current:
        return False
    await controller.msg(setconf_command(current, drop=hs_dir))
    return True
