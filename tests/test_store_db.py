"""The database ciphertext store (dropbox/store_db.py) on a real PostgreSQL server: chunks written
as they come, read back chunk by chunk, deleted with their object; the sweep keeps what a live
writer still writes to and takes what nobody touched for `idle_days`."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator

import pytest
from postgres import PostgresCluster, query

from dropbox import db
from dropbox.store import FLUSH_BYTES, StoreIOError, UnsafeNameError
from dropbox.store_db import DatabaseStore


@pytest.fixture
def url(postgres_cluster: PostgresCluster) -> str:
    url = postgres_cluster.new_database()
    from postgres import run_async

    run_async(db.init_db(url))
    return url


@pytest.fixture
def store(url: str) -> Iterator[DatabaseStore]:
    store = DatabaseStore(url, idle_days=2)
    try:
        yield store
    finally:
        store.close()


def chunk_rows(url: str) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in query(url, "SELECT name, seq FROM stored_chunks ORDER BY 1, 2")]


async def test_a_committed_object_reads_back_chunk_by_chunk(store: DatabaseStore, url: str) -> None:
    data = os.urandom(2 * FLUSH_BYTES + 12345)
    async with store.writer() as writer:
        for start in range(0, len(data), 100_000):
            await writer.write(data[start:start + 100_000])
        stored = await writer.commit()
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert [seq for _, seq in chunk_rows(url)] == [0, 1]  # one per FLUSH_BYTES buffered
    with store.open(stored.name) as stream:
        assert stream.read() == data
    store.delete(stored.name)
    assert chunk_rows(url) == []
    assert query(url, "SELECT count(*) FROM stored_objects") == [(0,)]
    with pytest.raises(FileNotFoundError):
        store.open(stored.name)


async def test_an_aborted_writer_leaves_nothing(store: DatabaseStore, url: str) -> None:
    async with store.writer() as writer:
        await writer.write(os.urandom(FLUSH_BYTES))
        await writer.write(b"tail")
        await writer.flush()
        assert len(chunk_rows(url)) == 2  # written as they come, before any commit
        with pytest.raises(FileNotFoundError):
            store.open(writer.name)  # uncommitted: not readable
    assert chunk_rows(url) == []
    assert query(url, "SELECT count(*) FROM stored_objects") == [(0,)]


async def test_the_sweep_spares_recent_writes_and_takes_idle_leftovers(
    store: DatabaseStore, url: str
) -> None:
    fresh = store.writer()
    await fresh.write(b"x" * 10)
    await fresh.flush()  # another node's upload in flight: written today
    done = store.writer()
    await done.write(b"y" * 10)
    committed = await done.commit()  # a finished upload not yet recorded by its node
    stale = store.writer()
    await stale.write(b"z" * 10)
    await stale.flush()
    query(url, "UPDATE stored_objects SET day = '2000-01-01' WHERE name = $1", stale.name)
    assert store.sweep() == 1
    assert store.names() == []  # the committed one is today's: not the sweep's to take
    assert {n for n, _ in chunk_rows(url)} == {fresh.name, committed.name}
    query(url, "UPDATE stored_objects SET day = '2000-01-01' WHERE name = $1", committed.name)
    assert store.names() == [committed.name]
    await fresh.abort()


def test_hostile_names_are_refused(store: DatabaseStore) -> None:
    for name in ("../x.age", "", "A" * 32 + ".age", "0" * 32 + ".age/.."):
        with pytest.raises(UnsafeNameError):
            store.open(name)
        with pytest.raises(UnsafeNameError):
            store.delete(name)


async def test_a_writer_whose_object_was_swept_fails_its_commit(
    store: DatabaseStore, url: str
) -> None:
    """Never acknowledge what is gone: a commit after the object vanished raises."""
    async with store.writer() as writer:
        await writer.write(b"q" * 10)
        await writer.flush()
        store.delete(writer.name)
        with pytest.raises(StoreIOError):
            await writer.commit()
    assert query(url, "SELECT count(*) FROM stored_objects") == [(0,)]


async def test_an_abort_waits_for_the_write_under_way(store: DatabaseStore, url: str) -> None:
    """A handler cancelled mid-commit (its client went away) aborts its writer: the delete waits
    for the transaction still running on the store's loop, so no object or chunk outlives it."""
    kept = []
    for delay in (0, 0, 0.001, 0.005, 0.02, 0.05):
        writer = store.writer()
        await writer.write(os.urandom(FLUSH_BYTES))  # chunk 0 is on its way, not awaited
        committing = asyncio.create_task(writer.commit())
        await asyncio.sleep(delay)
        committing.cancel()
        try:
            kept.append((await committing).name)  # finished before the cancel: it stays
        except (asyncio.CancelledError, StoreIOError):
            await writer.abort()
    assert sorted(n for (n,) in query(url, "SELECT name FROM stored_objects")) == sorted(kept)
    assert {n for n, _ in chunk_rows(url)} == set(kept)
