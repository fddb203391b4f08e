"""The ciphertext store on real files: durability steps, cleanup, path checks, a full disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import walk_quietly

from dropbox.store import (
    FLUSH_BYTES,
    CiphertextStore,
    DiskReserveError,
    StoredFile,
    StoreIOError,
    UnsafeNameError,
)
from keys.errors import InputError, StorageError

CHUNK = 64 * 1024


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def partials(store: CiphertextStore) -> list[Path]:
    return files_under(store.root / "tmp")


async def store_bytes(store: CiphertextStore, data: bytes, chunk: int = CHUNK) -> StoredFile:
    async with store.writer() as writer:
        for start in range(0, len(data), chunk):
            await writer.write(data[start : start + chunk])
        return await writer.commit()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CiphertextStore]:
    s = CiphertextStore(tmp_path / "store", reserve_bytes=0)
    yield s
    s.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs, so 'the disk is full' really happens."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_commit_stores_the_bytes_under_a_random_name_with_private_modes(
    store: CiphertextStore,
) -> None:
    data = os.urandom(3 * FLUSH_BYTES + 12345)  # several flushes plus a tail
    stored = await store_bytes(store, data)

    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    path = store.path(stored.name)
    assert path.read_bytes() == data
    assert path == store.root / "objects" / stored.name[:2] / stored.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (store.root, store.root / "tmp", store.root / "objects", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert partials(store) == []
    assert store.names() == [stored.name]
    with store.open(stored.name) as f:
        assert f.read() == data


async def test_names_are_random_and_distinct(store: CiphertextStore) -> None:
    names = {(await store_bytes(store, b"same bytes")).name for _ in range(20)}
    assert len(names) == 20
    assert all("same" not in name for name in names)


async def test_short_writes_are_completed(
    store: CiphertextStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may write fewer bytes than asked; every byte still lands, in order."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, [buffers[0][:1000]])

    monkeypatch.setattr(os, "writev", short_writev)
    data = os.urandom(FLUSH_BYTES + 4321)
    stored = await store_bytes(store, data, chunk=7777)
    assert store.path(stored.name).read_bytes() == data


async def test_empty_file_commits(store: CiphertextStore) -> None:
    async with store.writer() as writer:
        stored = await writer.commit()
    assert stored.size == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert store.path(stored.name).read_bytes() == b""


async def test_abort_deletes_the_partial(store: CiphertextStore) -> None:
    writer = store.writer()
    await writer.write(os.urandom(2 * FLUSH_BYTES))
    await asyncio.sleep(0.05)
    assert len(partials(store)) == 1  # the first buffer is on disk already
    await writer.abort()
    await writer.abort()  # idempotent
    assert partials(store) == []
    assert store.names() == []
    with pytest.raises(StoreIOError):
        await writer.write(b"more")


async def test_an_exception_inside_the_block_deletes_the_partial(store: CiphertextStore) -> None:
    async def failing_upload() -> None:
        async with store.writer() as writer:
            await writer.write(os.urandom(3 * FLUSH_BYTES))
            raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await failing_upload()
    assert files_under(store.root) == []


async def test_leaving_the_block_without_commit_deletes_the_partial(
    store: CiphertextStore,
) -> None:
    async with store.writer() as writer:
        await writer.write(os.urandom(2 * FLUSH_BYTES))
    assert files_under(store.root) == []


async def test_cancelling_a_writing_task_leaves_nothing(store: CiphertextStore) -> None:
    started = asyncio.Event()

    async def upload() -> None:
        async with store.writer() as writer:
            while True:
                await writer.write(os.urandom(CHUNK))
                started.set()

    task = asyncio.create_task(upload())
    await started.wait()
    await asyncio.sleep(0.2)  # let several flushes reach the disk
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(store.root) == []


async def test_abort_waits_for_a_flush_still_running_in_its_thread(
    store: CiphertextStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptor must not be closed (and maybe reused) under a thread writing to it."""
    real_writev = os.writev
    in_write = threading.Event()
    outcomes: list[str] = []

    def slow_writev(fd: int, buffers: list[memoryview]) -> int:
        in_write.set()
        time.sleep(0.3)
        try:
            written = real_writev(fd, buffers)
        except OSError as error:  # EBADF here would mean abort closed the file under us
            outcomes.append(f"error {error.errno}")
            raise
        outcomes.append("written")
        return written

    monkeypatch.setattr(os, "writev", slow_writev)
    writer = store.writer()
    await writer.write(os.urandom(FLUSH_BYTES))  # hands the buffer to a thread
    await asyncio.to_thread(in_write.wait, 5)
    await writer.abort()
    assert outcomes == ["written"]
    assert files_under(store.root) == []


async def test_concurrent_writers_keep_their_bytes_apart(store: CiphertextStore) -> None:
    blobs = [os.urandom(FLUSH_BYTES + 1000 * i) for i in range(8)]
    stored = await asyncio.gather(
        *(store_bytes(store, b, chunk=10_000 + i) for i, b in enumerate(blobs))
    )
    for blob, result in zip(blobs, stored, strict=True):
        assert store.path(result.name).read_bytes() == blob
        assert result.sha256 == hashlib.sha256(blob).hexdigest()


async def test_sweep_deletes_leftover_partials_and_keeps_objects(tmp_path: Path) -> None:
    store = CiphertextStore(tmp_path / "s", reserve_bytes=0)
    kept = await store_bytes(store, b"kept")
    for i in range(3):
        (store.root / "tmp" / f"{i}.partial").write_bytes(b"half an upload")
    # A new store on the same root (a restart) finds and removes them.
    restarted = CiphertextStore(tmp_path / "s", reserve_bytes=0)
    assert restarted.sweep() == 3
    assert restarted.sweep() == 0
    assert partials(restarted) == []
    assert restarted.path(kept.name).read_bytes() == b"kept"
    store.close()
    restarted.close()


async def test_delete_removes_and_tolerates_a_missing_file(store: CiphertextStore) -> None:
    stored = await store_bytes(store, b"x" * 100)
    store.delete(stored.name)
    assert not store.path(stored.name).exists()
    store.delete(stored.name)
    assert store.names() == []


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "/etc/passwd",
        "../" + "0" * 32 + ".age",
        "objects/ab/ab" + "0" * 30 + ".age",  # names are flat
        "0" * 32 + ".age/..",
        "0" * 32 + ".partial",
        "AB" + "0" * 30 + ".age",
        "0" * 31 + ".age",
        "0" * 32 + ".age\n",
        "",
    ],
)
def test_path_refuses_names_the_store_did_not_make(store: CiphertextStore, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        store.path(name)


def test_path_errors_are_storage_and_input_errors(store: CiphertextStore) -> None:
    with pytest.raises(StorageError):
        store.path("../x")
    with pytest.raises(InputError):
        store.delete("../x")


def test_path_refuses_a_symlink_escaping_the_store(store: CiphertextStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    name = "ab" + "1" * 30 + ".age"
    (outside / name).write_bytes(b"not ours")
    (store.root / "objects" / "ab").symlink_to(outside)
    with pytest.raises(UnsafeNameError):
        store.path(name)
    with pytest.raises(UnsafeNameError):
        store.open(name)


def test_a_symlinked_store_root_is_followed_once_and_checked(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    store = CiphertextStore(tmp_path / "link", reserve_bytes=0)
    assert store.root == real.resolve()
    name = "cd" + "2" * 30 + ".age"
    assert store.path(name) == real / "objects" / "cd" / name


def test_ensure_room_refuses_what_would_cross_the_reserve(tmp_path: Path) -> None:
    probe = CiphertextStore(tmp_path / "s", reserve_bytes=0)
    free = probe.free_bytes()
    assert free > 0
    probe.ensure_room(0)
    with pytest.raises(DiskReserveError, match="reserve"):
        probe.ensure_room(2 * free + 1)
    greedy = CiphertextStore(tmp_path / "s", reserve_bytes=free + 10**12)
    with pytest.raises(DiskReserveError):
        greedy.ensure_room(0)
    assert issubclass(DiskReserveError, StorageError)


def test_negative_reserve_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserve"):
        CiphertextStore(tmp_path / "s", reserve_bytes=-1)


async def test_a_full_disk_aborts_cleanly_and_keeps_earlier_files(small_fs: Path) -> None:
    store = CiphertextStore(small_fs / "store", reserve_bytes=0)
    earlier = await store_bytes(store, os.urandom(1024 * 1024))

    with pytest.raises(DiskReserveError, match="full"):
        await store_bytes(store, os.urandom(16 * 1024 * 1024))

    assert partials(store) == []
    assert store.names() == [earlier.name]
    assert hashlib.sha256(store.path(earlier.name).read_bytes()).hexdigest() == earlier.sha256
    # The space came back: the next upload that fits goes through.
    later = await store_bytes(store, os.urandom(2 * 1024 * 1024))
    assert sorted(store.names()) == sorted([earlier.name, later.name])
    store.close()


async def test_enospc_from_the_disk_itself_is_a_disk_reserve_error(
    small_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When free-space figures are stale (another writer, quotas), the kernel's ENOSPC decides."""
    store = CiphertextStore(small_fs / "store", reserve_bytes=0)
    earlier = await store_bytes(store, b"earlier")
    monkeypatch.setattr(store, "free_bytes", lambda: 10**15)
    with pytest.raises(DiskReserveError, match="full") as caught:
        await store_bytes(store, os.urandom(12 * 1024 * 1024))
    assert isinstance(caught.value.__cause__, OSError)
    assert partials(store) == []
    assert store.names() == [earlier.name]
    store.close()


async def test_concurrent_writers_racing_for_the_last_space_fail_cleanly(small_fs: Path) -> None:
    """Each writer sees room when it starts; the disk (ENOSPC) or the reserve stops the rest."""
    store = CiphertextStore(small_fs / "store", reserve_bytes=0)
    blobs = [os.urandom(3 * 1024 * 1024) for _ in range(4)]
    results = await asyncio.gather(
        *(store_bytes(store, blob, chunk=256 * 1024) for blob in blobs), return_exceptions=True
    )

    failed = [r for r in results if isinstance(r, BaseException)]
    stored = [r for r in results if isinstance(r, StoredFile)]
    assert failed, "12 MiB cannot fit in 8 MiB"
    assert all(isinstance(error, DiskReserveError) for error in failed)
    assert partials(store) == []
    assert sorted(store.names()) == sorted(s.name for s in stored)
    for s in stored:
        assert hashlib.sha256(store.path(s.name).read_bytes()).hexdigest() == s.sha256
    store.close()


async def test_the_reserve_stops_a_write_before_the_disk_is_full(small_fs: Path) -> None:
    store = CiphertextStore(small_fs / "store", reserve_bytes=4 * 1024 * 1024)
    store.ensure_room(1024 * 1024)
    with pytest.raises(DiskReserveError, match="reserve"):
        store.ensure_room(5 * 1024 * 1024)

    with pytest.raises(DiskReserveError, match="full"):
        await store_bytes(store, os.urandom(6 * 1024 * 1024))

    assert files_under(store.root) == []
    assert store.free_bytes() > 7 * 1024 * 1024  # nothing was left holding the space
    store.close()


# --- file times: days, never moments (issue 10, section 5) ----------------------------------


def assert_days_only(root: Path) -> None:
    """Every file and folder under `root` (and `root`) has access and modification times at a
    midnight UTC."""
    for path in walk_quietly(root):
        st = os.stat(path, follow_symlinks=False)
        for what, ns in (("mtime", st.st_mtime_ns), ("atime", st.st_atime_ns)):
            assert ns % (86400 * 10**9) == 0, f"{path.relative_to(root)} {what} {ns}"


async def test_committed_files_and_their_folders_show_only_the_day(
    store: CiphertextStore,
) -> None:
    files = [await store_bytes(store, os.urandom(n)) for n in (0, 100, 3 * FLUSH_BYTES)]
    assert_days_only(store.root)
    today = int(time.time()) // 86400 * 86400
    for stored in files:
        assert store.path(stored.name).stat().st_mtime == today
    # reading (export, replies) and listing (orphan sweep) do not put the moment back
    for stored in files:
        with store.open(stored.name) as ciphertext:
            assert len(ciphertext.read()) == stored.size
    assert len(store.names()) == 3
    assert_days_only(store.root)


async def test_aborts_deletes_and_the_startup_sweep_leave_only_days(
    store: CiphertextStore,
) -> None:
    kept = await store_bytes(store, b"kept")
    gone = await store_bytes(store, b"gone")
    async with store.writer() as writer:
        await writer.write(os.urandom(2 * FLUSH_BYTES))
        await writer.abort()
    store.delete(gone.name)
    (store.root / "tmp" / "left.partial").write_bytes(b"x")  # a crash left it
    assert store.sweep() == 1
    assert_days_only(store.root)
    assert store.names() == [kept.name]


async def test_the_daily_sweep_keeps_each_files_day_and_collapses_change_times(
    store: CiphertextStore,
) -> None:
    files = [await store_bytes(store, os.urandom(100)) for _ in range(20)]
    old_day = 1_700_000_000 // 86400 * 86400
    old = store.path(files[0].name)
    os.utime(old, (old_day + 12345.678, old_day + 3600.5))  # a time from before this change
    with old.open("rb") as f:
        f.read()  # a read without O_NOATIME, as any tool would do
    paths = [store.path(f.name) for f in files]
    before = min(os.stat(p).st_ctime_ns for p in paths)
    time.sleep(0.01)
    touched = store.coarsen_times()
    assert touched == len(files) + len({f.name[:2] for f in files}) + 3
    assert_days_only(store.root)
    assert old.stat().st_mtime == old_day  # each file keeps its own day
    ctimes = [os.stat(p).st_ctime_ns for p in walk_quietly(store.root)]
    assert min(ctimes) > before  # every change time is now the sweep's, not an upload's
    assert max(ctimes) - min(ctimes) < 10**9
