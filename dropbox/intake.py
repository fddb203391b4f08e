"""Streaming intake: a multipart submission goes straight into age encryption and the store.

Every byte a source sends is encrypted to every active investigator as it arrives, and only
ciphertext reaches the disk: the body is read part by part with aiohttp's `MultipartReader`
(never `request.post()`, which spools file fields to temporary files in plaintext). The SHA-256
of each plaintext is computed on the way, limits are enforced as the bytes arrive, and at the
end an encrypted manifest describes the submission (file names, types, sizes, hashes, the form's
answers) so that nothing about the content is visible to the server.

Nothing a hostile body sends is held whole or costs more than it brings: the message streams
into its own encryptor like a file (only its first `MESSAGE_ECHO_BYTES` stay in memory, for the
questionnaire's check and to show it again), every part counts against `max_files` or
`max_fields` before it is read, an encryptor and a store file exist only once a part has sent a
byte, and every read waits at most the body idle deadline (`StalledError`).

All or nothing: the ciphertexts are committed only after the whole body has been read, and
`store_submission` records them in the database only after they are durable. Any failure on the
way (over a limit, a dropped connection, a full disk, a cancelled task) deletes whatever this
submission wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, MultipartReader

from dropbox.config import LimitsConfig
from dropbox.db import Kind
from dropbox.sessions import CSRF_FIELD
from dropbox.store import Store, StoredFile, Writer
from keys.age import Encryptor, Recipient
from keys.errors import InputError
from keys.manifest import (
    INTAKE_FORMAT,
    MAX_FIELD_NAME_CHARS,
    MAX_FILENAME_CHARS,
    FileEntry,
    IntakeLimits,
    IntakeManifest,
    encode_intake_manifest,
    fit_content_type,
)
from keys.stream import CHUNK_SIZE

T = TypeVar("T")

MANIFEST_FORMAT = INTAKE_FORMAT
READ_CHUNK = 4 * CHUNK_SIZE
"""Plaintext read from the body at most: four age chunks (keys/stream.py), so a full read is
sealed as four chunks without a copy. A slow upload's reads return the few KB that came (this
size costs it nothing); a fast one's 64 KiB reads, each with its deadline, cost about 10% more
CPU per GiB (bench/bench_upload.py). aiohttp's multipart reader holds two reads."""
MESSAGE_FIELD = "message"
UPLOADS_FIELD = "uploads"
"""Hidden fields naming finished resumable uploads (dropbox/resumable.py) that join the form."""
MESSAGE_ECHO_BYTES = 64 * 1024
"""The message's first bytes kept in memory: enough to check it and show it again."""


class IntakeError(InputError):
    """A submission was refused because of what was sent. Never raised directly."""


class LimitExceededError(IntakeError):
    """Over a configured limit; `what` names it ("file", "submission", "files", "message",
    "field", "fields") and `limit` is its value."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"over the {what} limit of {limit}")
        self.what = what
        self.limit = limit


class CsrfError(IntakeError):
    """The form's CSRF token is missing or wrong (it must be the first field)."""


class MalformedFormError(IntakeError):
    """The body is not a form this page sends (nested multipart, bad text encoding, ...)."""


class StalledError(IntakeError):
    """The body sent nothing for longer than the idle deadline."""


class EmptySubmissionError(IntakeError):
    """Neither a message nor a file was sent."""


# Checks the form before anything is committed: (text fields incl. the message, file names by
# field) -> what the manifest records under "questionnaire"; raises to refuse the submission
# (dropbox.questionnaire.AnswersInvalidError), and then every streamed ciphertext is deleted.
AnswersCheck = Callable[[dict[str, list[str]], dict[str, list[str]]], Any]
# Reserves the finished resumable uploads a form names (their ids) for this submission; raises an
# IntakeError-like InputError for one that is not the session's (dropbox.resumable).
ClaimUploads = Callable[[Sequence[str]], "list[ReceivedFile]"]


@dataclass(frozen=True)
class ReceivedFile:
    """One stored plaintext part: what the manifest says about it, and its ciphertext."""

    field: str
    filename: str
    content_type: str
    size: int
    sha256: str
    stored: StoredFile
    resumable: bool = False  # uploaded before the form (dropbox/resumable.py): not ours to delete


@dataclass(frozen=True)
class ReceivedSubmission:
    """A submission whose ciphertexts are all durable in the store (not yet in the database)."""

    day: str
    message: ReceivedFile | None
    files: tuple[ReceivedFile, ...]
    manifest: StoredFile
    answers: dict[str, list[str]] = field(repr=False)

    def ciphertexts(self) -> list[tuple[Kind, StoredFile]]:
        """(kind, file) for every ciphertext, kinds as the `ciphertexts` table names them."""
        parts: list[tuple[Kind, StoredFile]] = (
            [("message", self.message.stored)] if self.message else []
        )
        parts += [("file", f.stored) for f in self.files]
        return [*parts, ("manifest", self.manifest)]


@dataclass
class _Budget:
    """Bytes still allowed for the whole submission."""

    limits: LimitsConfig
    total: int = 0
    files: int = 0
    fields: int = 0

    def spend(self, n: int) -> None:
        self.total += n
        if self.total > self.limits.max_submission_bytes:
            raise LimitExceededError("submission", self.limits.max_submission_bytes)


@dataclass
class _Open:
    """A part being written: its writer and what is known about it so far."""

    writer: Writer
    field: str
    filename: str
    content_type: str
    size: int = 0
    sha256: str = ""
    echo: bytearray | None = None  # the message's first MESSAGE_ECHO_BYTES, for `check`


class Intake:
    """Reads one multipart submission into the store. Create one per request."""

    def __init__(
        self,
        store: Store,
        recipients: Sequence[Recipient],
        limits: LimitsConfig,
        check_csrf: Callable[[str], bool],
        idle_timeout: float,
    ) -> None:
        if not recipients:
            raise IntakeError("the keyring has no active investigator to encrypt to")
        self.store = store
        self.recipients = list(recipients)
        self.limits = limits
        self.check_csrf = check_csrf
        self.idle_timeout = idle_timeout

    async def receive(
        self, reader: MultipartReader, day: str, extra: dict[str, Any] | None = None,
        check: AnswersCheck | None = None, claim: ClaimUploads | None = None,
    ) -> ReceivedSubmission:
        """Read the whole body, then commit every ciphertext; on any failure nothing is kept."""
        budget = _Budget(self.limits)
        answers: dict[str, list[str]] = {}
        async with AsyncExitStack() as stack:
            parts: list[_Open] = []
            await self._check_first_field(reader)
            while (part := await self._idle(reader.next())) is not None:
                if not isinstance(part, BodyPartReader):
                    raise MalformedFormError("nested multipart bodies are not accepted")
                self._count(part, budget)
                if part.filename is None and part.name != MESSAGE_FIELD:
                    await self._read_field(part, budget, answers)
                    continue
                if part.filename is None and any(p.field == MESSAGE_FIELD for p in parts):
                    raise MalformedFormError("the message field appears twice")
                opened = await self._stream_part(part, stack, budget)
                if opened is not None:
                    parts.append(opened)
            message = next((p for p in parts if p.field == MESSAGE_FIELD), None)
            files = [p for p in parts if p.field != MESSAGE_FIELD]
            uploaded = self._adopt(claim, answers.pop(UPLOADS_FIELD, []), budget)
            if message is None and not files and not uploaded:
                raise EmptySubmissionError("nothing to submit")
            extra = dict(extra or {})
            if check is not None:
                extra["questionnaire"] = _checked(check, answers, message,
                                                  _names([*files, *uploaded]))
            return await self._commit(day, message, files, uploaded, answers, extra)
        raise AssertionError("unreachable")  # pragma: no cover - AsyncExitStack re-raises

    async def _check_first_field(self, reader: MultipartReader) -> None:
        """The CSRF token comes first, so a forged request is refused before any upload."""
        part = await self._idle(reader.next())
        if not isinstance(part, BodyPartReader) or part.name != CSRF_FIELD:
            raise CsrfError("the form's first field must be its CSRF token")
        token = (await self._read_bounded(part, 512)).decode("ascii", errors="replace")
        if not self.check_csrf(token):
            raise CsrfError("the CSRF token does not match this session")

    def _adopt(self, claim: ClaimUploads | None, upload_ids: list[str],
               budget: _Budget) -> list[ReceivedFile]:
        """The finished resumable uploads the form names, counted against the same limits as
        the files it carries itself."""
        if not upload_ids:
            return []
        if claim is None:
            raise MalformedFormError("this form cannot name uploads")
        uploaded = claim(upload_ids)
        budget.files += len(uploaded)
        if budget.files > self.limits.max_files:
            raise LimitExceededError("files", self.limits.max_files)
        for item in uploaded:
            budget.spend(item.size)
        return uploaded

    def _count(self, part: BodyPartReader, budget: _Budget) -> None:
        """Every part counts before it is read, an empty one too: a body of 20,000 empty parts
        is refused at the first part over the limit, not parsed to its end."""
        if part.filename is not None:
            budget.files += 1
            if budget.files > self.limits.max_files:
                raise LimitExceededError("files", self.limits.max_files)
        else:
            budget.fields += 1
            if budget.fields > self.limits.max_fields:
                raise LimitExceededError("fields", self.limits.max_fields)

    async def _read_field(
        self, part: BodyPartReader, budget: _Budget, answers: dict[str, list[str]]
    ) -> None:
        raw = await self._read_bounded(part, self.limits.max_field_bytes)
        budget.spend(len(raw))
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFormError("a form field is not UTF-8 text") from None
        answers.setdefault((part.name or "")[:MAX_FIELD_NAME_CHARS], []).append(value)

    async def _stream_part(
        self, part: BodyPartReader, stack: AsyncExitStack, budget: _Budget
    ) -> _Open | None:
        """Encrypt one file or the message into a new writer; None for an empty message box or
        a file input left empty. The writer and the encryptor wait for the part's first byte."""
        is_message = part.filename is None
        limit = self.limits.max_message_bytes if is_message else self.limits.max_file_bytes
        chunk = await self._idle(part.read_chunk(READ_CHUNK))
        if not chunk and (is_message or not part.filename):
            return None
        opened = _Open(
            writer=await stack.enter_async_context(self.store.writer()),
            field=(part.name or "")[:MAX_FIELD_NAME_CHARS],
            filename=(part.filename or "")[:MAX_FILENAME_CHARS],
            content_type=fit_content_type(
                part.headers.get("Content-Type", "application/octet-stream")
            ),
            echo=bytearray() if is_message else None,
        )
        encryptor = Encryptor(self.recipients)
        await opened.writer.write(encryptor.header)
        digest = hashlib.sha256()
        while chunk:
            opened.size += len(chunk)
            if opened.size > limit:
                raise LimitExceededError("message" if is_message else "file", limit)
            budget.spend(len(chunk))
            digest.update(chunk)
            if opened.echo is not None and len(opened.echo) < MESSAGE_ECHO_BYTES:
                opened.echo += chunk[: MESSAGE_ECHO_BYTES - len(opened.echo)]
            await _write_sealed(opened.writer, encryptor.update(chunk))
            chunk = await self._idle(part.read_chunk(READ_CHUNK))
        await _write_sealed(opened.writer, encryptor.finalize())
        opened.sha256 = digest.hexdigest()
        return opened

    async def _read_bounded(self, part: BodyPartReader, limit: int) -> bytes:
        data = bytearray()
        while chunk := await self._idle(part.read_chunk(min(READ_CHUNK, limit + 1))):
            data += chunk
            if len(data) > limit:
                raise LimitExceededError("field", limit)
        return bytes(data)

    async def _idle(self, read: Awaitable[T]) -> T:
        """One read of the body, refused once it has waited longer than the idle deadline."""
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await read
        except TimeoutError:
            raise StalledError("the body sent nothing for too long") from None

    async def _commit(
        self,
        day: str,
        message: _Open | None,
        files: list[_Open],
        uploaded: list[ReceivedFile],
        answers: dict[str, list[str]],
        extra: dict[str, Any],
    ) -> ReceivedSubmission:
        committed: list[StoredFile] = []
        try:
            received = []
            for item in ([message] if message else []) + files:
                stored = await item.writer.commit()
                committed.append(stored)
                received.append(ReceivedFile(item.field, item.filename, item.content_type,
                                             item.size, item.sha256, stored))
            received += uploaded
            first_file = 1 if message else 0
            document = manifest(day, received[:first_file], received[first_file:], answers,
                                extra, intake_limits(self.limits))
            stored_manifest = await self._write_whole(document)
        except BaseException:
            for stored in committed:
                self.store.delete(stored.name)
            raise
        return ReceivedSubmission(
            day=day,
            message=received[0] if message else None,
            files=tuple(received[first_file:]),
            manifest=stored_manifest,
            answers=answers,
        )

    async def _write_whole(self, plaintext: bytes) -> StoredFile:
        encryptor = Encryptor(self.recipients)
        async with self.store.writer() as writer:
            await writer.write(encryptor.header)
            for chunk in [*encryptor.update(plaintext), *encryptor.finalize()]:
                await writer.write(chunk)
            return await writer.commit()


async def store_submission(
    received: ReceivedSubmission,
    store: Store,
    record: Callable[[ReceivedSubmission], Awaitable[None]],
) -> None:
    """Record durable ciphertexts in the database; if that fails, delete them (nothing was
    acknowledged yet, and an unreferenced ciphertext is only clutter)."""
    try:
        await record(received)
    except BaseException:
        keep = {f.stored.name for f in received.files if f.resumable}  # back to their uploads
        for _, stored in received.ciphertexts():
            if stored.name not in keep:
                store.delete(stored.name)
        raise


def expected_disk_bytes(content_length: int) -> int:
    """A bound on what a body (or a resumable upload) of `content_length` bytes takes in the
    store: age adds 16 bytes per 64 KiB chunk (1/4096) and a header of about 200 bytes per part;
    the manifest is small."""
    return content_length + content_length // 1024 + 1024 * 1024


def intake_limits(limits: LimitsConfig) -> IntakeLimits:
    """The limits a submission manifest is checked against (signed into transfer bundles)."""
    return IntakeLimits(
        max_message_bytes=limits.max_message_bytes,
        max_file_bytes=limits.max_file_bytes,
        max_files=limits.max_files,
        max_fields=limits.max_fields,
        max_field_bytes=limits.max_field_bytes,
    )


def manifest(
    day: str,
    message: Sequence[ReceivedFile],
    files: Sequence[ReceivedFile],
    answers: dict[str, list[str]],
    extra: dict[str, Any],
    limits: IntakeLimits,
) -> bytes:
    """The manifest's plaintext (keys/manifest.py): everything about a submission that the
    server must not see, encrypted like the rest. `extra` may add the page's `locale` and the
    checked `questionnaire` record."""
    document = IntakeManifest(
        received_day=day,
        message=_describe(message[0]) if message else None,
        files=tuple(_describe(f) for f in files),
        answers=answers,
        questionnaire=extra.get("questionnaire"),
        locale=extra.get("locale"),
    )
    return encode_intake_manifest(document, limits)


async def _write_sealed(writer: Writer, sealed: list[bytes]) -> None:
    """Hand sealed chunks to the writer. A function of its own: a loop variable in the caller
    would keep the last 64 KiB chunk alive until the part's next read, which for a slow upload
    is seconds (issue 15, memory per open upload)."""
    for chunk in sealed:
        await writer.write(chunk)


def _checked(check: AnswersCheck, answers: dict[str, list[str]], message: _Open | None,
             files: dict[str, list[str]]) -> Any:
    """Run `check` on the text fields plus the message's first bytes. A refusal shows the fields
    again; a message longer than what was kept is then left out rather than shown cut short (a
    source could send the shortened text without noticing)."""
    fields = {name: list(values) for name, values in answers.items()}
    if message is not None and message.echo is not None:
        fields[MESSAGE_FIELD] = [message.echo.decode("utf-8", errors="ignore" if
                                                     message.size > len(message.echo)
                                                     else "replace")]
    try:
        return check(fields, files)
    finally:  # the refusal holds `fields` itself (AnswersInvalidError.values)
        if message is not None and message.size > MESSAGE_ECHO_BYTES:
            fields.pop(MESSAGE_FIELD, None)


def _names(files: Sequence[_Open | ReceivedFile]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for item in files:
        names.setdefault(item.field, []).append(item.filename)
    return names


def _describe(item: ReceivedFile) -> FileEntry:
    return FileEntry(item.field, item.filename, item.content_type, item.size, item.sha256,
                     item.stored.name)
