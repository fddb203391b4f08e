"""The ciphertext store: durable files with random names, every write kept inside one root.

Layout under the root (directories 0700, files 0600):

    tmp/<random>.partial          a write in progress; deleted on abort, swept at startup
    objects/<ab>/<random>.age     committed ciphertext; `ab` is the first two hex digits

A stored file's name is just `<random>.age` (32 hex digits): flat, so it can also be a transfer
bundle member name (docs/format.md 5.1), and `path()` maps it into its fan-out directory.

A write goes to a temporary name on the same filesystem, is fsync'd, renamed into `objects/`, and
the directories are fsync'd before `commit()` returns. Only then may the caller record the file in
the database and acknowledge it, so nothing acknowledged is ever lost (issue 3, "Durability").

Disk work runs in the store's worker threads so the event loop never blocks on the disk. A writer
hands its ciphertext to a thread as soon as it holds `FLUSH_BYTES` (one sealed age chunk), unless
its previous write is still running or was handed over less than `GATHER_SECONDS` ago (a fast
upload): then it gathers up to `BUFFER_BYTES`, one thread hop per 1 MiB. A slow upload (Tor:
tens of KB a second) so keeps no ciphertext in memory between its chunks, and a fast one at most
`BUFFER_BYTES` plus the write in flight, whatever its size (issue 15, "Held under Tor-speed
load").

File times show days, never moments (issue 10, "A seized disk shows days"): a committed file, and
every folder the store changes, gets its access and modification times set to midnight UTC of the
day; reads and listings use O_NOATIME so they do not put the moment back. The change time cannot
be set: `coarsen_times()`, run by the daily maintenance, touches every file and folder so that
their change times all become the moment of that sweep (docs/format.md, threat model).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from keys.errors import InputError, StorageError

__all__ = [
    "BUFFER_BYTES",
    "FLUSH_BYTES",
    "GATHER_SECONDS",
    "BufferedWriter",
    "CiphertextStore",
    "CiphertextWriter",
    "DiskReserveError",
    "Store",
    "StoreIOError",
    "StoredFile",
    "UnsafeNameError",
    "Writer",
    "coarsen_times",
]

FLUSH_BYTES = 64 * 1024
"""A writer hands its buffer to a worker thread once it holds this many bytes (unless it is
gathering, below). One sealed age chunk (64 KiB + 16) reaches it: a slow upload's chunk goes to
the disk as soon as it is sealed, and the upload keeps none of it in memory."""
BUFFER_BYTES = 1024 * 1024
"""The most a writer gathers while its previous write runs or was handed over moments ago: one
thread hop per 1 MiB keeps a fast upload's CPU per GiB where it was (256 KiB cost about 15%
more: bench/bench_upload.py), and bounds its memory by this plus the write in flight. Slow
uploads, the many, never gather."""
GATHER_SECONDS = 0.05
"""A write handed over less than this long ago marks a fast upload (over about 1 MiB/s: one chunk
in 50 ms), which gathers; a slower one writes each chunk as it comes."""
WRITEBACK_BYTES = 8 * 1024 * 1024
"""Every this many bytes, a writer asks the kernel to start writing them back to the disk."""

_TMP_DIR = "tmp"
_OBJECTS_DIR = "objects"
_PARTIAL_SUFFIX = ".partial"
_OBJECT_NAME = re.compile(r"[0-9a-f]{32}\.age")
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_WORKERS = 4
_IOV_MAX = 1024
_DAY_SECONDS = 86400
_NOATIME = getattr(os, "O_NOATIME", 0)


class DiskReserveError(StorageError):
    """Storing this would take the store's free space under its configured reserve."""


class StoreIOError(StorageError):
    """The disk refused an operation on the ciphertext store."""


class UnsafeNameError(StorageError, InputError):
    """A stored-file name would resolve outside the store, or is not a name the store makes."""


@dataclass(frozen=True)
class StoredFile:
    """A committed ciphertext: `name` (`<32 hex>.age`) is random; `store.path(name)` finds it."""

    name: str
    size: int
    sha256: str


class Writer(Protocol):
    """One ciphertext on its way into a store: `write()`, `flush()`, then `commit()` (durable when
    it returns) or `abort()`; leaving `async with` without a commit aborts."""

    @property
    def size(self) -> int: ...
    async def __aenter__(self) -> Writer: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def write(self, chunk: bytes) -> None: ...
    async def flush(self) -> None: ...
    async def commit(self) -> StoredFile: ...
    async def abort(self) -> None: ...


class Store(Protocol):
    """What the intake, the resumable uploads and the transfer need of a ciphertext store: the
    local folder (`CiphertextStore`, the default) or the database (dropbox/store_db.py). Blocking
    methods run in worker threads when called from async code on a hot path."""

    tables: tuple[str, ...]
    """Database tables holding ciphertext: a deletion rewrites them (db.truncate_journal)."""

    def writer(self) -> Writer: ...
    def open(self, name: str) -> BinaryIO: ...
    def delete(self, name: str) -> None: ...
    def ensure_room(self, expected: int) -> None: ...
    def sweep(self) -> int: ...
    def names(self) -> list[str]: ...
    def coarsen_times(self) -> int: ...
    def close(self) -> None: ...


class CiphertextStore:
    """Ciphertext files under `root`, refusing writes that would eat into `reserve_bytes`."""

    tables: tuple[str, ...] = ()

    def __init__(self, root: Path, reserve_bytes: int) -> None:
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        self.reserve_bytes = reserve_bytes
        # The root itself may be a symlink (a data disk mounted elsewhere); its parts may not.
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self.root = root.resolve(strict=True)
        for directory in (self.root, self.root / _TMP_DIR, self.root / _OBJECTS_DIR):
            _make_private_dir(directory)
        for directory in (self.root / _TMP_DIR, self.root / _OBJECTS_DIR, self.root):
            _set_day(directory)
        self._tmp = self.root / _TMP_DIR
        self._objects = self.root / _OBJECTS_DIR
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def sweep(self) -> int:
        """Delete temporary files left by a crash; call once at startup. Returns how many."""
        removed = 0
        for name in _list_dir(self._tmp):
            entry = self._tmp / name
            if entry.is_symlink() or entry.is_file():
                os.unlink(entry)
                removed += 1
        if removed:
            _set_day(self._tmp)
            _fsync_dir(self._tmp)
        return removed

    def free_bytes(self) -> int:
        """Bytes available to this process on the store's filesystem."""
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def ensure_room(self, expected: int) -> None:
        """Raise DiskReserveError unless `expected` more bytes leave the reserve untouched."""
        free = self.free_bytes()
        if free - expected < self.reserve_bytes:
            raise DiskReserveError(
                f"the ciphertext store has {free} bytes free; storing {expected} more would go "
                f"under its reserve of {self.reserve_bytes} bytes"
            )

    def writer(self) -> CiphertextWriter:
        """A new writer; use it as `async with store.writer() as w:` so failures clean up."""
        return CiphertextWriter(self)

    def open(self, name: str) -> BinaryIO:
        """Open a committed ciphertext for reading (export, replies), leaving its times alone."""
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NOATIME)
        except PermissionError:  # O_NOATIME needs the file's owner: a store shared read-only
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return os.fdopen(fd, "rb")

    def delete(self, name: str) -> None:
        """Delete a committed ciphertext; a file already gone is not an error."""
        target = self.path(name)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        _set_day(target.parent)
        _fsync_dir(target.parent)

    def path(self, name: str) -> Path:
        """The absolute path of a committed ciphertext, refusing anything outside the store."""
        if not _OBJECT_NAME.fullmatch(name):
            raise UnsafeNameError(f"not a ciphertext name made by this store: {name!r}")
        candidate = (self._objects / name[:2] / name).resolve(strict=False)
        if not candidate.is_relative_to(self._objects):
            raise UnsafeNameError(f"ciphertext name resolves outside the store: {name!r}")
        return candidate

    def names(self) -> list[str]:
        """Every committed ciphertext name (to find files the database no longer knows)."""
        found = []
        for fan in sorted(_list_dir(self._objects)):
            found += [
                name
                for name in sorted(_list_dir(self._objects / fan))
                if _OBJECT_NAME.fullmatch(name) and name.startswith(fan)
            ]
        return found

    def coarsen_times(self) -> int:
        """Set every file's and folder's times to midnight UTC of its modification day (a file's
        access time to the same), which also sets every change time to this moment: run daily,
        it leaves on disk the days of uploads and nothing finer. Returns how many it touched."""
        paths = [self._objects / fan / name for fan in _list_dir(self._objects)
                 for name in _list_dir(self._objects / fan)]
        return coarsen_times([*paths, *self._directories()])

    def _directories(self) -> list[Path]:
        fans = [self._objects / fan for fan in _list_dir(self._objects)]
        return [*fans, self._objects, self._tmp, self.root]

    def close(self) -> None:
        """Wait for the worker threads to finish (at shutdown)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    # --- used by CiphertextWriter -------------------------------------------------------------

    def _submit(self, fn: Callable[[], object]) -> concurrent.futures.Future[object]:
        """Run `fn` on the store's own threads, apart from the loop's default executor."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_WORKERS, thread_name_prefix="amanat-store"
                )
            return self._executor.submit(fn)

    def _create_partial(self) -> tuple[int, Path]:
        partial = self._tmp / f"{secrets.token_hex(16)}{_PARTIAL_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(partial, flags, _FILE_MODE), partial

    def _publish(self, partial: _Partial) -> str:
        """Rename a fsync'd, closed partial into `objects/` and make the rename durable."""
        token = secrets.token_hex(16)
        fan = self._objects / token[:2]
        if not fan.exists():
            fan.mkdir(mode=_DIR_MODE, exist_ok=True)
            _set_day(self._objects)
            _fsync_dir(self._objects)
        target = fan / f"{token}.age"
        os.rename(partial.path, target)
        partial.published = target
        _set_day(fan)
        _fsync_dir(fan)
        _set_day(self._tmp)
        _fsync_dir(self._tmp)
        return target.name


class _Partial:
    """The temporary file of a writer, and where it went once published."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.open = True
        self.published: Path | None = None

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)

    def discard(self) -> None:
        """Close and delete, including a published file whose commit nobody saw."""
        self.close()
        self.path.unlink(missing_ok=True)
        _set_day(self.path.parent)
        if self.published is not None:
            self.published.unlink(missing_ok=True)
            _set_day(self.published.parent)


class BufferedWriter:
    """What both stores' writers share: the chunks held until the next hand-off, the running
    SHA-256 and size of what was handed off, and the rule that leaving `async with` without a
    commit (an exception, a cancelled handler) aborts. Subclasses write, commit and abort."""

    def __init__(self) -> None:
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._hash = hashlib.sha256()
        self._size = 0
        self._finished = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:
            await self.abort()

    @property
    def size(self) -> int:
        """Ciphertext bytes accepted so far."""
        return self._size + self._buffered

    async def abort(self) -> None:
        raise NotImplementedError

    def _hold(self, chunk: bytes) -> None:
        """Keep a chunk as it is (written later with writev or joined: no copy now)."""
        self._check_open()
        self._buffer.append(bytes(chunk))
        self._buffered += len(chunk)

    def _check_open(self) -> None:
        if self._finished:
            raise StoreIOError("this ciphertext writer was already committed or aborted")


class CiphertextWriter(BufferedWriter):
    """One ciphertext on its way into the store: `write()` chunks, then `commit()` or `abort()`.

    Leaving `async with` without a commit, or with an exception (including the cancellation of a
    handler whose client disconnected), deletes the temporary file. At most one disk operation of
    a writer runs at a time, and `_pending` stays set until it has finished, so `abort()` never
    closes the file under a thread that is still writing to it.
    """

    def __init__(self, store: CiphertextStore) -> None:
        super().__init__()
        self._store = store
        self._partial: _Partial | None = None
        self._pending: concurrent.futures.Future[object] | None = None
        self._finalizer: weakref.finalize[[], CiphertextWriter] | None = None
        self._advised = 0  # bytes already handed to the kernel's writeback
        self._handed = -GATHER_SECONDS  # time.monotonic() of the last write handed to a thread

    async def write(self, chunk: bytes) -> None:
        """Append ciphertext; raises DiskReserveError (deleting the partial) when space runs out."""
        self._hold(chunk)
        if self._buffered >= BUFFER_BYTES or (
            self._buffered >= FLUSH_BYTES and not self._gathering()
        ):
            await self._wait_pending()
            data = self._take()
            self._handed = time.monotonic()
            self._pending = self._store._submit(lambda: self._flush(data))

    async def flush(self) -> None:
        """Hand everything buffered to the disk and wait for it (no fsync): a resumable upload
        between two requests keeps no ciphertext in memory."""
        self._check_open()
        await self._wait_pending()
        data = self._take()
        if data:
            self._pending = self._store._submit(lambda: self._flush(data))
            await self._wait_pending()

    async def commit(self) -> StoredFile:
        """Write what is left, fsync, rename into place, fsync the directory; then it is durable."""
        self._check_open()
        await self._wait_pending()
        data = self._take()
        self._pending = self._store._submit(lambda: self._finish(data))
        name = await self._wait_pending()
        assert isinstance(name, str)
        self._finished = True
        if self._finalizer is not None:
            self._finalizer.detach()
        return StoredFile(name=name, size=self._size, sha256=self._hash.hexdigest())

    async def abort(self) -> None:
        """Delete the temporary file; safe to call more than once, and after a failure."""
        if self._finished:
            return
        self._finished = True
        self._take()
        pending, self._pending = self._pending, None
        if pending is not None and pending.cancel():
            pending = None
        # The cleanup waits for an operation still running in its thread, so the descriptor is
        # never closed under it; shielded, it completes even if this task is cancelled meanwhile.
        cleanup = self._store._submit(lambda: self._discard_after(pending))
        await asyncio.shield(asyncio.wrap_future(cleanup))

    # --- internals ---------------------------------------------------------------------------

    async def _wait_pending(self) -> object:
        """Wait for the operation in flight; on its failure, delete everything and re-raise."""
        pending = self._pending
        if pending is None:
            return None
        try:
            result = await asyncio.wrap_future(pending)
        except Exception:
            await self.abort()
            raise
        self._pending = None
        return result

    def _gathering(self) -> bool:
        """Whether to keep gathering chunks: the previous write is still running, or was handed
        over less than GATHER_SECONDS ago (the upload is fast)."""
        running = self._pending is not None and not self._pending.done()
        return running or time.monotonic() - self._handed < GATHER_SECONDS

    def _take(self) -> list[bytes]:
        data, self._buffer, self._buffered = self._buffer, [], 0
        return data

    def _flush(self, data: list[bytes]) -> None:
        """Runs in a worker thread: check the reserve, hash and write one buffer."""
        partial = self._partial or self._create()
        length = sum(map(len, data))
        if not length:
            return
        free = self._store.free_bytes()
        if free - length < self._store.reserve_bytes:
            raise DiskReserveError(
                f"the ciphertext store is full: {free} bytes free while writing, with a reserve "
                f"of {self._store.reserve_bytes} bytes"
            )
        for chunk in data:
            self._hash.update(chunk)
        try:
            _write_all(partial.fd, data)
        except OSError as error:
            raise _translate(error, "writing a ciphertext") from error
        self._size += length
        self._start_writeback(partial.fd)

    def _start_writeback(self, fd: int) -> None:
        """Ask the kernel to start writing what we wrote so far (without waiting for it), so the
        fsync in commit() finds little left to do instead of the whole upload."""
        if self._size - self._advised >= WRITEBACK_BYTES:
            with contextlib.suppress(OSError):
                os.posix_fadvise(
                    fd, self._advised, self._size - self._advised, os.POSIX_FADV_DONTNEED
                )
            self._advised = self._size

    def _create(self) -> _Partial:
        try:
            fd, path = self._store._create_partial()
        except OSError as error:
            raise _translate(error, "creating a ciphertext") from error
        self._partial = _Partial(fd, path)
        # A writer dropped without commit or abort still deletes its partial when collected.
        self._finalizer = weakref.finalize(self, self._partial.discard)
        return self._partial

    def _finish(self, data: list[bytes]) -> str:
        """Runs in a worker thread: last buffer, fsync, close, rename, directory fsyncs."""
        self._flush(data)
        partial = self._partial
        assert partial is not None
        try:
            _set_day(partial.fd)
            os.fsync(partial.fd)
            partial.close()
            return self._store._publish(partial)
        except OSError as error:
            raise _translate(error, "committing a ciphertext") from error

    def _discard_after(self, pending: concurrent.futures.Future[object] | None) -> None:
        if pending is not None:
            concurrent.futures.wait([pending])
        if self._partial is not None:
            self._partial.discard()
        if self._finalizer is not None:
            self._finalizer.detach()


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """writev until every byte is written (a write may be short)."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        if written == 0:
            raise OSError(errno.EIO, "the disk accepted no bytes")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _translate(error: OSError, doing: str) -> StorageError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskReserveError(f"the ciphertext store is full ({doing})")
    return StoreIOError(f"{doing} failed: {error.strerror}")


def _make_private_dir(directory: Path) -> None:
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    if directory.is_symlink() or not directory.is_dir():
        raise StoreIOError(f"{directory} is not a plain directory")
    os.chmod(directory, _DIR_MODE)


def _day_start(moment: float) -> int:
    """Midnight UTC of the day `moment` (seconds since the epoch) falls in, in nanoseconds."""
    return (int(moment) - int(moment) % _DAY_SECONDS) * 1_000_000_000


def coarsen_times(paths: Iterable[Path]) -> int:
    """Set each path's access and modification times to midnight UTC of its modification day
    (its change time becomes now); paths gone meanwhile are skipped. Returns how many it set."""
    done = 0
    for path in paths:
        try:
            mtime = os.stat(path, follow_symlinks=False).st_mtime
        except FileNotFoundError:  # deleted meanwhile (a purge, an aborted upload)
            continue
        _set_day(path, _day_start(mtime))
        done += 1
    return done


def _set_day(target: Path | int, day_ns: int | None = None) -> None:
    """Access and modification times of a path (never followed) or open file: midnight UTC of
    today, or of `day_ns`. A folder that vanished meanwhile is not an error."""
    day = _day_start(time.time()) if day_ns is None else day_ns
    try:
        if isinstance(target, int):
            os.utime(target, ns=(day, day))
        else:
            os.utime(target, ns=(day, day), follow_symlinks=False)
    except FileNotFoundError:
        pass


def _list_dir(directory: Path) -> list[str]:
    """The names in a folder, read without updating the folder's access time."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _NOATIME)
    except PermissionError:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
