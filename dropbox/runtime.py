"""The server's runtime: what one serving process opens once and both of its applications (the
source app and the transfer API) share. One database engine, whose schema is upgraded once; one
ciphertext store; one holder of the verified keyring; the instance salt.

`amanat serve` builds it, opens it around both listeners and hands it to `create_app` and
`create_transfer_app`. An application built without one (a test, a bench) makes and opens its own,
so each can still run alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import db
from dropbox.config import Config
from dropbox.server_keys import KeyringFile, read_instance_salt
from dropbox.store import CiphertextStore, Store


@dataclass
class Runtime:
    config: Config
    keyring: KeyringFile
    instance_salt: bytes
    store: Store
    db: async_sessionmaker[AsyncSession] | None = None  # set while open

    @classmethod
    def load(cls, config: Config) -> Runtime:
        """Read and verify the keys, before anything listens: raises KeyringError (the keyring
        does not verify against the pinned organization key) or ConfigError (a key file is
        missing or unusable)."""
        return cls(
            config=config,
            keyring=KeyringFile(config),
            instance_salt=read_instance_salt(config),
            store=open_store(config),
        )

    @property
    def maker(self) -> async_sessionmaker[AsyncSession]:
        assert self.db is not None, "the runtime is opened before the applications start"
        return self.db

    @contextlib.asynccontextmanager
    async def opened(self, *, sweep: bool = True) -> AsyncIterator[Runtime]:
        """Upgrade the schema, sweep what a crash left behind, and open the database. Runs
        before either listener accepts a request: no upload is in flight, so every temporary
        file and every row without its ciphertext is a leftover. A transfer API running apart
        from the source app does not `sweep`: only the source app knows no upload is in flight."""
        url = self.config.storage.database_url
        await db.init_db(url)
        if sweep:
            self.store.sweep()
        engine, maker = db.create_engine_and_sessionmaker(url)
        try:
            if sweep:
                async with maker.begin() as session:
                    await db.sweep_orphans(session, self.store)
            self.db = maker
            yield self
        finally:
            self.db = None
            self.store.close()
            await engine.dispose()


_DAY_SECONDS = 86400


def open_store(config: Config) -> Store:
    """The ciphertext store `[storage] ciphertext` names: the folder under `data_dir` (default),
    or the database's chunk tables, whose sweep leaves alone any object written to within the
    resumable uploads' expiry (rounded up to whole days, plus one: days are all it keeps)."""
    storage = config.storage
    if storage.ciphertext == "files":
        return CiphertextStore(storage.store_dir, storage.reserve_bytes)
    from dropbox.store_db import DatabaseStore

    expiry_days = -(-config.limits.resumable_expiry_seconds // _DAY_SECONDS)
    return DatabaseStore(storage.database_url, idle_days=expiry_days + 1)
