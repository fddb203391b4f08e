"""Transfer: building a signed bundle on the server and pulling it over signed HTTP.

Prints absolute numbers and ratios measured side by side in this one run (the machine is shared
and noisy, so compare ratios across runs rather than raw rates):
  - `write_transfer_bundle` (re-hash + ustar + signature) vs. a plain copy of the same files;
  - a signed pull over loopback HTTP (thread -> queue -> aiohttp stream -> client) vs. the
    local bundle write;
  - request verification (keyring lookup, Ed25519, nonce cache) per second.

    .venv/bin/python bench/bench_transfer.py [MIB] [FILES]
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from nacl.signing import SigningKey  # noqa: E402

from dropbox import db, transfer  # noqa: E402
from dropbox.app import start_site  # noqa: E402
from dropbox.config import Listen, load_config  # noqa: E402
from dropbox.demo import create_demo_org  # noqa: E402
from dropbox.server_keys import load_verified_keyring  # noqa: E402
from dropbox.store import CiphertextStore  # noqa: E402
from dropbox.transfer_api import STATE, create_transfer_app  # noqa: E402
from keys.age import X25519Identity  # noqa: E402
from keys.keyring import Keyring  # noqa: E402
from keys.transfer_auth import EMPTY_SHA256, RequestVerifier, sign_request  # noqa: E402
from workstation.client import TransferClient  # noqa: E402

MIB = 1024 * 1024


class _Sink:
    """Counts bytes, keeps none (the disk is not what is measured)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def sink() -> BinaryIO:
    return cast(BinaryIO, _Sink())


async def fill(config_path: Path, total_mib: int, files: int) -> list[str]:
    """`files` submissions of random bytes (stand-ins for age files) totalling `total_mib`."""
    config = load_config(config_path)
    await db.init_db(config.storage.database_url)
    engine, maker = db.create_engine_and_sessionmaker(config.storage.database_url)
    store = CiphertextStore(config.storage.store_dir, 0)
    chunk = bytes(range(256)) * 256  # 64 KiB
    names = []
    try:
        for _ in range(files):
            async with store.writer() as writer:
                for _ in range(total_mib * MIB // files // len(chunk)):
                    await writer.write(chunk)
                stored = await writer.commit()
            names.append(stored.name)
            async with maker.begin() as session:
                source = await db.create_source(
                    session, hashlib.sha256(stored.name.encode()).hexdigest(),
                    str(X25519Identity.generate().recipient()), db.today(),
                )
                await db.add_submission(session, source.id, [("file", stored)], db.today())
    finally:
        store.close()
        await engine.dispose()
    return [str(store.path(n)) for n in names]


async def measure(config_path: Path, paths: list[str], key: SigningKey) -> None:
    config = load_config(config_path)
    app = create_transfer_app(config)
    runner, url = await start_site(app, Listen("127.0.0.1", 0))
    try:
        state = app[STATE]
        async with state.maker() as session:
            planned = await transfer.build_transfer(session, state.instance, db.today())
        size = planned.size

        started = time.perf_counter()
        for path in paths:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, sink())
        copy = time.perf_counter() - started

        started = time.perf_counter()
        await asyncio.to_thread(
            transfer.write_transfer_bundle, sink(), planned, state.store, state.signing_key
        )
        local = time.perf_counter() - started

        started = time.perf_counter()
        async with TransferClient(url, key) as client:
            pulled = await client.pull(sink())
        remote = time.perf_counter() - started
        assert pulled == size
    finally:
        await runner.cleanup()

    mib = size / MIB
    print(f"bundle: {len(paths)} file(s), {mib:.1f} MiB")
    print(f"  plain copy of the files   {mib / copy:8.1f} MiB/s")
    print(f"  write_transfer_bundle     {mib / local:8.1f} MiB/s   ({local / copy:.2f}x the copy)")
    print(f"  signed pull over loopback {mib / remote:8.1f} MiB/s   ({remote / local:.2f}x the "
          "local write)")


def verification_rate(key: SigningKey, keyring: Keyring, n: int = 2000) -> None:
    verifier = RequestVerifier(
        lambda k: keyring.investigator_by_verify_key(k, include_revoked=True)
    )
    now = time.time()
    requests = [sign_request(key, "GET", "/v1/pull", EMPTY_SHA256, now) for _ in range(n)]
    started = time.perf_counter()
    for headers in requests:
        verifier.verify("GET", "/v1/pull", headers, now)
    elapsed = time.perf_counter() - started
    print(f"request verification: {n / elapsed:,.0f} requests/s ({elapsed / n * 1e6:.0f} µs each)")


def main() -> None:
    total_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    with tempfile.TemporaryDirectory() as tmp:
        org = create_demo_org(Path(tmp) / "org", port=0, cheap_kdf=True)
        paths = asyncio.run(fill(org.config_path, total_mib, files))
        asyncio.run(measure(org.config_path, paths, org.investigator.signing_key))
        verification_rate(org.investigator.signing_key,
                          load_verified_keyring(load_config(org.config_path)))


if __name__ == "__main__":
    main()
