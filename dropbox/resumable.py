"""Resumable uploads: each one an age STREAM that grows with every PATCH, keyed in memory only.

An upload is created for one logged-in session (another session never finds it) with its
plaintext length. Every byte that arrives is hashed, pushed into the upload's `Encryptor` and its
sealed chunks into a store `Writer`, exactly as the form's intake does; at the end of each
request the writer's buffer goes to the disk, so an idle upload holds nothing in memory but its
file key and the unsealed tail (at most one 64 KiB chunk the STREAM keeps back until it knows
whether more follows).

The offset (tus `Upload-Offset`) counts every plaintext byte the server holds for the upload:
sealed and written to its temporary file, or in the tail. Both live exactly as long as the file
key, so a resume survives any number of dropped connections, and none survives a restart (the
key never touches a disk: after a restart the upload is unknown, the client starts it again, and
the store's startup sweep deletes the orphaned temporary file).

When the last byte arrives the STREAM is finalized and the ciphertext committed: the upload is
finished and waits, as a file with its name, type, size and SHA-256, for the submission that
names it (`claim`, then `settle`). An upload that is neither finished nor touched for the expiry
time, or finished but never submitted within it, is deleted with its ciphertext (`expire`).

Bounds (the brief: nothing global exhausted by one client): uploads open at once, per session and
in all, with the least recently active upload evicted when the global pool is full (only if it
has been idle for `EVICT_IDLE_SECONDS`, so no upload that is moving is ever dropped); the form's
size limits and disk reserve at creation and while writing.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dropbox.config import LimitsConfig
from dropbox.intake import IntakeError, LimitExceededError, ReceivedFile, expected_disk_bytes
from dropbox.store import Store, Writer
from keys.age import Encryptor, Recipient
from keys.errors import BusyError
from keys.manifest import MAX_FIELD_NAME_CHARS, MAX_FILENAME_CHARS, fit_content_type

EVICT_IDLE_SECONDS = 600.0
"""Under pressure, an upload that has received nothing for this long may give its place."""
DEFAULT_FIELD = "files"
HOLD_WAIT_SECONDS = 10.0
"""How long a request waits for the one before it on the same upload to let go."""


class UnknownUploadError(IntakeError):
    """A submission names an upload that is not a finished upload of this session."""


class Preemptible(Protocol):
    def force_close(self) -> None: ...


@dataclass(frozen=True)
class UploadInfo:
    """What the source told about the file at creation (tus Upload-Metadata)."""

    field: str
    filename: str
    content_type: str

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> UploadInfo:
        return cls(
            field=(metadata.get("field") or DEFAULT_FIELD)[:MAX_FIELD_NAME_CHARS],
            filename=metadata.get("filename", "")[:MAX_FILENAME_CHARS],
            content_type=fit_content_type(metadata.get("filetype") or "application/octet-stream"),
        )


@dataclass(eq=False)
class Upload:
    """One resumable upload. `offset` only grows, and only while `lock` is held."""

    id: str
    session_key: str
    length: int
    info: UploadInfo
    expires: float  # monotonic
    active: float  # monotonic: the last time bytes arrived (or creation)
    writer: Writer | None
    encryptor: Encryptor | None = field(default=None, repr=False)
    offset: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)
    finished: ReceivedFile | None = None
    claimed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    holder: Preemptible | None = None
    gone: bool = False

    async def append(self, chunk: bytes, now: float, expiry: float) -> None:
        """Hash, seal and write one piece of plaintext; the caller has checked the length."""
        assert self.encryptor is not None
        assert self.writer is not None
        self.digest.update(chunk)
        for sealed in self.encryptor.update(chunk):
            await self.writer.write(sealed)
        self.offset += len(chunk)
        self.active, self.expires = now, now + expiry

    async def finish(self) -> None:
        """The last byte is in: seal the final chunk, commit the ciphertext, forget the key."""
        assert self.encryptor is not None
        assert self.writer is not None
        for sealed in self.encryptor.finalize():
            await self.writer.write(sealed)
        stored = await self.writer.commit()
        self.encryptor, self.writer = None, None
        self.finished = ReceivedFile(self.info.field, self.info.filename, self.info.content_type,
                                     self.length, self.digest.hexdigest(), stored,
                                     resumable=True)


class ResumableUploads:
    """Every open resumable upload, least recently active first."""

    def __init__(self, store: Store, limits: LimitsConfig) -> None:
        self.store = store
        self.limits = limits
        self.expiry = float(limits.resumable_expiry_seconds)
        self._uploads: OrderedDict[str, Upload] = OrderedDict()
        self._aborting: set[asyncio.Task[None]] = set()  # evicted writers being deleted

    def __len__(self) -> int:
        return len(self._uploads)

    def find(self, session_key: str, upload_id: str) -> Upload | None:
        """The session's upload by id; None for anyone else's, or one that is gone."""
        upload = self._uploads.get(upload_id)
        if upload is None or not secrets.compare_digest(upload.session_key, session_key):
            return None
        return upload

    async def create(self, session_key: str, length: int, info: UploadInfo,
                     recipients: Sequence[Recipient], now: float) -> Upload:
        """A new upload of `length` plaintext bytes; BusyError when the pools are full,
        LimitExceededError over the form's limits, DiskReserveError without room."""
        if length > self.limits.max_file_bytes:
            raise LimitExceededError("file", self.limits.max_file_bytes)
        self._make_room(session_key, length, now)
        self.store.ensure_room(expected_disk_bytes(length))
        writer, encryptor = self.store.writer(), Encryptor(recipients)
        upload = Upload(id=secrets.token_hex(16), session_key=session_key, length=length,
                        info=info, expires=now + self.expiry, active=now, writer=writer,
                        encryptor=encryptor)
        self._uploads[upload.id] = upload
        try:
            await writer.write(encryptor.header)
            if length == 0:
                await upload.finish()
        except BaseException:
            await self.discard(upload)
            raise
        return upload

    def _make_room(self, session_key: str, length: int, now: float) -> None:
        mine = [u for u in self._uploads.values() if u.session_key == session_key]
        unfinished = sum(1 for u in mine if u.finished is None)
        if len(mine) >= self.limits.max_files:
            raise LimitExceededError("files", self.limits.max_files)
        if sum(u.length for u in mine) + length > self.limits.max_submission_bytes:
            raise LimitExceededError("submission", self.limits.max_submission_bytes)
        if unfinished >= self.limits.max_resumable_uploads_per_session:
            raise BusyError("this session has as many unfinished uploads as it may")
        if len(self._uploads) < self.limits.max_resumable_uploads:
            return
        idle = [u for u in self._uploads.values()
                if now - u.active >= EVICT_IDLE_SECONDS and not u.lock.locked() and not u.claimed]
        if not idle:
            raise BusyError("too many resumable uploads open")
        oldest = min(idle, key=lambda u: u.active)
        writer = self._drop(oldest)
        if writer is not None:
            self._aborting.add(task := asyncio.get_running_loop().create_task(writer.abort()))
            task.add_done_callback(self._aborting.discard)

    async def acquire(self, upload: Upload, holder: Preemptible) -> None:
        """Exclusive use of `upload` for one request, until `release`. A request already holding
        it is from a connection the client has left (it never sends two at once): that
        connection is closed, and this request waits for it to let go. Raises LookupError if the
        upload went meanwhile, TimeoutError if the other request did not let go in time."""
        if upload.holder is not None:
            upload.holder.force_close()
        async with asyncio.timeout(HOLD_WAIT_SECONDS):
            await upload.lock.acquire()
        if upload.gone:
            upload.lock.release()
            raise LookupError("the upload is gone")
        upload.holder = holder
        self._uploads.move_to_end(upload.id)

    def release(self, upload: Upload) -> None:
        upload.holder = None
        upload.lock.release()

    async def discard(self, upload: Upload) -> None:
        """Forget the upload and delete its ciphertext (termination, failure, expiry)."""
        writer = self._drop(upload)
        if writer is not None:
            await writer.abort()

    def _drop(self, upload: Upload) -> Writer | None:
        """Forget the upload at once and delete its committed ciphertext, if any; returns the
        writer of an unfinished one, whose `abort()` deletes its temporary file."""
        upload.gone = True
        self._uploads.pop(upload.id, None)
        if upload.finished is not None and not upload.claimed:
            self.store.delete(upload.finished.stored.name)
        writer, upload.writer, upload.encryptor = upload.writer, None, None
        return writer

    def claim(self, session_key: str, upload_ids: Sequence[str]) -> list[ReceivedFile]:
        """The finished uploads a submission names, reserved for it (UnknownUploadError if one
        is not a finished, unclaimed upload of this session)."""
        found: list[Upload] = []
        for upload_id in dict.fromkeys(upload_ids):
            upload = self.find(session_key, upload_id)
            if upload is None or upload.finished is None or upload.claimed:
                raise UnknownUploadError("a named upload is not a finished upload of yours")
            found.append(upload)
        for upload in found:
            upload.claimed = True
        return [u.finished for u in found if u.finished is not None]

    def claims(self, session_key: str) -> Claims:
        """`with uploads.claims(key) as claim:` for one submission (see Claims)."""
        return Claims(self, session_key)

    def settle(self, upload_ids: Sequence[str], submitted: bool) -> None:
        """After the submission: its files now belong to it (submitted), or back to the pool to
        be named again (it failed; nothing acknowledged may be lost)."""
        for upload_id in upload_ids:
            upload = self._uploads.get(upload_id)
            if upload is None:
                continue
            upload.claimed = False
            if submitted:
                upload.gone = True
                del self._uploads[upload_id]

    async def forget_session(self, session_key: str) -> None:
        """At logout: the session's uploads go with it (nobody could reach them any more)."""
        await self._discard_idle([u for u in self._uploads.values()
                                  if u.session_key == session_key])

    async def expire(self, now: float) -> int:
        """Delete every upload past its expiry that no request holds. Returns how many."""
        due = [u for u in self._uploads.values() if u.expires <= now]
        return await self._discard_idle(due)

    async def _discard_idle(self, uploads: list[Upload]) -> int:
        """Discard those of `uploads` that no request holds and no submission claims, checked
        one by one (a request may take one while an earlier one is being deleted)."""
        done = 0
        for upload in uploads:
            if not upload.lock.locked() and not upload.claimed and not upload.gone:
                await self.discard(upload)
                done += 1
        return done

    async def close(self) -> None:
        """At shutdown: every unfinished upload's temporary file goes now (its key goes with
        the process); finished, unsubmitted ones are swept as orphans at the next start."""
        for upload in list(self._uploads.values()):
            if upload.finished is None:
                await self.discard(upload)


class Claims:
    """The finished uploads one submission names: `claim(ids)` (Intake.receive calls it)
    reserves them; leaving the block gives them to the submission if `submitted` was set, else
    back to the pool, to be named again."""

    def __init__(self, uploads: ResumableUploads, session_key: str) -> None:
        self._uploads = uploads
        self._session_key = session_key
        self._ids: list[str] = []
        self.submitted = False

    def __call__(self, upload_ids: Sequence[str]) -> list[ReceivedFile]:
        files = self._uploads.claim(self._session_key, upload_ids)
        self._ids.extend(dict.fromkeys(upload_ids))
        return files

    def __enter__(self) -> Claims:
        return self

    def __exit__(self, *exc: object) -> None:
        self._uploads.settle(self._ids, self.submitted)

