"""`amanat demo`: a throwaway organization in one folder, served on 127.0.0.1.

On first use the folder gets everything a real deployment has, made with the same keys/ code:

    org/org.key, org/org.pub, org/keyring.json   the organization (amanat keys init-org)
    investigator.age                             one investigator's offline identity (passphrase)
    investigator-transfer.cred                   their transfer credential (same passphrase)
    transfer.key                                 the server's transfer signing key (pinned)
    instance_salt                                the per-instance codename salt
    amanat.toml                                  the service config
    data/                                        the ciphertext store and the SQLite database
    demo.json                                    url, transfer_url, config, investigator_identity,
                                                 investigator_transfer_credential,
                                                 investigator_passphrase, for people and tests

In a real deployment the identity lives only on the review workstation and the credential only on
the online workstation; a demo keeps both in one folder.

The passphrase is printed once when it is created (and kept in demo.json: this is a demo).
Later runs reuse the folder as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from dropbox.config import Config, Listen, load_config
from dropbox.serve_cli import OnionHooks, serve
from dropbox.transfer import create_transfer_key
from keys.cli import KEYRING, ORG_KEY, ORG_PUB
from keys.codename import generate_codename
from keys.files import replace_atomic, write_new
from keys.identity_file import (
    DEFAULT_WORK_FACTOR,
    InvestigatorSecrets,
    TransferCredential,
    protect_credential,
    protect_identity,
)
from keys.keyring import (
    empty_keyring,
    format_org_public_key,
    format_org_signing_key,
    sign_keyring,
)

CONFIG_NAME = "amanat.toml"
IDENTITY_NAME = "investigator.age"
CREDENTIAL_NAME = "investigator-transfer.cred"
SALT_NAME = "instance_salt"
TRANSFER_KEY_NAME = "transfer.key"
STATE_NAME = "demo.json"
INVESTIGATOR_LABEL = "Demo investigator"
DEFAULT_PORT = 8080
CHEAP_WORK_FACTOR = 10  # scrypt's smallest sensible cost: tests only


@dataclass(frozen=True)
class DemoOrg:
    """The files of a demo folder (also the fixture tests build their organization with)."""

    root: Path
    config_path: Path
    identity_path: Path
    passphrase: str
    org_signing_key: SigningKey
    investigator: InvestigatorSecrets
    credential_path: Path
    credential: TransferCredential


def create_demo_org(root: Path, *, port: int = DEFAULT_PORT, cheap_kdf: bool = False,
                    tor_mode: str = "none", database_url: str | None = None) -> DemoOrg:
    """Create an organization, one investigator, a signed keyring, a salt and a config in `root`
    (which must not hold them yet). The config's database is a SQLite file in its data folder
    unless `database_url` names another (e.g. a PostgreSQL database)."""
    org_dir = root / "org"
    org_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    signing_key = SigningKey.generate()
    investigator = InvestigatorSecrets.generate(INVESTIGATOR_LABEL)
    credential = TransferCredential.generate(INVESTIGATOR_LABEL)
    today = datetime.now(UTC).date()
    # The server's transfer key, pinned by the organization as `amanat keys pin-transfer-key` does.
    transfer_key = create_transfer_key(root / TRANSFER_KEY_NAME)
    keyring = (
        empty_keyring(signing_key.verify_key)
        .with_investigator(investigator.public_entry(today, credential))
        .with_transfer_key(transfer_key.verify_key)
    )
    write_new(org_dir / ORG_KEY, format_org_signing_key(signing_key), secret=True)
    write_new(org_dir / ORG_PUB, format_org_public_key(signing_key.verify_key), secret=False)
    write_new(org_dir / KEYRING, sign_keyring(keyring, signing_key), secret=False)

    passphrase = generate_codename(words=True)
    work_factor = CHEAP_WORK_FACTOR if cheap_kdf else DEFAULT_WORK_FACTOR
    secret_files = {
        root / IDENTITY_NAME: protect_identity(investigator, passphrase, work_factor),
        root / CREDENTIAL_NAME: protect_credential(credential, passphrase, work_factor),
        root / SALT_NAME: secrets.token_bytes(32),
        root / CONFIG_NAME: demo_config_toml(port, cheap_kdf, tor_mode, database_url).encode(),
    }
    for path, data in secret_files.items():
        write_new(path, data, secret=True)
    config_path = root / CONFIG_NAME
    return DemoOrg(
        root,
        config_path,
        root / IDENTITY_NAME,
        passphrase,
        signing_key,
        investigator,
        root / CREDENTIAL_NAME,
        credential,
    )


def demo_config_toml(port: int, cheap_kdf: bool, tor_mode: str,
                     database_url: str | None = None) -> str:
    profile = "cheapest" if cheap_kdf else "production"
    database = "" if database_url is None else f"database_url = {json.dumps(database_url)}\n"
    return f"""\
# Amanat demo configuration (created by `amanat demo`). Paths are relative to this file.
[server]
listen = "127.0.0.1:{port}"
instance_name = "Amanat demo"
instance_description = "A demonstration drop. Do not send real testimonies here."

[storage]
data_dir = "data"
{database}reserve_bytes = {64 * 1024 * 1024}

[keys]
org_public_key = "org/{ORG_PUB}"
keyring = "org/{KEYRING}"
instance_salt = "{SALT_NAME}"
argon2_profile = "{profile}"

[transfer]
# the signed transfer API, for the online workstation only: never the public listener
listen = "127.0.0.1:{port + 1 if port else 0}"
signing_key = "{TRANSFER_KEY_NAME}"

[tor]
mode = "{tor_mode}"
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `demo` to `amanat`."""
    demo = subparsers.add_parser(
        "demo", help="create a throwaway organization in DIR (if absent) and serve it"
    )
    demo.add_argument("--data", type=Path, default=Path("demo-data"),
                      help="the demo folder (default ./demo-data)", metavar="DIR")
    demo.add_argument("--port", type=int, default=None,
                      help="port on 127.0.0.1 (default: the demo config's, 8080; 0 = any free)",
                      metavar="N")
    demo.add_argument("--no-tor", action="store_true", help="do not publish an onion service")
    demo.add_argument("--cheap-kdf", action="store_true",
                      help="tests only: the cheapest Argon2 and scrypt settings (no protection)")
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    return run(args.data, port=args.port, tor=not args.no_tor, cheap_kdf=args.cheap_kdf)


def run(root: Path, *, port: int | None, tor: bool, cheap_kdf: bool) -> int:
    """The `amanat demo` command (prints: it is a CLI)."""
    if tor and shutil.which("tor") is None:  # onion publishing needs a local tor
        print("amanat demo: tor is not installed; serving without an onion service")
        tor = False
    root = root.resolve()
    config_path = root / CONFIG_NAME
    state_path = root / STATE_NAME
    if config_path.exists():
        passphrase = _read_state(state_path).get("investigator_passphrase", "")
        print(f"amanat demo: reusing {root}")
        if not (root / CREDENTIAL_NAME).exists():
            print(f"  it has no transfer credential (made before they existed): issue one with "
                  f"`amanat keys transfer-credential --dir {root / 'org'} --label "
                  f"'{INVESTIGATOR_LABEL}' --credential-out {root / CREDENTIAL_NAME}`")
    else:
        org = create_demo_org(root, port=DEFAULT_PORT if port is None else port,
                              cheap_kdf=cheap_kdf, tor_mode="launch" if tor else "none")
        passphrase = org.passphrase
        print(f"amanat demo: created a throwaway organization in {root}")
        print(f"  investigator identity file (review workstation): {root / IDENTITY_NAME}")
        print(f"  transfer credential (online workstation): {root / CREDENTIAL_NAME}")
        print(f"  its passphrase (shown once; also in {STATE_NAME}): {passphrase}")
    stored = load_config(config_path)
    if tor and stored.tor.mode == "none":
        print(f"amanat demo: {config_path} says [tor] mode = \"none\" (made with --no-tor); "
              "launching tor for this run as asked (--no-tor serves without an onion)")
    config = _runtime_config(stored, port, tor)

    transfer_url: list[str] = []

    def ready(address: str, onions: list[str]) -> None:
        state: dict[str, object] = {
            "url": address,
            "transfer_url": transfer_url[0] if transfer_url else None,
            "config": str(config_path),
            "investigator_identity": str(root / IDENTITY_NAME),
            "investigator_transfer_credential": str(root / CREDENTIAL_NAME),
            "investigator_passphrase": passphrase,
            "onions": onions,
        }
        _write_state(state_path, state)
        print(f"amanat demo: serving {address}", flush=True)
        if transfer_url:
            print(f"amanat demo: transfer API {transfer_url[0]}", flush=True)
        for url in onions:
            print(f"amanat demo: onion service {url}", flush=True)
        print(f"  config: {config_path}\n  state:  {state_path}\n  stop with Ctrl-C", flush=True)

    hooks = OnionHooks(bootstrap=_say_bootstrap, failed=_say_onion_down) if tor else OnionHooks()
    return asyncio.run(serve(config, ready, transfer_url.append, hooks))


def _say_bootstrap(percent: int, summary: str) -> None:
    print(f"amanat demo: tor bootstrap {percent}%: {summary}", flush=True)


def _say_onion_down(reason: str) -> None:
    print(f"amanat demo: the onion service is NOT up: {reason}", flush=True)
    print("amanat demo: serving on this computer only (127.0.0.1); no source can reach it "
          "through Tor", flush=True)


def _runtime_config(config: Config, port: int | None, tor: bool) -> Config:
    """The command line's --port and --no-tor win over the stored config for this run (and
    without --no-tor a folder made with it launches tor)."""
    server = config.server
    if port is not None:
        server = dataclasses.replace(server, listen=Listen(host="127.0.0.1", port=port))
    tor_config = dataclasses.replace(config.tor, mode="none")
    if tor:
        mode = "launch" if config.tor.mode == "none" else config.tor.mode
        tor_config = dataclasses.replace(config.tor, mode=mode)
    return dataclasses.replace(config, server=server, tor=tor_config)


def _read_state(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, object]) -> None:
    replace_atomic(path, (json.dumps(state, indent=2) + "\n").encode("utf-8"), secret=True)

