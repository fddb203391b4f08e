"""`amanat export` and `amanat transfer init-key`, on the server host:

    amanat export --config FILE --out BUNDLE      a signed bundle of every unacknowledged item
    amanat transfer init-key --config FILE        create the transfer signing key ([transfer]
                                                  signing_key, mode 0600); prints its public half
                                                  for `amanat keys pin-transfer-key --key`

The online workstation's `amanat transfer status|pull|ack|push` live in workstation/.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from nacl.signing import SigningKey

from keys.errors import ConfigError
from keys.files import write_new
from keys.keyring import encode_key
from keys.manifest import IntakeLimits
from keys.progress import Progress

if TYPE_CHECKING:
    from dropbox.store import Store
    from dropbox.transfer import PlannedBundle

def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat export`."""
    export = subparsers.add_parser(
        "export",
        help="write a signed bundle of every unacknowledged submission (on the server host)",
    )
    export.add_argument("--config", metavar="FILE",
                        required=True, type=Path, help="the TOML config file")
    export.add_argument("--out", metavar="BUNDLE",
                        required=True, type=Path, help="the bundle to write (.tar)")
    export.set_defaults(run=run_export)


# --- server-side commands ---------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from dropbox.intake import intake_limits
    from dropbox.runtime import open_store
    from dropbox.server_keys import load_verified_keyring, read_instance_salt
    from dropbox.transfer import instance_id, load_transfer_key

    config = load_config(args.config)
    keyring = load_verified_keyring(config)
    key = load_transfer_key(config.transfer.signing_key, keyring)
    store = open_store(config)
    instance = instance_id(read_instance_salt(config))
    try:
        planned = asyncio.run(
            _plan_export(config.storage.database_url, instance, intake_limits(config.limits))
        )
        progress = Progress("export", planned.size)
        write_new(args.out, lambda out: _export_to(out, planned, store, key, progress),
                  secret=True)
    finally:
        store.close()
    progress.finish()
    files = len(planned.manifest.files())
    print(f"exported {len(planned.submission_ids)} submission(s), {files} file(s), "
          f"{planned.size} bytes to {args.out}")
    return 0


async def _plan_export(url: str, instance: str, limits: IntakeLimits) -> PlannedBundle:
    from dropbox import db
    from dropbox.transfer import build_transfer

    await db.init_db(url)
    engine, maker = db.create_engine_and_sessionmaker(url)
    try:
        async with maker() as session:
            return await build_transfer(session, instance, db.today(), limits=limits)
    finally:
        await engine.dispose()


def _export_to(
    out: BinaryIO,
    planned: PlannedBundle,
    store: Store,
    key: SigningKey,
    progress: Progress,
) -> None:
    from dropbox.transfer import write_transfer_bundle

    class Counting:
        def write(self, data: bytes) -> int:
            progress.update(len(data))
            return out.write(data)

    write_transfer_bundle(cast(BinaryIO, Counting()), planned, store, key)


def run_init_key(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from dropbox.transfer import create_transfer_key

    config = load_config(args.config)
    if config.transfer.signing_key is None:
        raise ConfigError(f"{args.config}: set [transfer] signing_key to the key file's path")
    key = create_transfer_key(config.transfer.signing_key)
    print(f"transfer signing key written to {config.transfer.signing_key} (mode 0600)")
    print("its public half, for the organization to pin in the keyring:")
    print(f"  amanat keys pin-transfer-key --dir ORG-DIR --key {encode_key(key.verify_key)}")
    return 0
