"""The intake database: SQLAlchemy 2 async models and the domain functions that use them.

What a seized database can tell (issue 3, "What is stored"): per source its lookup id (an Argon2id
output, not the codename), its reply recipient and the day it was created; per submission a random
id, the day, the names, sizes and SHA-256 of its age files, its transfer state and its receipt
sealed with a key only the source's codename derives (keys/receipt.py: what the source sees as
"arrived"); per reply a source deleted, its bundle id and its author, with no day and no source.
Never an IP address, a user agent, a codename, a file name, a content type or a time of day: days
are ISO dates (`YYYY-MM-DD`), UTC.

Every domain function takes its `AsyncSession` explicitly and only flushes: the caller owns the
transaction and commits it (`async with sessionmaker.begin() as session:`), so a handler commits
the row after the store writer's `commit()` and before it sends the success page.

SQLite (the default) runs with `journal_mode=WAL`, `synchronous=FULL` (a committed row is on disk
before the commit returns), `foreign_keys=ON`, `secure_delete=ON` (deleted rows are zeroed) and
`temp_store=MEMORY`. secure_delete misses the stale copies a page split or merge can leave, and
the write-ahead log still holds the pages as they were before a delete: `truncate_journal`, run
after every purge and by the daily maintenance, rebuilds the database (`VACUUM`), copies the log
into it and cuts the log to zero bytes, so nothing of a purged submission remains in any file
(issue 10, section 5).

PostgreSQL (`postgresql+asyncpg://`, the `postgresql` extra) runs the same migrations. A delete
there leaves the row's bytes in the table's and its indexes' pages (a plain VACUUM only marks them
free): `truncate_journal` rewrites the tables instead (`VACUUM FULL`). What PostgreSQL keeps beyond
that (its write-ahead log, replicas, backups) is the operator's to configure: docs/format.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dropbox.store import Store, StoredFile
from keys.errors import BusyError, InputError, StorageError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = [
    "Acknowledgement",
    "Base",
    "Ciphertext",
    "DeletedReply",
    "InvalidRecordError",
    "Kind",
    "NotAcknowledgedError",
    "ObjectGoneError",
    "Reply",
    "Source",
    "StoredChunk",
    "StoredObject",
    "Submission",
    "acknowledge",
    "acknowledged_by",
    "acknowledgers",
    "add_acknowledgements",
    "add_reply",
    "add_submission",
    "commit_object",
    "create_engine_and_sessionmaker",
    "create_source",
    "delete_object",
    "delete_reply",
    "deleted_replies_by",
    "due_for_deletion",
    "forget_submissions",
    "get_or_create_source",
    "get_source_by_lookup",
    "idle_objects",
    "init_db",
    "list_unacknowledged",
    "list_waiting_for",
    "object_committed",
    "put_chunk",
    "read_chunk",
    "replies_for",
    "source_submissions",
    "sqlite_files",
    "sweep_orphans",
    "today",
    "truncate_journal",
    "waiting_counts",
    "write_turn",
    "writing",
]

Kind = Literal["message", "file", "manifest"]
KINDS: tuple[str, ...] = get_args(Kind)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class InvalidRecordError(StorageError, InputError):
    """A value handed to the database layer has the wrong shape (a day, a kind, an empty list)."""


class ObjectGoneError(StorageError):
    """A database-store object was deleted (swept) while its writer was still writing it."""


class NotAcknowledgedError(StorageError):
    """Ciphertexts of a submission the investigators have not acknowledged were to be forgotten."""


def _random_id() -> str:
    return secrets.token_hex(16)


def new_session_epoch() -> str:
    return secrets.token_hex(8)


class Base(DeclarativeBase):
    # Named constraints, so later migrations can alter them on SQLite (batch mode) by name.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Source(Base):
    """A source, known only by the lookup id its codename derives (never the codename)."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_random_id)
    lookup_id: Mapped[str] = mapped_column(String(128), unique=True)
    reply_recipient: Mapped[str] = mapped_column(String(128))
    created_day: Mapped[str] = mapped_column(String(10))
    # Random; copied into a cluster node's sealed session cookie at login and replaced at logout,
    # which ends the source's sessions on every node (dropbox/cluster.py). Never a time.
    session_epoch: Mapped[str] = mapped_column(String(16), default=new_session_epoch,
                                               server_default="")


class Submission(Base):
    """One submission; `acknowledged_day` is set once enough investigators confirm they hold it
    (the organization's policy, dropbox/transfer.py); each one's confirmation is an
    `Acknowledgement` row until then."""

    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_random_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    acknowledged_day: Mapped[str | None] = mapped_column(String(10))
    delete_after_day: Mapped[str | None] = mapped_column(String(10))
    # What arrived (file names, sizes, hash prefixes), sealed with the source's receipt key
    # (keys/receipt.py): nobody without the codename can read it. None for older submissions.
    receipt: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    source: Mapped[Source] = relationship(lazy="selectin")
    ciphertexts: Mapped[list[Ciphertext]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        order_by="Ciphertext.id",
        back_populates="submission",
    )

    __table_args__ = (Index(None, "acknowledged_day"),)


class Ciphertext(Base):
    """One age file of a submission, by its random store name."""

    __tablename__ = "ciphertexts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))

    submission: Mapped[Submission] = relationship(back_populates="ciphertexts", lazy="raise")

    __table_args__ = (CheckConstraint("kind IN ('message', 'file', 'manifest')", name="kind"),)


class Acknowledgement(Base):
    """One investigator (by keyring label) holds one submission. Deleted with the submission."""

    __tablename__ = "acknowledgements"

    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True
    )
    investigator: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(String(10))

    __table_args__ = (Index(None, "investigator"),)


class Reply(Base):
    """An age-encrypted reply to a source, written offline by an investigator."""

    __tablename__ = "replies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_random_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    investigator: Mapped[str] = mapped_column(String(128))
    # The id the investigator's reply bundle gave it (None for replies stored before): what
    # `transfer status` names when the source has deleted it.
    bundle_reply_id: Mapped[str | None] = mapped_column(String(128))


class DeletedReply(Base):
    """A reply its source deleted, by the bundle's reply id and its author: what the author's
    `transfer status` reports, and what a second push of the same bundle must not bring back.
    Deliberately without a day and without the source."""

    __tablename__ = "deleted_replies"

    investigator: Mapped[str] = mapped_column(String(128), primary_key=True)
    reply_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class StoredObject(Base):
    """A ciphertext of the database store (`[storage] ciphertext = "database"`): its random name,
    the last day a writer wrote to it (a day, never a moment) and whether it was committed. Only
    committed objects are read; an uncommitted one is an upload in flight or a crash's leftover."""

    __tablename__ = "stored_objects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10))
    committed: Mapped[bool] = mapped_column(default=False)


class StoredChunk(Base):
    """One chunk (at most `store.FLUSH_BYTES`) of a stored object, numbered from 0."""

    __tablename__ = "stored_chunks"

    name: Mapped[str] = mapped_column(
        ForeignKey("stored_objects.name", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


# --- days -------------------------------------------------------------------------------------


def today() -> str:
    """Today's UTC date as `YYYY-MM-DD`: the only clock reading the database ever holds."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def _day(value: str, what: str = "day") -> str:
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        raise InvalidRecordError(f"{what} must be a YYYY-MM-DD date, not {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError as error:
        raise InvalidRecordError(f"{what} is not a real date: {value!r}") from error
    return value


def _add_days(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


# --- sources ----------------------------------------------------------------------------------


async def get_source_by_lookup(session: AsyncSession, lookup_id: str) -> Source | None:
    """The source whose codename derives `lookup_id`, if it has been seen before."""
    result = await session.execute(select(Source).where(Source.lookup_id == lookup_id))
    return result.scalar_one_or_none()


async def session_epoch(session: AsyncSession, source_id: str) -> str | None:
    """The source's current session epoch (None if the source is gone). Raises StorageError
    when the database cannot answer (a page then treats the request as not logged in)."""
    try:
        result = await session.execute(select(Source.session_epoch)
                                       .where(Source.id == source_id))
    except SQLAlchemyError as error:
        raise StorageError(f"the session check failed: {type(error).__name__}") from None
    return result.scalar_one_or_none()


async def renew_session_epoch(session: AsyncSession, source_id: str) -> None:
    """Logout on a cluster node: every sealed session of the source stops opening anywhere."""
    await session.execute(update(Source).where(Source.id == source_id)
                          .values(session_epoch=new_session_epoch()))


async def create_source(
    session: AsyncSession, lookup_id: str, reply_recipient: str, day: str
) -> Source:
    """A new source record (raises IntegrityError at flush if `lookup_id` already exists)."""
    source = Source(lookup_id=lookup_id, reply_recipient=reply_recipient, created_day=_day(day))
    session.add(source)
    await session.flush()
    return source


async def get_or_create_source(
    session: AsyncSession, lookup_id: str, reply_recipient: str, day: str
) -> Source:
    """The source for `lookup_id`, created on first sight; safe against a concurrent login."""
    existing = await get_source_by_lookup(session, lookup_id)
    if existing is not None:
        return existing
    values = {
        "id": _random_id(),
        "lookup_id": lookup_id,
        "reply_recipient": reply_recipient,
        "created_day": _day(day),
        "session_epoch": new_session_epoch(),
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        await session.execute(
            insert(Source).values(values).on_conflict_do_nothing(index_elements=["lookup_id"])
        )
    else:
        session.add(Source(**values))
        await session.flush()
    source = await get_source_by_lookup(session, lookup_id)
    assert source is not None
    return source


# --- submissions ------------------------------------------------------------------------------


async def add_submission(
    session: AsyncSession,
    source_id: str,
    files: Sequence[tuple[Kind, StoredFile]],
    day: str,
    receipt: bytes | None = None,
) -> str:
    """Record a submission whose age files are already committed to the store; returns its id.
    `receipt` is the sealed receipt (keys/receipt.py), never anything readable."""
    if not files:
        raise InvalidRecordError("a submission needs at least one ciphertext")
    for kind, _ in files:
        if kind not in KINDS:
            raise InvalidRecordError(f"unknown ciphertext kind {kind!r}")
    submission = Submission(source_id=source_id, day=_day(day), receipt=receipt)
    submission.ciphertexts = [
        Ciphertext(kind=kind, name=f.name, size=f.size, sha256=f.sha256) for kind, f in files
    ]
    session.add(submission)
    await session.flush()
    return submission.id


async def source_submissions(
    session: AsyncSession, source_id: str, limit: int = 100
) -> list[tuple[str, str, bytes | None]]:
    """(id, day, sealed receipt) of a source's submissions still on record, newest day first, at
    most `limit` (a page view must not cost more than the submissions that made it)."""
    result = await session.execute(
        select(Submission.id, Submission.day, Submission.receipt)
        .where(Submission.source_id == source_id)
        .order_by(Submission.day.desc(), Submission.id)
        .limit(limit)
    )
    return [(sid, day, receipt) for sid, day, receipt in result]


async def list_unacknowledged(session: AsyncSession) -> list[Submission]:
    """Every submission not yet acknowledged, oldest day first, with its source and ciphertexts."""
    result = await session.execute(
        select(Submission)
        .where(Submission.acknowledged_day.is_(None))
        .order_by(Submission.day, Submission.id)
    )
    return list(result.scalars())


def _waiting_for(investigator: str) -> Any:
    """The ids of what one investigator's pull carries: submissions not acknowledged under the
    policy yet that this investigator has not acknowledged either."""
    mine = select(Acknowledgement.submission_id).where(
        Acknowledgement.investigator == investigator
    )
    return select(Submission.id).where(
        Submission.acknowledged_day.is_(None), Submission.id.not_in(mine)
    )


async def list_waiting_for(session: AsyncSession, investigator: str) -> list[Submission]:
    """What one investigator's pull carries, oldest day first, with sources and ciphertexts."""
    result = await session.execute(
        select(Submission)
        .where(Submission.id.in_(_waiting_for(investigator)))
        .order_by(Submission.day, Submission.id)
    )
    return list(result.scalars())


async def waiting_counts(session: AsyncSession, investigator: str) -> tuple[int, int, int]:
    """(submissions, files, bytes) of what one investigator's pull carries, counted in SQL."""
    result = await session.execute(
        select(
            func.count(func.distinct(Ciphertext.submission_id)),
            func.count(Ciphertext.id),
            func.coalesce(func.sum(Ciphertext.size), 0),
        ).where(Ciphertext.submission_id.in_(_waiting_for(investigator)))
    )
    submissions, files, size = result.one()
    return int(submissions), int(files), int(size)


async def add_acknowledgements(
    session: AsyncSession, ids: Iterable[str], investigator: str, day: str
) -> tuple[list[str], list[str]]:
    """Record that `investigator` holds these submissions. Returns (newly acknowledged, already
    acknowledged by them); unknown ids are in neither list."""
    wanted = sorted(set(ids))
    if not wanted:
        return [], []
    if not 1 <= len(investigator) <= 128:
        raise InvalidRecordError("an investigator label has 1 to 128 characters")
    existing = set(
        (await session.execute(select(Submission.id).where(Submission.id.in_(wanted)))).scalars()
    )
    already = set(
        (
            await session.execute(
                select(Acknowledgement.submission_id).where(
                    Acknowledgement.submission_id.in_(wanted),
                    Acknowledgement.investigator == investigator,
                )
            )
        ).scalars()
    )
    new = [i for i in wanted if i in existing and i not in already]
    session.add_all(
        Acknowledgement(submission_id=i, investigator=investigator, day=_day(day)) for i in new
    )
    await session.flush()
    return new, sorted(already)


async def acknowledgers(session: AsyncSession) -> dict[str, set[str]]:
    """For each submission not acknowledged under the policy yet that someone acknowledged:
    the labels of the investigators who did."""
    result = await session.execute(
        select(Acknowledgement.submission_id, Acknowledgement.investigator)
        .join(Submission, Submission.id == Acknowledgement.submission_id)
        .where(Submission.acknowledged_day.is_(None))
    )
    found: dict[str, set[str]] = {}
    for submission_id, label in result:
        found.setdefault(submission_id, set()).add(label)
    return found


async def submission_days(session: AsyncSession, ids: Iterable[str]) -> dict[str, str]:
    """The day of each of these submissions (those that exist)."""
    rows = await session.execute(
        select(Submission.id, Submission.day).where(Submission.id.in_(sorted(ids)))
    )
    return {submission_id: day for submission_id, day in rows}


async def count_replies(session: AsyncSession) -> int:
    """Replies stored for sources that have not deleted them."""
    return int(await session.scalar(select(func.count()).select_from(Reply)) or 0)


async def acknowledged_by(session: AsyncSession, investigator: str) -> int:
    """How many submissions still on record this investigator has acknowledged."""
    result = await session.execute(
        select(func.count()).select_from(Acknowledgement).where(
            Acknowledgement.investigator == investigator
        )
    )
    return int(result.scalar_one())


async def acknowledge(
    session: AsyncSession, ids: Iterable[str], day: str, retention_days: int
) -> list[str]:
    """Mark submissions as acknowledged under the organization's policy; their ciphertexts may
    be deleted from `day + retention_days` on. Returns the ids newly acknowledged (already
    acknowledged or unknown ids are left alone, so a repeated acknowledgement is harmless)."""
    if retention_days < 0:
        raise InvalidRecordError("retention_days must not be negative")
    wanted = sorted(set(ids))
    if not wanted:
        return []
    result = await session.execute(
        update(Submission)
        .where(Submission.id.in_(wanted), Submission.acknowledged_day.is_(None))
        .values(acknowledged_day=_day(day), delete_after_day=_add_days(day, retention_days))
        .returning(Submission.id)
        .execution_options(synchronize_session=False)
    )
    done = sorted(result.scalars())
    # Objects already loaded in this session must not keep showing the old state.
    for submission_id in done:
        loaded = await session.get(Submission, submission_id)
        if loaded is not None:
            await session.refresh(loaded)
    return done


async def due_for_deletion(session: AsyncSession, today: str) -> list[Submission]:
    """Acknowledged submissions whose retention has run out (still on record)."""
    result = await session.execute(
        select(Submission)
        .where(
            Submission.acknowledged_day.is_not(None),
            Submission.delete_after_day <= _day(today),
        )
        .order_by(Submission.delete_after_day, Submission.id)
    )
    return list(result.scalars())


async def forget_submissions(session: AsyncSession, submission_ids: Iterable[str]) -> list[str]:
    """Delete acknowledged submissions, rows and ciphertext rows alike; returns the store names
    whose files the caller deletes after committing. The submission row goes too: kept, it would
    tell whoever seizes the server on which days a source (found through a coerced codename)
    submitted. Refuses (NotAcknowledgedError) for any submission the investigators have not
    acknowledged: those are never forgotten."""
    wanted = sorted(set(submission_ids))
    if not wanted:
        return []
    unacknowledged = await session.execute(
        select(Submission.id).where(
            Submission.id.in_(wanted), Submission.acknowledged_day.is_(None)
        )
    )
    refused = list(unacknowledged.scalars())
    if refused:
        raise NotAcknowledgedError(f"submissions not acknowledged yet: {', '.join(refused)}")
    result = await session.execute(
        delete(Ciphertext)
        .where(Ciphertext.submission_id.in_(wanted))
        .returning(Ciphertext.name)
        .execution_options(synchronize_session=False)
    )
    names = sorted(result.scalars())
    await session.execute(
        delete(Submission)
        .where(Submission.id.in_(wanted))
        .execution_options(synchronize_session=False)
    )
    for submission_id in wanted:
        loaded = await session.get(Submission, submission_id)
        if loaded is not None:
            session.expunge(loaded)
    return names


async def add_reply(
    session: AsyncSession, source_id: str, stored: StoredFile, day: str, investigator: str,
    bundle_reply_id: str | None = None,
) -> str:
    """Record an age-encrypted reply already committed to the store; returns its id."""
    if not 1 <= len(investigator) <= 128:
        raise InvalidRecordError("an investigator label has 1 to 128 characters")
    reply = Reply(
        source_id=source_id,
        day=_day(day),
        name=stored.name,
        size=stored.size,
        sha256=stored.sha256,
        investigator=investigator,
        bundle_reply_id=bundle_reply_id,
    )
    session.add(reply)
    await session.flush()
    return reply.id


async def replies_for(session: AsyncSession, source_id: str) -> list[Reply]:
    """The replies waiting for a source, oldest day first."""
    result = await session.execute(
        select(Reply).where(Reply.source_id == source_id).order_by(Reply.day, Reply.id)
    )
    return list(result.scalars())


async def delete_reply(session: AsyncSession, source_id: str, reply_id: str) -> str | None:
    """Forget one reply of this source (it read it); returns the store name to delete, if any
    (None for an unknown id and for another source's reply alike). Its author learns that the
    source deleted it (`DeletedReply`), never when."""
    reply = await session.get(Reply, reply_id)
    if reply is None or reply.source_id != source_id:
        return None
    if reply.bundle_reply_id is not None:
        await session.merge(DeletedReply(investigator=reply.investigator,
                                         reply_id=reply.bundle_reply_id))
    await session.delete(reply)
    await session.flush()
    return reply.name


async def deleted_replies_by(session: AsyncSession, investigator: str) -> list[str]:
    """The bundle reply ids of this investigator's replies that their sources deleted."""
    result = await session.execute(
        select(DeletedReply.reply_id)
        .where(DeletedReply.investigator == investigator)
        .order_by(DeletedReply.reply_id)
    )
    return list(result.scalars())


# --- the database store (dropbox/store_db.py) --------------------------------------------------


async def put_chunk(
    session: AsyncSession, name: str, seq: int, data: bytes, day: str, *, new: bool
) -> None:
    """Append chunk `seq` of object `name` (creating the object with the first chunk); the
    object's day becomes `day`, so the sweep sees a writer that is still writing."""
    if new:
        session.add(StoredObject(name=name, day=_day(day), committed=False))
        await session.flush()
    else:
        await session.execute(
            update(StoredObject).where(StoredObject.name == name, StoredObject.day != day)
            .values(day=_day(day))
        )
    if data:
        session.add(StoredChunk(name=name, seq=seq, data=data))
    await session.flush()


async def commit_object(session: AsyncSession, name: str) -> None:
    """Mark an object complete: from now on it can be read (and a row may name it). Raises
    StorageError if the object is gone (swept): its upload must then fail, not be acknowledged."""
    result = await session.execute(
        update(StoredObject).where(StoredObject.name == name).values(committed=True)
    )
    if getattr(result, "rowcount", 1) != 1:
        raise ObjectGoneError(f"stored object {name} vanished before its commit")


async def object_committed(session: AsyncSession, name: str) -> bool:
    """Whether `name` is a committed object."""
    found = await session.execute(
        select(StoredObject.committed).where(StoredObject.name == name)
    )
    return bool(found.scalar_one_or_none())


async def read_chunk(session: AsyncSession, name: str, seq: int) -> bytes | None:
    """Chunk `seq` of object `name`, or None past its end."""
    found = await session.execute(
        select(StoredChunk.data).where(StoredChunk.name == name, StoredChunk.seq == seq)
    )
    return found.scalar_one_or_none()


async def delete_object(session: AsyncSession, name: str) -> None:
    """Delete an object and its chunks; one already gone is not an error."""
    await session.execute(delete(StoredChunk).where(StoredChunk.name == name))
    await session.execute(delete(StoredObject).where(StoredObject.name == name))


async def idle_objects(session: AsyncSession, last_day: str, *, committed: bool) -> list[str]:
    """Objects (committed or not) nobody wrote to after `last_day`."""
    found = await session.execute(
        select(StoredObject.name)
        .where(StoredObject.day <= _day(last_day), StoredObject.committed == committed)
        .order_by(StoredObject.name)
    )
    return list(found.scalars())


# --- housekeeping -----------------------------------------------------------------------------


async def sweep_orphans(session: AsyncSession, store: Store) -> int:
    """Delete committed store files no row names: a crash between the file's commit and the row's
    leaves them. Call at startup only, before serving, when no upload is in flight."""
    known: set[str] = set()
    for column in (Ciphertext.name, Reply.name):
        known.update((await session.execute(select(column))).scalars())
    orphans = [name for name in store.names() if name not in known]
    for name in orphans:
        store.delete(name)
    return len(orphans)


async def truncate_journal(session: AsyncSession, *, tables: Sequence[str] = ()) -> bool:
    """Leave no copy of a deleted row in the database's files. Call it on a session with no
    transaction open. Returns False when another connection kept it from completing (the next
    call tries again).

    SQLite: rebuild the database from its live rows (`VACUUM`), then checkpoint the write-ahead
    log into it and truncate the log to zero bytes. PostgreSQL: `_rewrite_tables`, only `tables`
    when named (a source deleting a reply must not make every table be rewritten). Others:
    nothing."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return await _rewrite_tables(session, tables)
    if dialect != "sqlite":
        return True
    # secure_delete zeroes a deleted row, but a page split or merge can leave a stale copy of a
    # key in a page's free space (measured: about 1 purge in 500 kept an id in the file).
    # VACUUM rebuilds every page from the live rows; its scratch copy stays in memory.
    try:
        await session.execute(text("VACUUM"))
    except DBAPIError:  # another connection holds the write lock past busy_timeout
        return False
    busy, _log, _done = (await session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).one()
    return not busy


# A rewrite waits at most this long for its table's lock; meanwhile every other query on that
# table queues behind it, so a long reader (a pull) makes it give up rather than stall intake.
_REWRITE_LOCK_TIMEOUT = "2s"
_LOCK_NOT_AVAILABLE = "55P03"


async def _rewrite_tables(session: AsyncSession, only: Sequence[str] = ()) -> bool:
    """PostgreSQL: `VACUUM FULL` every table, which writes the live rows into new files and
    deletes the old ones. A plain VACUUM only marks a dead row's space free: its bytes stay in
    the page until a later row happens to overwrite them. VACUUM runs outside any transaction."""
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if not only or t.name in only)
    try:
        await connection.execute(text(f"SET lock_timeout = '{_REWRITE_LOCK_TIMEOUT}'"))
        await connection.execute(text(f"VACUUM FULL {tables}"))
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        return False
    finally:
        # Closed rather than reset: its lock timeout must not reach the pool, even when the
        # VACUUM was cancelled half-way (then the connection can no longer run a RESET). The
        # session goes on with a new connection.
        await connection.invalidate()
        await session.rollback()
    return True


def sqlite_files(url: str) -> list[Path]:
    """The files of a SQLite database (the database, its -wal and -shm) that exist now."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return []
    base = Path(parsed.database)
    candidates = [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]
    return [path for path in candidates if path.exists()]


# --- engine and migrations ----------------------------------------------------------------------


def create_engine_and_sessionmaker(
    url: str,
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """The engine and session factory for `url` (e.g. `sqlite+aiosqlite:////var/lib/amanat/db`)."""
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


# How long a write waits for its turn on SQLite before it gives up (BusyError). A submission
# waits here with its ciphertext already durable: the deadline is generous, not short.
WRITE_WAIT_SECONDS = 300.0
_WRITE_LOCKS: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write_turn(
    maker: async_sessionmaker[AsyncSession], *, timeout: float = WRITE_WAIT_SECONDS
) -> AsyncIterator[None]:
    """This process's turn to write to the database of `maker`.

    SQLite has one writer at a time. Left to its busy handler, every other writer holds a pooled
    connection and sleeps and polls for the lock while the holder's statements each wait their
    turn on the event loop; under a thousand Tor uploads the pool ran dry and 0.3% of the
    submissions failed (bench/bench_soak.py). So on SQLite this process's writers queue here,
    first come first served, for at most `timeout` seconds (then BusyError: nothing was written,
    the page says try again); readers never wait
    (WAL). PostgreSQL locks rows, not the database: there the turn is always now."""
    bind = maker.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        yield
        return
    lock = _WRITE_LOCKS.setdefault(bind, asyncio.Lock())
    try:
        async with asyncio.timeout(timeout):
            await lock.acquire()
    except TimeoutError:
        raise BusyError(f"no turn to write to the database within {timeout:.0f} s") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def writing(
    maker: async_sessionmaker[AsyncSession], *, timeout: float = WRITE_WAIT_SECONDS
) -> AsyncIterator[AsyncSession]:
    """A write transaction in this process's turn (`write_turn`), committed when the block
    ends."""
    async with write_turn(maker, timeout=timeout), maker.begin() as session:
        yield session


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")  # no temporary file holds rows (VACUUM's copy)
    finally:
        cursor.close()


async def init_db(url: str) -> None:
    """Create the database if needed and upgrade its schema to the newest migration."""
    _create_private_sqlite_file(url)
    engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        # Migrations run in one real transaction: the sqlite3 driver would otherwise commit
        # each DDL statement on its own, and a crash could leave half a schema.
        event.listen(engine.sync_engine, "connect", _sqlite_manual_transactions)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to_head)
    finally:
        await engine.dispose()


def _sqlite_manual_transactions(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def _upgrade_to_head(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
    if connection.dialect.name == "postgresql":
        _keep_no_statistics(connection)


def _keep_no_statistics(connection: Connection) -> None:
    """PostgreSQL: collect no statistics of any column of ours. ANALYZE (autovacuum runs it)
    stores sample values (ids, store names, hashes, days) in pg_statistic, compressed, where a
    purge and its VACUUM FULL never reach them. Run with the migrations that create the tables,
    so no sample is ever taken (samples taken before stay: docs/format.md). Only columns not yet
    at 0 are altered, so a restart takes no lock."""
    ours = [table.name for table in Base.metadata.sorted_tables]
    columns = connection.execute(
        text(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relname = ANY(:tables) AND c.relnamespace = 'public'::regnamespace"
            " AND a.attnum > 0 AND NOT a.attisdropped"
            " AND a.attstattarget IS DISTINCT FROM 0"
        ),
        {"tables": ours},
    ).all()
    for table, column in columns:
        connection.execute(text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET STATISTICS 0'))


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """The Alembic configuration of the package's migrations (optionally bound to a connection)."""
    # Alembic is imported only when migrations run: it costs ~0.4 s at every `amanat` start.
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _create_private_sqlite_file(url: str) -> None:
    """Create a SQLite file 0600 before SQLite does: its -wal and -shm files copy that mode.

    An existing file is never opened here: closing any descriptor of the database file drops
    every POSIX lock this process holds on it, including the SHARED lock of a connection that is
    already open (`init_db` may run while the service's engine is up, e.g. for the transfer
    listener). Without that lock another process closing the database would take itself for
    the last user, checkpoint and delete the WAL under us, and later commits would be lost.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)
