"""The ciphertext store in PostgreSQL (`[storage] ciphertext = "database"`), for several nodes.

Every `amanat serve` node of one service writes and reads the same tables (db.StoredObject,
db.StoredChunk): any node takes a submission, any node's transfer API hands it out, and
PostgreSQL's replication and backups cover the ciphertext with the rows that name it
(docs/architecture.md, "Several nodes").

- A writer buffers up to `FLUSH_BYTES` and writes it as one chunk in its own committed
  transaction, so memory per upload stays around one buffer and a crash loses only what no source
  was told about. `commit()` marks the object committed, in a transaction that has returned before
  the caller records the submission: the same two-phase rule as the folder store (file durable,
  then row, orphans swept).
- Reads fetch one chunk at a time (`open()` returns a blocking stream, for the bundle writer's
  thread).
- The sweep never takes another node's upload in flight: a writer sets its object's day on every
  chunk it writes, and only objects nobody wrote to for `idle_days` whole days (longer than any
  upload may stay idle: the resumable expiry) are swept. Days, never moments, are all it keeps.

The store runs its own event loop in one thread with its own engine: its blocking methods
(`open()`'s reads, `delete()`, the sweeps) can then be called from any thread, and its writers
from any event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import functools
import io
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, BinaryIO, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from dropbox import db
from dropbox.store import (
    FLUSH_BYTES,
    BufferedWriter,
    StoredFile,
    StoreIOError,
    UnsafeNameError,
)

__all__ = ["DatabaseStore", "DatabaseWriter"]

T = TypeVar("T")
_OBJECT_NAME = re.compile(r"[0-9a-f]{32}\.age")


class DatabaseStore:
    """Ciphertexts as chunks in the database at `url`; objects idle `idle_days` are swept."""

    tables: tuple[str, ...] = (db.StoredChunk.__tablename__, db.StoredObject.__tablename__)

    def __init__(self, url: str, idle_days: int) -> None:
        if idle_days < 1:
            raise ValueError("idle_days must be at least 1")
        self.idle_days = idle_days
        self._engine, self._maker = db.create_engine_and_sessionmaker(url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="amanat-store-db", daemon=True
        )
        self._thread.start()

    # --- running on the store's loop ----------------------------------------------------------

    def _submit(
        self, work: Callable[[AsyncSession], Awaitable[T]], lock: asyncio.Lock | None = None
    ) -> concurrent.futures.Future[T]:
        """Run `work(session)` in one transaction on the store's loop, holding `lock` (if any)
        until the transaction has ended."""

        async def run() -> T:
            async with contextlib.AsyncExitStack() as stack:
                if lock is not None:
                    await stack.enter_async_context(lock)
                session = await stack.enter_async_context(self._maker.begin())
                return await work(session)
            raise AssertionError("unreachable")

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def _call(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Blocking: run `work` and wait for it (never from the store's own loop)."""
        return self._submit(work).result()

    def _schedule(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    # --- the Store interface ------------------------------------------------------------------

    def writer(self) -> DatabaseWriter:
        return DatabaseWriter(self)

    def open(self, name: str) -> BinaryIO:
        """A committed ciphertext as a blocking stream that reads one chunk at a time."""
        _check_name(name)
        if not self._call(lambda s: db.object_committed(s, name)):
            raise FileNotFoundError(f"no committed ciphertext {name}")
        return io.BufferedReader(_ChunkReader(self, name), buffer_size=64 * 1024)

    def delete(self, name: str) -> None:
        """Delete a ciphertext and its chunks; one already gone is not an error."""
        _check_name(name)
        self._call(lambda s: db.delete_object(s, name))

    def ensure_room(self, expected: int) -> None:
        """The database's disk is the database's to watch (docs/deploy.md): nothing to check."""

    def sweep(self) -> int:
        """Delete uncommitted objects nobody wrote to for `idle_days`: leftovers of a crashed
        node (a live node's upload writes a chunk, and so renews its day, long before)."""
        names = self._call(lambda s: db.idle_objects(s, self._idle_before(), committed=False))
        for name in names:
            self.delete(name)
        return len(names)

    def names(self) -> list[str]:
        """Committed objects idle for `idle_days`: those db.sweep_orphans may delete when no row
        names them (a younger one may be a finished upload a live node has yet to record)."""
        return self._call(lambda s: db.idle_objects(s, self._idle_before(), committed=True))

    def coarsen_times(self) -> int:
        """No files: the database keeps days only."""
        return 0

    def close(self) -> None:
        """Dispose of the engine and stop the store's loop (at shutdown)."""
        if not self._loop.is_running():
            return
        self._schedule(self._engine.dispose()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _idle_before(self) -> str:
        today = dt.date.fromisoformat(db.today())
        return (today - dt.timedelta(days=self.idle_days)).isoformat()


class _ChunkReader(io.RawIOBase):
    """Reads a committed object chunk by chunk, blocking on the store's loop."""

    def __init__(self, store: DatabaseStore, name: str) -> None:
        self._store = store
        self._name = name
        self._seq = 0
        self._chunk = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk and not self._done:
            seq, self._seq = self._seq, self._seq + 1
            data = self._store._call(functools.partial(db.read_chunk, name=self._name, seq=seq))
            if data is None:
                self._done = True
            else:
                self._chunk = memoryview(data)
        count = min(len(buffer), len(self._chunk))
        buffer[:count] = self._chunk[:count]
        self._chunk = self._chunk[count:]
        return count


class DatabaseWriter(BufferedWriter):
    """One ciphertext on its way into the database: each `FLUSH_BYTES` become one committed
    chunk; `commit()` marks the object committed; `abort()` deletes it. As with the folder store,
    at most one database operation of a writer runs at a time, and `abort()` waits for it."""

    def __init__(self, store: DatabaseStore) -> None:
        super().__init__()
        self._store = store
        self.name = f"{secrets.token_hex(16)}.age"
        self._seq = 0
        self._pending: concurrent.futures.Future[None] | None = None
        # Held (on the store's loop) by each database operation of this writer for its whole
        # transaction: the discard takes it too, so it never runs beside a write that is still
        # under way, even one whose future was cancelled with its handler.
        self._lock = asyncio.Lock()
        self._discarded = False

    async def write(self, chunk: bytes) -> None:
        self._hold(chunk)
        if self._buffered >= FLUSH_BYTES:
            await self._wait_pending()
            self._pending = self._store._submit(self._put(self._take(), commit=False),
                                                self._lock)

    async def flush(self) -> None:
        """Write everything buffered as a chunk and wait for its commit."""
        self._check_open()
        await self._wait_pending()
        data = self._take()
        if data:
            self._pending = self._store._submit(self._put(data, commit=False), self._lock)
            await self._wait_pending()

    async def commit(self) -> StoredFile:
        """Write what is left and mark the object committed; durable when this returns."""
        self._check_open()
        await self._wait_pending()
        self._pending = self._store._submit(self._put(self._take(), commit=True), self._lock)
        await self._wait_pending()
        self._finished = True
        return StoredFile(name=self.name, size=self._size, sha256=self._hash.hexdigest())

    async def abort(self) -> None:
        """Delete whatever was written; safe to call more than once, and after a failure."""
        if self._finished:
            return
        self._finished = True
        self._take()
        self._pending = None
        if self._seq == 0:
            return  # nothing was ever sent to the database
        cleanup = self._store._schedule(self._discard())
        await asyncio.shield(asyncio.wrap_future(cleanup))

    # --- internals ---------------------------------------------------------------------------

    async def _wait_pending(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            await asyncio.wrap_future(pending)
        except Exception as error:
            await self.abort()
            if isinstance(error, StoreIOError):
                raise
            raise StoreIOError(f"writing a ciphertext failed: {type(error).__name__}") from error
        self._pending = None

    def _take(self) -> bytes:
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        return data

    def _put(self, data: bytes, *, commit: bool) -> Callable[[AsyncSession], Awaitable[None]]:
        """The transaction that appends `data` as the next chunk (and commits the object)."""
        seq, self._seq = self._seq, self._seq + (1 if data or self._seq == 0 else 0)

        async def work(session: AsyncSession) -> None:
            if self._discarded:
                raise StoreIOError("this ciphertext writer was aborted")
            self._hash.update(data)
            await db.put_chunk(session, self.name, seq, data, db.today(), new=seq == 0)
            if commit:
                await db.commit_object(session, self.name)
            self._size += len(data)

        return work

    async def _discard(self) -> None:
        """On the store's loop: after any write still under way, delete the object."""
        async with self._lock:
            self._discarded = True
            async with self._store._maker.begin() as session:
                await db.delete_object(session, self.name)


def _check_name(name: str) -> None:
    if not _OBJECT_NAME.fullmatch(name):
        raise UnsafeNameError(f"not a ciphertext name made by this store: {name!r}")
