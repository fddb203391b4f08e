"""The intake database on real SQLite files and a real PostgreSQL server: migrations, pragmas,
domain functions. Tests that take `sessions` or `database` run on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from postgres import PostgresCluster
from postgres import query as postgres_query
from sqlalchemy import event, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from dropbox import db
from dropbox.store import CiphertextStore, StoredFile
from keys.errors import BusyError

BACKENDS = ("sqlite", "postgresql")  # conftest.py: tests using `database_url` run on both
DAY = "2026-11-26"
RECIPIENT = "age1" + "q" * 58


def stored(n: int) -> StoredFile:
    return StoredFile(name=f"{n:032x}.age", size=100 + n, sha256=f"{n:064x}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "amanat.sqlite"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    await db.init_db(url)
    engine, sessions = db.create_engine_and_sessionmaker(url)
    try:
        yield engine, sessions
    finally:
        await engine.dispose()


@pytest.fixture
async def database(
    db_path: Path, database_url: str | None
) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    """A fresh database at the newest schema: a SQLite file, or a PostgreSQL database."""
    async with opened(database_url or f"sqlite+aiosqlite:///{db_path}") as pair:
        yield pair


@pytest.fixture
def sessions(
    database: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> async_sessionmaker[AsyncSession]:
    return database[1]


@pytest.fixture
async def sqlite_sessions(db_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a SQLite file at `db_path`, for what only SQLite has (pragmas, its files)."""
    async with opened(f"sqlite+aiosqlite:///{db_path}") as (_, sessions):
        yield sessions


async def new_source(sessions: async_sessionmaker[AsyncSession], lookup: str = "a" * 64) -> str:
    async with sessions.begin() as session:
        return (await db.create_source(session, lookup, RECIPIENT, DAY)).id


async def new_submission(
    sessions: async_sessionmaker[AsyncSession], source_id: str, first: int, day: str = DAY
) -> str:
    files: list[tuple[db.Kind, StoredFile]] = [
        ("manifest", stored(first)),
        ("message", stored(first + 1)),
        ("file", stored(first + 2)),
    ]
    async with sessions.begin() as session:
        return await db.add_submission(session, source_id, files, day)


# --- schema and engine ------------------------------------------------------------------------


async def test_init_db_creates_a_private_file_and_is_idempotent(db_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{db_path}"
    await db.init_db(url)
    await db.init_db(url)  # a restart: already at head, nothing happens
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert {"sources", "submissions", "ciphertexts", "replies", "acknowledgements"} <= tables


async def test_a_database_from_revision_0001_upgrades_and_keeps_its_state(db_path: Path) -> None:
    """An existing server's database: a submission acknowledged before per-investigator
    acknowledgements keeps its retention and is in nobody's pull; one that was not is in
    everybody's."""
    from alembic import command

    url = f"sqlite+aiosqlite:///{db_path}"
    db_path.parent.mkdir(parents=True)
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda c: command.upgrade(db.alembic_config(c), "0001")  # type: ignore[arg-type]
        )
    await engine.dispose()
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO sources VALUES ('s1', 'l1', ?, ?)", (RECIPIENT, DAY))
        raw.execute("INSERT INTO submissions VALUES ('old', 's1', ?, ?, '2026-11-30')", (DAY, DAY))
        raw.execute("INSERT INTO submissions VALUES ('new', 's1', ?, NULL, NULL)", (DAY,))
        raw.execute("INSERT INTO ciphertexts (submission_id, kind, name, size, sha256) "
                    "VALUES ('new', 'message', 'n.age', 5, ?)", ("0" * 64,))
        raw.execute("INSERT INTO sources VALUES ('s2', 'l2', ?, ?)", (RECIPIENT, DAY))
    await db.init_db(url)
    with sqlite3.connect(db_path) as raw:  # sources of before get random epochs, all different
        epochs = [e for (e,) in raw.execute("SELECT session_epoch FROM sources")]
    assert len(set(epochs)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{16}", e) for e in epochs)
    engine, sessions = db.create_engine_and_sessionmaker(url)
    try:
        async with sessions.begin() as session:
            assert [s.id for s in await db.list_waiting_for(session, "alice")] == ["new"]
            assert [s.id for s in await db.due_for_deletion(session, "2026-11-30")] == ["old"]
            assert await db.add_acknowledgements(session, ["new", "old"], "alice", DAY) == (
                ["new", "old"], [],
            )
            assert await db.list_waiting_for(session, "alice") == []
            assert [s.id for s in await db.list_waiting_for(session, "bob")] == ["new"]
    finally:
        await engine.dispose()


async def test_the_schema_holds_only_what_issue_3_allows(
    database: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    engine, _ = database
    async with engine.connect() as connection:
        columns = await connection.run_sync(
            lambda c: {
                table: sorted(col["name"] for col in inspect(c).get_columns(table))
                for table in ("sources", "submissions", "ciphertexts", "replies",
                              "acknowledgements", "deleted_replies")
            }
        )
    assert columns == {
        # session_epoch: random, replaced at logout (dropbox/cluster.py), issue 15
        "sources": ["created_day", "id", "lookup_id", "reply_recipient", "session_epoch"],
        # receipt: sealed with a key only the codename derives (keys/receipt.py), issue 12
        "submissions": ["acknowledged_day", "day", "delete_after_day", "id", "receipt",
                        "source_id"],
        "ciphertexts": ["id", "kind", "name", "sha256", "size", "submission_id"],
        "replies": ["bundle_reply_id", "day", "id", "investigator", "name", "sha256", "size",
                    "source_id"],
        "acknowledgements": ["day", "investigator", "submission_id"],
        # which replies their sources deleted: no day, no source (issue 12, section 4)
        "deleted_replies": ["investigator", "reply_id"],
    }


async def test_the_migration_matches_the_models(
    database: tuple[AsyncEngine, async_sessionmaker[AsyncSession]],
) -> None:
    engine, _ = database
    async with engine.connect() as connection:
        diff = await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), db.Base.metadata)
        )
    assert diff == []


async def test_connections_run_with_durable_pragmas(
    sqlite_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sqlite_sessions() as session:
        values = {
            pragma: (await session.execute(text(f"PRAGMA {pragma}"))).scalar_one()
            for pragma in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")
        }
    assert values == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "secure_delete": 1,
    }


async def test_wal_and_shm_files_are_private_too(
    sqlite_sessions: async_sessionmaker[AsyncSession], db_path: Path
) -> None:
    await new_source(sqlite_sessions)
    for suffix in ("-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        assert side.exists()
        assert stat.S_IMODE(side.stat().st_mode) == 0o600


async def test_a_committed_row_survives_closing_and_reopening(db_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{db_path}"
    await db.init_db(url)
    engine, sessions = db.create_engine_and_sessionmaker(url)
    source_id = await new_source(sessions)
    submission_id = await new_submission(sessions, source_id, 1)
    await engine.dispose()

    engine, sessions = db.create_engine_and_sessionmaker(url)
    async with sessions() as session:
        [again] = await db.list_unacknowledged(session)
    await engine.dispose()
    assert again.id == submission_id
    assert [c.name for c in again.ciphertexts] == [stored(n).name for n in (1, 2, 3)]


async def test_init_db_while_the_service_runs_keeps_later_commits_durable(db_path: Path) -> None:
    """Regression: init_db once opened and closed the database file, which dropped this
    process's POSIX locks; another process closing the database then deleted the live WAL."""
    url = f"sqlite+aiosqlite:///{db_path}"
    await db.init_db(url)
    engine, sessions = db.create_engine_and_sessionmaker(url)
    await new_source(sessions, "1" * 64)  # the service's pool now holds an open connection
    await db.init_db(url)  # e.g. the transfer listener starting in the same process
    reader = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('SELECT count(*) FROM sources').fetchall(); c.close()"
    )
    subprocess.run([sys.executable, "-c", reader, str(db_path)], check=True)
    await new_source(sessions, "2" * 64)
    assert db_path.with_name(db_path.name + "-wal").exists()
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        assert raw.execute("SELECT count(*) FROM sources").fetchone() == (2,)
    await engine.dispose()


async def test_nothing_is_stored_unless_the_caller_commits(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    async with sessions() as session:
        await db.add_submission(session, source_id, [("message", stored(1))], DAY)
        await session.rollback()
    async with sessions() as session:
        assert await db.list_unacknowledged(session) == []


# --- sources ----------------------------------------------------------------------------------


async def test_sources_are_found_by_lookup_id(sessions: async_sessionmaker[AsyncSession]) -> None:
    source_id = await new_source(sessions, "b" * 64)
    async with sessions() as session:
        found = await db.get_source_by_lookup(session, "b" * 64)
        assert found is not None
        assert (found.id, found.reply_recipient, found.created_day) == (source_id, RECIPIENT, DAY)
        assert len(found.id) == 32
        assert await db.get_source_by_lookup(session, "c" * 64) is None


async def test_a_second_source_with_the_same_lookup_id_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await new_source(sessions)
    with pytest.raises(IntegrityError):
        await new_source(sessions)


async def test_get_or_create_returns_one_source_even_under_concurrent_logins(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def login() -> str:
        async with sessions.begin() as session:
            source = await db.get_or_create_source(session, "d" * 64, RECIPIENT, DAY)
            return source.id

    ids = await asyncio.gather(*(login() for _ in range(8)))
    assert len(set(ids)) == 1
    assert await login() == ids[0]
    async with sessions() as session:
        count = (await session.execute(text("SELECT count(*) FROM sources"))).scalar_one()
    assert count == 1


# --- submissions ------------------------------------------------------------------------------


async def test_a_submission_lists_with_its_source_and_ciphertexts_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    submission_id = await new_submission(sessions, source_id, 10)
    async with sessions() as session:
        [listed] = await db.list_unacknowledged(session)
    assert listed.id == submission_id
    assert len(submission_id) == 32
    assert listed.day == DAY
    assert listed.source.reply_recipient == RECIPIENT
    assert [(c.kind, c.name, c.size, c.sha256) for c in listed.ciphertexts] == [
        ("manifest", stored(10).name, 110, stored(10).sha256),
        ("message", stored(11).name, 111, stored(11).sha256),
        ("file", stored(12).name, 112, stored(12).sha256),
    ]


async def test_unacknowledged_submissions_come_oldest_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    newer = await new_submission(sessions, source_id, 1, "2026-11-26")
    older = await new_submission(sessions, source_id, 4, "2026-11-20")
    async with sessions() as session:
        assert [s.id for s in await db.list_unacknowledged(session)] == [older, newer]


@pytest.mark.parametrize(
    ("files", "day"),
    [
        ([], DAY),
        ([("picture", stored(1))], DAY),
        ([("file", stored(1))], "2026-11-26T10:00:00"),
        ([("file", stored(1))], "2026-02-30"),
        ([("file", stored(1))], "26-11-2026"),
    ],
)
async def test_bad_submission_values_are_refused(
    sessions: async_sessionmaker[AsyncSession], files: list[tuple[db.Kind, StoredFile]], day: str
) -> None:
    source_id = await new_source(sessions)
    async with sessions() as session:
        with pytest.raises(db.InvalidRecordError):
            await db.add_submission(session, source_id, files, day)


async def test_a_submission_needs_a_real_source(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(IntegrityError):
        await new_submission(sessions, "0" * 32, 1)


async def test_a_ciphertext_name_is_recorded_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    await new_submission(sessions, source_id, 1)
    with pytest.raises(IntegrityError):
        await new_submission(sessions, source_id, 3)  # overlaps on stored(3)


# --- acknowledgement and deletion ---------------------------------------------------------------


async def test_acknowledge_sets_days_once_and_ignores_unknown_ids(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    first = await new_submission(sessions, source_id, 1)
    second = await new_submission(sessions, source_id, 4)
    async with sessions.begin() as session:
        done = await db.acknowledge(session, [first, "f" * 32, first], "2026-11-27", 7)
    assert done == [first]
    async with sessions.begin() as session:
        assert await db.acknowledge(session, [first], "2026-12-01", 7) == []  # already done
        [left] = await db.list_unacknowledged(session)
        assert left.id == second
        acked = await session.get(db.Submission, first)
        assert acked is not None
        assert (acked.acknowledged_day, acked.delete_after_day) == ("2026-11-27", "2026-12-04")


async def test_acknowledge_refreshes_objects_already_loaded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    submission_id = await new_submission(sessions, source_id, 1)
    async with sessions.begin() as session:
        [loaded] = await db.list_unacknowledged(session)
        await db.acknowledge(session, [submission_id], DAY, 0)
        assert loaded.acknowledged_day == DAY


async def test_retention_runs_out_on_its_day_and_only_for_acknowledged_submissions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    acked = await new_submission(sessions, source_id, 1)
    await new_submission(sessions, source_id, 4)  # never acknowledged
    async with sessions.begin() as session:
        await db.acknowledge(session, [acked], "2026-11-26", 3)
    async with sessions() as session:
        assert await db.due_for_deletion(session, "2026-11-28") == []
        [due] = await db.due_for_deletion(session, "2026-11-29")
        assert due.id == acked
        assert [s.id for s in await db.due_for_deletion(session, "2027-01-01")] == [acked]


async def test_forget_submissions_returns_names_and_leaves_no_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    acked = await new_submission(sessions, source_id, 1)
    kept = await new_submission(sessions, source_id, 4)  # not acknowledged: untouched
    async with sessions.begin() as session:
        await db.acknowledge(session, [acked], DAY, 0)
    async with sessions.begin() as session:
        names = await db.forget_submissions(session, [acked])
    assert names == sorted(stored(n).name for n in (1, 2, 3))
    async with sessions() as session:
        assert await db.due_for_deletion(session, "2030-01-01") == []
        assert await session.get(db.Submission, acked) is None
        left = (await session.execute(select(db.Ciphertext.submission_id))).scalars().all()
        assert set(left) == {kept}
        assert await session.get(db.Source, source_id) is not None  # the source can still log in


async def test_unacknowledged_ciphertexts_are_never_forgotten(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    acked = await new_submission(sessions, source_id, 1)
    pending = await new_submission(sessions, source_id, 4)
    async with sessions.begin() as session:
        await db.acknowledge(session, [acked], DAY, 0)
    async with sessions() as session:
        with pytest.raises(db.NotAcknowledgedError, match=pending):
            await db.forget_submissions(session, [acked, pending])
    async with sessions() as session:
        assert [len(s.ciphertexts) for s in await db.list_unacknowledged(session)] == [3]
        assert len((await db.due_for_deletion(session, DAY))[0].ciphertexts) == 3


async def test_acknowledgements_are_per_investigator_and_go_with_the_submission(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    first = await new_submission(sessions, source_id, 1)
    second = await new_submission(sessions, source_id, 4)
    async with sessions.begin() as session:
        new, already = await db.add_acknowledgements(session, [first, "f" * 32], "alice", DAY)
        assert (new, already) == ([first], [])
        assert await db.add_acknowledgements(session, [first], "alice", DAY) == ([], [first])
        assert [s.id for s in await db.list_waiting_for(session, "alice")] == [second]
        assert {s.id for s in await db.list_waiting_for(session, "bob")} == {first, second}
        assert await db.acknowledgers(session) == {first: {"alice"}}
        assert await db.acknowledged_by(session, "alice") == 1
        assert await db.waiting_counts(session, "alice") == (1, 3, 104 + 105 + 106)
        assert await db.waiting_counts(session, "bob") == (2, 6, 621)
        with pytest.raises(db.InvalidRecordError):
            await db.add_acknowledgements(session, [second], "x" * 129, DAY)
    async with sessions.begin() as session:
        await db.acknowledge(session, [first], DAY, 0)  # the policy is met
        assert await db.acknowledgers(session) == {}
        assert await db.waiting_counts(session, "bob") == (1, 3, 315)
        assert [s.id for s in await db.list_waiting_for(session, "bob")] == [second]
        await db.forget_submissions(session, [first])
    async with sessions() as session:
        assert await db.acknowledged_by(session, "alice") == 0  # the row went with it
        count = (await session.execute(text("SELECT count(*) FROM acknowledgements"))).scalar()
        assert count == 0


async def test_negative_retention_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        with pytest.raises(db.InvalidRecordError):
            await db.acknowledge(session, ["x"], DAY, -1)


# --- replies ------------------------------------------------------------------------------------


async def test_replies_belong_to_their_source(sessions: async_sessionmaker[AsyncSession]) -> None:
    mine = await new_source(sessions, "1" * 64)
    other = await new_source(sessions, "2" * 64)
    async with sessions.begin() as session:
        late = await db.add_reply(session, mine, stored(1), "2026-11-27", "Alice")
        early = await db.add_reply(session, mine, stored(2), "2026-11-25", "Bob")
        await db.add_reply(session, other, stored(3), DAY, "Alice")
    async with sessions() as session:
        replies = await db.replies_for(session, mine)
    assert [r.id for r in replies] == [early, late]
    assert [(r.investigator, r.name, r.size) for r in replies] == [
        ("Bob", stored(2).name, 102),
        ("Alice", stored(1).name, 101),
    ]


async def test_a_source_deletes_only_its_own_replies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    mine = await new_source(sessions, "1" * 64)
    other = await new_source(sessions, "2" * 64)
    async with sessions.begin() as session:
        reply_id = await db.add_reply(session, mine, stored(1), DAY, "Alice")
    async with sessions.begin() as session:
        assert await db.delete_reply(session, other, reply_id) is None
    async with sessions.begin() as session:
        assert await db.delete_reply(session, mine, reply_id) == stored(1).name
    async with sessions() as session:
        assert await db.replies_for(session, mine) == []


async def test_a_bad_investigator_label_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source_id = await new_source(sessions)
    async with sessions() as session:
        with pytest.raises(db.InvalidRecordError):
            await db.add_reply(session, source_id, stored(1), DAY, "")


# --- housekeeping -------------------------------------------------------------------------------


async def test_sweep_orphans_deletes_only_files_no_row_names(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    store = CiphertextStore(tmp_path / "store", reserve_bytes=0)

    async def put(data: bytes) -> StoredFile:
        async with store.writer() as writer:
            await writer.write(data)
            return await writer.commit()

    recorded, replied, orphan = await put(b"one"), await put(b"two"), await put(b"three")
    source_id = await new_source(sessions)
    async with sessions.begin() as session:
        await db.add_submission(session, source_id, [("message", recorded)], DAY)
        await db.add_reply(session, source_id, replied, DAY, "Alice")
    async with sessions() as session:
        assert await db.sweep_orphans(session, store) == 1
    assert sorted(store.names()) == sorted([recorded.name, replied.name])
    assert not store.path(orphan.name).exists()
    store.close()


def test_today_is_a_bare_utc_date() -> None:
    day = db.today()
    assert day == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert db._day(day) == day


# --- nothing of a purge remains (issue 10, section 5) --------------------------------------------


PURGED_DAY, ACK_DAY = "2019-03-07", "2022-02-02"


async def purge_many(
    sessions: async_sessionmaker[AsyncSession], store: CiphertextStore
) -> list[str]:
    """100 submissions purged by retention while 30 stay; returns what only the purged ones
    held (their ids, files' names and hashes, their days)."""
    from dropbox import transfer

    source = await new_source(sessions)
    kept_source = await new_source(sessions, "b" * 64)
    purged, marks = [], [PURGED_DAY, ACK_DAY]
    for first in range(1000, 1300, 3):  # enough rows for several pages, splits and a freelist
        files: list[tuple[db.Kind, StoredFile]] = []
        for kind, n in (("manifest", first), ("message", first + 1), ("file", first + 2)):
            name, digest = f"{n:032x}.age", f"d1{n:062x}"
            files.append((kind, StoredFile(name=name, size=n, sha256=digest)))
            marks += [name, digest]
        async with sessions.begin() as session:
            purged.append(await db.add_submission(session, source, files, PURGED_DAY))
    for first in range(5000, 5090, 3):
        await new_submission(sessions, kept_source, first)
    async with sessions.begin() as session:
        await db.add_acknowledgements(session, purged, "alice", ACK_DAY)
        await db.acknowledge(session, purged, ACK_DAY, 0)
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("ANALYZE"))  # as autovacuum would, at any moment
    assert await transfer.purge_due(sessions, store, ACK_DAY) == 300
    async with sessions() as session:  # the service is still running: connections stay open
        assert len(await db.list_unacknowledged(session)) == 30
    return [*marks, *purged]


def residue(files: Iterable[Path], marks: list[str]) -> dict[str, list[str]]:
    """For each file holding any of `marks`: the first few it holds."""
    found = {}
    for path in sorted(files):
        if path.is_file():
            data = path.read_bytes()
            held = [m for m in marks if m.encode() in data]
            if held:
                found[str(path)] = held[:3]
    return found


async def test_a_purge_leaves_nothing_of_the_submission_in_any_file(
    db_path: Path, sqlite_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """After `transfer ack` and retention purged a submission, no file under the data folder
    (database, its WAL and shm, the store) holds its id, its files' names or hashes, or its day."""
    store = CiphertextStore(db_path.parent / "store", reserve_bytes=0)
    marks = await purge_many(sqlite_sessions, store)
    assert residue(db_path.parent.rglob("*"), marks) == {}
    store.close()


async def test_on_postgresql_a_purge_leaves_nothing_in_the_tables_files(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """PostgreSQL keeps a deleted row's bytes in its pages: the purge rewrites the tables
    (VACUUM FULL), so neither the tables nor the database's files hold the purged submission.
    Its write-ahead log still does until recycled (docs/format.md); it is not searched here."""
    url = postgres_cluster.new_database()
    store = CiphertextStore(tmp_path / "store", reserve_bytes=0)
    async with opened(url) as (_, sessions):
        marks = await purge_many(sessions, store)
        async with sessions() as session:
            for table in db.Base.metadata.sorted_tables:
                rows = (await session.execute(select(table))).all()
                assert not [m for m in marks if m in repr(rows)], table.name
            # pg_statistic keeps sample values compressed, out of reach of a search of the files
            stats = (await session.execute(text(
                "SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats"
                " WHERE schemaname = 'public'"))).all()
            assert not [m for m in marks if m in repr(stats)]
    postgres_cluster.checkpoint()  # every page of the database written to its files
    [(oid,)] = postgres_query(url, "SELECT oid FROM pg_database WHERE datname = current_database()")
    files = list((postgres_cluster.data_dir / "base" / str(oid)).iterdir())
    assert len(files) > 100  # the database's tables, indexes and catalogs were searched
    assert residue(files, marks) == {}
    store.close()


async def _writers(maker: async_sessionmaker[AsyncSession], count: int, in_turn: bool,
                   hold: float, first: int = 0) -> list[BaseException | None]:
    """`count` writers at once, each holding its transaction `hold` seconds (as a transaction
    does whose statements wait on a busy event loop); what each raised, if anything."""
    async def one(number: int) -> None:
        transaction = db.writing(maker) if in_turn else maker.begin()
        async with transaction as session:
            await db.create_source(session, f"{first + number:064x}", RECIPIENT, DAY)
            await asyncio.sleep(hold)

    results = await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)
    return list(results)


async def test_sqlite_writers_take_turns_instead_of_polling_for_the_lock(tmp_path: Path) -> None:
    """20 writers at once on SQLite with a 0.5 s busy timeout, each holding its transaction
    0.1 s: left to SQLite's busy handler the later ones give up ("database is locked");
    in turn (db.writing) every one commits, first come first served."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'turns.sqlite'}"
    await db.init_db(url)
    engine, maker = db.create_engine_and_sessionmaker(url)

    @event.listens_for(engine.sync_engine, "connect")
    def short_busy_timeout(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA busy_timeout=500")

    try:
        polled = await _writers(maker, 20, in_turn=False, hold=0.1)
        assert any(isinstance(e, OperationalError) and "locked" in str(e) for e in polled)
        in_turn = await _writers(maker, 20, in_turn=True, hold=0.1, first=100)
        assert in_turn == [None] * 20
        async with maker() as session:
            count = await session.scalar(text("SELECT count(*) FROM sources"))
        assert count == 20 + sum(r is None for r in polled)
        # The wait has a deadline: a writer that cannot get its turn in time gives up.
        async with db.write_turn(maker):
            with pytest.raises(BusyError):
                async with db.writing(maker, timeout=0.2):
                    pass
    finally:
        await engine.dispose()


STALE_COPY = Path(__file__).parent / "data" / "sqlite_stale_copy.json"


async def test_a_purge_leaves_no_stale_copy_that_secure_delete_missed(tmp_path: Path) -> None:
    """secure_delete zeroes each deleted row, but a page split or merge can leave a stale copy
    of a key in a page's free space. These ids (found by trying random ones: about 1 purge in
    500) leave one purged id in the file after a plain checkpoint; truncate_journal's VACUUM
    leaves none in any file."""
    data = json.loads(STALE_COPY.read_text())
    path = tmp_path / "stale.sqlite"
    engine, sessions = db.create_engine_and_sessionmaker(f"sqlite+aiosqlite:///{path}")
    try:
        async with sessions.begin() as session:
            await session.execute(text("CREATE TABLE s (id TEXT PRIMARY KEY, day TEXT)"))
            await session.execute(text(
                "CREATE TABLE f (id INTEGER PRIMARY KEY, sid TEXT REFERENCES s(id), name TEXT)"))
            await session.execute(text("CREATE INDEX fi ON f (sid)"))
        names = iter(data["names"])
        for sid in data["purged"] + data["kept"]:  # one submission a transaction, as intake
            async with sessions.begin() as session:
                await session.execute(text("INSERT INTO s VALUES (:id, '2026-01-01')"), {"id": sid})
                for _ in range(3):
                    await session.execute(text("INSERT INTO f (sid, name) VALUES (:sid, :name)"),
                                          {"sid": sid, "name": next(names)})
        async with sessions.begin() as session:
            for sid in data["purged"]:
                await session.execute(text("DELETE FROM f WHERE sid = :sid"), {"sid": sid})
                await session.execute(text("DELETE FROM s WHERE id = :sid"), {"sid": sid})
        async with sessions() as session:
            await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        assert residue([path], data["purged"]) != {}, "this SQLite leaves no stale copy here"
        async with sessions() as session:
            assert await db.truncate_journal(session)
        assert residue(path.parent.iterdir(), data["purged"]) == {}
        async with sessions() as session:  # the kept rows are all there
            kept = (await session.execute(text("SELECT id FROM s ORDER BY id"))).scalars()
            assert list(kept) == sorted(data["kept"])
    finally:
        await engine.dispose()


async def test_truncate_journal_empties_the_wal(
    db_path: Path, sqlite_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await new_source(sqlite_sessions)
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.stat().st_size > 0
    async with sqlite_sessions() as session:
        assert await db.truncate_journal(session)
    assert wal.stat().st_size == 0
    assert db.sqlite_files(f"sqlite+aiosqlite:///{db_path}") == [
        db_path, wal, db_path.with_name(db_path.name + "-shm")]
    async with sqlite_sessions() as session:  # still a working database
        assert await db.get_source_by_lookup(session, "a" * 64) is not None


async def test_a_sources_submissions_are_listed_newest_first_and_bounded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        mine = (await db.create_source(session, "a" * 64, "age1x", "2026-01-01")).id
        other = (await db.create_source(session, "b" * 64, "age1y", "2026-01-01")).id
        for number, day in enumerate(["2026-01-02", "2026-01-05", "2026-01-03"]):
            await db.add_submission(session, mine, [("manifest", stored(number))], day,
                                    receipt=day.encode())
        await db.add_submission(session, other, [("manifest", stored(9))], "2026-01-09")
        listed = await db.source_submissions(session, mine)
        assert [(day, receipt) for _, day, receipt in listed] == [
            ("2026-01-05", b"2026-01-05"), ("2026-01-03", b"2026-01-03"),
            ("2026-01-02", b"2026-01-02")]
        assert len(await db.source_submissions(session, mine, limit=2)) == 2
        assert await db.source_submissions(session, "0" * 32) == []


async def test_on_postgresql_a_reader_in_the_way_makes_the_rewrite_give_up_not_wait(
    postgres_cluster: PostgresCluster,
) -> None:
    """VACUUM FULL needs each table alone; while it waits, every later query on that table waits
    behind it. A long reader (a pull) makes it give up (the next purge or day retries)."""
    async with opened(postgres_cluster.new_database()) as (_, sessions):
        await new_source(sessions)
        async with sessions.begin() as reader:
            await reader.execute(select(db.Source))  # holds the table until it commits
            async with sessions() as session:
                assert await db.truncate_journal(session) is False
        async with sessions() as session:
            assert await db.truncate_journal(session) is True
            assert await db.get_source_by_lookup(session, "a" * 64) is not None
