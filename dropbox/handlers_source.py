"""The source's pages: landing, a new codename, submitting, returning with a codename, logout.

Each handler turns HTTP into a call on the session, the intake or the database and back; the work
itself lives in intake.py, sessions.py and db.py.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import db, handlers_tus, pages
from dropbox.i18n import N_, format_bytes
from dropbox.intake import (
    CsrfError,
    EmptySubmissionError,
    Intake,
    IntakeError,
    LimitExceededError,
    ReceivedSubmission,
    StalledError,
    expected_disk_bytes,
    store_submission,
)
from dropbox.load import answer_and_close
from dropbox.localnum import format_number
from dropbox.questionnaire import AnswersInvalidError, intake_check
from dropbox.security import PageError, error_page
from dropbox.sessions import CSRF_FIELD, Received, Session
from dropbox.store import DiskReserveError, Store
from keys.age import X25519Identity, decrypt
from keys.codename import (
    SourceKeys,
    generate_codename,
    group_codename,
    last_group,
    matches_last_group,
    normalize_codename,
    to_locale_digits,
)
from keys.errors import AgeError, BusyError, CodenameError
from keys.receipt import Receipt, ReceiptError, open_receipt, receipt_file, seal_receipt

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing)
    app.router.add_get("/start", start_page)
    app.router.add_post("/start", start_confirm)
    app.router.add_post("/start/new", start_new)
    app.router.add_get("/submit", submit_page)
    app.router.add_post("/submit", submit_post)
    app.router.add_get("/submitted", submitted_page)
    app.router.add_post("/reply/delete", reply_delete)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)


async def landing(request: web.Request) -> web.Response:
    return pages.render(request, "landing.html",
                        fingerprint=pages.state(request).keyring_file.fingerprint())


async def start_page(request: web.Request) -> web.Response:
    """The pending codename: the same on every reload, until the source asks for another or
    confirms it. It is kept nowhere on the server: a sealed cookie keeps it for reloads and the
    form's signed token carries it back (see form_tokens.py)."""
    app_state = pages.state(request)
    codename = app_state.pending.open(request.cookies.get(pages.PENDING_COOKIE))
    if codename is None:
        codename = normalize_codename(generate_codename())
        request[pages.SET_PENDING_KEY] = app_state.pending.seal(codename)
    return _start_form(request, codename, pages.form_token(request, bound=codename))


async def start_new(request: web.Request) -> web.Response:
    """The source asks for another codename (the one shown was not written down, or was seen)."""
    form = await _small_form(request)
    if pages.check_form_token(request, form.get(CSRF_FIELD)) is None:
        raise PageError(403)
    request[pages.SET_PENDING_KEY] = pages.state(request).pending.seal(generate_codename())
    return pages.redirect("/start")


async def start_confirm(request: web.Request) -> web.Response:
    """The source wrote the codename down and typed its last group: only now is the source
    record created."""
    form = await _small_form(request)
    token = form.get(CSRF_FIELD)
    proof = pages.check_form_token(request, token)
    if proof is None or not proof.bound:
        session = pages.current_session(request)
        if session is not None and session.logged_in:  # a second click, or an old page
            return pages.redirect("/submit")
        raise PageError(403)
    typed = form.get(CODENAME_CHECK_FIELD)
    if not matches_last_group(typed if isinstance(typed, str) else "", proof.bound):
        return _start_form(request, proof.bound, str(token), status=400, error=_WRONG_CHECK)
    try:
        keys = await _derive(request, proof.bound, proof.issued)
    except BusyError:  # nothing is lost: the same codename and form, to send again
        return _start_form(request, proof.bound, str(token), status=503, error=_BUSY)
    async with _writing(request) as dbs:
        # get_or_create: two clicks that both got through create one source, not an error
        source = await db.get_or_create_source(
            dbs, keys.lookup_id, str(keys.reply_identity.recipient()), _today())
    pages.log_in(request, source.id, keys, codename=proof.bound, epoch=source.session_epoch)
    request[pages.SET_PENDING_KEY] = ""  # confirmed: no longer pending in this browser
    return pages.redirect("/submit")


def _start_form(request: web.Request, codename: str, token: str, status: int = 200,
                error: str | None = None) -> web.Response:
    _ = pages.gettext(request)
    response = pages.render(request, "start.html", status=status, form_token=token,
                            new_token=pages.form_token(request),
                            check_digits=len(last_group(codename)),
                            error=_(error) if error else None,
                            **_codename_shown(request, codename))
    return _retry_later(response)


def _codename_shown(request: web.Request, codename: str) -> dict[str, str]:
    """The codename grouped for display, and again in the page's numerals if they differ."""
    grouped = group_codename(codename)
    local = to_locale_digits(grouped, pages.locale(request))
    return {"codename": grouped, "codename_local": local if local != grouped else ""}


async def submit_page(request: web.Request) -> web.Response:
    session = pages.current_session(request)
    if session is None or not session.logged_in:
        return pages.redirect("/login")
    return await _submit_form(request, session)


async def _submit_form(request: web.Request, session: Session,
                       invalid: AnswersInvalidError | None = None) -> web.Response:
    """The submit page; after a refused submission, with the errors and what was typed. Its
    script (resumable uploads) is optional: the form works the same without it."""
    request[pages.SCRIPTED_KEY] = True
    return pages.render(
        request, "submit.html", status=400 if invalid else 200,
        tus_endpoint=handlers_tus.endpoint(request),
        limits=_limits(request), replies=await _replies(request, session),
        received=await _received(request, session),
        shown_codename=_codename_shown(request, session.codename) if session.codename else None,
        submit_action=f"/submit?{urlencode({ONCE_PARAM: session.submits.issue()})}",
        questionnaire=pages.state(request).questionnaire,
        q_values=invalid.values if invalid else {}, q_errors=invalid.errors if invalid else {},
        q_files_dropped=bool(invalid and invalid.files_dropped))


async def submit_post(request: web.Request) -> web.Response:
    """POST, then 303 to the "received" page (a reload there sends nothing again). The form's
    single-use token makes a replayed or double-clicked POST land on the same page instead of
    creating a second submission; a POST without one (not from our page) gets a token of its
    own."""
    session = pages.current_session(request)
    if session is None:
        raise PageError(403)
    if not session.logged_in or session.source_id is None:
        return pages.redirect("/login")
    once = request.query.get(ONCE_PARAM)
    if once is None:
        once = session.submits.issue()
    elif not session.submits.TOKEN.fullmatch(once):
        raise PageError(400)
    try:
        already = await session.submits.wait(once, _body_timeout(request))
    except TimeoutError:
        raise PageError(503) from None
    if already is not None:  # sent before: do not read it again
        return await answer_and_close(request, _received_redirect(once))
    with session.submits.running(once):
        _refuse_early(request)
        try:
            with pages.state(request).uploads.take(session.key):
                return await _receive(request, session, session.source_id, once)
        except BusyError:  # shed under load: do not linger reading the refused body
            return await answer_and_close(request, error_page(request, PageError(503)))


async def _receive(request: web.Request, session: Session, source_id: str,
                   once: str) -> web.Response:
    """Stream the submission into the store, then record it: on to the page that says it
    arrived."""
    app_state = pages.state(request)
    intake = Intake(app_state.store, app_state.keyring.active_recipients(),
                    app_state.config.limits, session.check_csrf,
                    app_state.config.server.body_idle_timeout_seconds)
    code = pages.locale(request)
    check = intake_check(app_state.questionnaire, code, pages.gettext(request))
    with app_state.resumable.claims(session.key) as claim:  # finished resumable uploads
        try:
            received = await intake.receive(await request.multipart(), _today(),
                                            extra={"locale": code}, check=check, claim=claim)
        except AnswersInvalidError as invalid:  # nothing was kept; ask again, keeping answers
            return await _submit_form(request, session, invalid)
        except IntakeError as error:
            raise _intake_page_error(request, error) from None
        except DiskReserveError:
            raise PageError(507) from None
        except (ValueError, HttpProcessingError):  # aiohttp's multipart parser: a bad body
            raise PageError(400) from None
        receipt = _seal_receipt(session, received)
        created: list[str] = []

        async def record(submission: ReceivedSubmission) -> None:
            async with _writing(request) as dbs:
                created.append(await db.add_submission(dbs, source_id, submission.ciphertexts(),
                                                       submission.day, receipt))

        await store_submission(received, app_state.store, record)  # BusyError: 503 below
        claim.submitted = True
    session.submits.record(once, Received(created[0], len(received.files),
                                          received.message is not None))
    return _received_redirect(once)


def _seal_receipt(session: Session, received: ReceivedSubmission) -> bytes | None:
    """What arrived, sealed with the source's receipt key (only the codename opens it)."""
    if session.receipt_key is None:
        return None
    files = tuple(receipt_file(f.filename, f.size, f.sha256) for f in received.files)
    return seal_receipt(session.receipt_key, Receipt(received.message is not None, files))


def _received_redirect(once: str) -> web.Response:
    return pages.redirect(f"/submitted?{urlencode({ONCE_PARAM: once})}")


async def submitted_page(request: web.Request) -> web.Response:
    """What one submit form brought (by GET: a reload sends nothing). Without a token of this
    session (a language link, another session's link), the session's latest; else the submit
    page, which lists everything that arrived."""
    session = pages.current_session(request)
    if session is None or not session.logged_in:
        return pages.redirect("/login")
    shown = session.submits.done(request.query.get(ONCE_PARAM))
    if shown is None:
        return pages.redirect("/submit")
    return pages.render(request, "submitted.html", file_count=shown.files,
                        has_message=shown.message)


async def reply_delete(request: web.Request) -> web.Response:
    """The source deletes a reply: its row and its ciphertext go; its author learns that it was
    deleted, not when. Another source's reply id and an unknown one change nothing and get the
    same answer."""
    form = await _small_form(request)
    session = pages.current_session(request)
    token = form.get(CSRF_FIELD)
    if session is None or not isinstance(token, str) or not session.check_csrf(token):
        raise PageError(403)
    if not session.logged_in or session.source_id is None:
        return pages.redirect("/login")
    reply_id = form.get("reply_id")
    if not isinstance(reply_id, str) or not _REPLY_ID.fullmatch(reply_id):
        raise PageError(400)
    async with _writing(request) as dbs:
        name = await db.delete_reply(dbs, session.source_id, reply_id)
    if name is not None:
        store = pages.state(request).store
        await asyncio.to_thread(store.delete, name)
        async with db.write_turn(_maker(request)), _db(request) as dbs:
            # its copies too (and its chunks' when the ciphertext lives in the database)
            await db.truncate_journal(dbs, tables=[db.Reply.__tablename__, *store.tables])
    return pages.redirect("/submit")


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, pages.form_token(request))


async def login_post(request: web.Request) -> web.Response:
    """A malformed codename is answered at once; a well-formed one waits its turn for Argon2id."""
    form = await _small_form(request)
    token = form.get(CSRF_FIELD)
    proof = pages.check_form_token(request, token)
    if proof is None:
        raise PageError(403)
    typed = form.get("codename")
    try:
        normalize_codename(typed if isinstance(typed, str) else "")
        keys = await _derive(request, str(typed), proof.issued)
    except CodenameError:
        return _login_error(request, N_("That is not a codename. A codename has 20 digits "
                                        "(older ones have 16) or 7 words. Please check it and "
                                        "try again."))
    except BusyError:  # the same form again, so its age still counts
        return _login_form(request, str(token), status=503, error=_BUSY)
    async with _db(request) as dbs:
        source = await db.get_source_by_lookup(dbs, keys.lookup_id)
    if source is None:
        return _login_error(request, N_("No testimony was found for that codename. Please "
                                        "check it and try again."))
    pages.log_in(request, source.id, keys, epoch=source.session_epoch)
    return pages.redirect("/submit")


async def logout(request: web.Request) -> web.Response:
    """The session ends; on a cluster node, every session of this source on every node too (a
    new session epoch: the sealed cookies of before no longer open anywhere)."""
    form = await _small_form(request)
    session = pages.current_session(request)
    token = form.get(CSRF_FIELD)
    if session is None or not isinstance(token, str) or not session.check_csrf(token):
        raise PageError(403)
    if pages.state(request).sealed is not None and session.source_id is not None:
        async with _writing(request) as dbs:
            await db.renew_session_epoch(dbs, session.source_id)
    pages.end_session(request, session)
    await pages.state(request).resumable.forget_session(session.key)
    return pages.redirect("/")


# --- helpers ----------------------------------------------------------------------------------

_BUSY = N_("This drop is busy right now. Please wait a minute and try again.")
_WRONG_CHECK = N_("That is not the last group of your codename. Please look at the codename "
                  "again, check what you wrote down, and type its last group.")
CODENAME_CHECK_FIELD = "codename_check"
ONCE_PARAM = "once"
_REPLY_ID = re.compile(r"[0-9a-f]{32}")
RETRY_AFTER_SECONDS = 60


async def _small_form(request: web.Request) -> Form:
    """A small urlencoded form (login, confirm, logout). Anything else (multipart above all) is
    refused before aiohttp could spool it to disk."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise PageError(400)
    try:  # at most SMALL_FORM_BYTES: the whole body within one idle deadline
        async with asyncio.timeout(pages.state(request).config.server.body_idle_timeout_seconds):
            return await request.post()
    except TimeoutError:
        raise PageError(408) from None


async def _derive(request: web.Request, codename: str, form_issued: float) -> SourceKeys:
    """One Argon2id run for a well-formed codename: limited per visitor (429), then in line
    (BusyError when the line is full), proven forms first."""
    app_state = pages.state(request)
    now = pages.now()
    if not app_state.limiter.allow(pages.client_key(request), now):
        raise PageError(429)
    rank = app_state.deriver.rank(form_issued, now)
    return await app_state.deriver.derive(codename, rank, lambda: _connected(request))


def _connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _login_form(request: web.Request, token: str, status: int = 200,
                error: str | None = None) -> web.Response:
    _ = pages.gettext(request)
    response = pages.render(request, "login.html", status=status, form_token=token,
                            error=_(error) if error else None)
    return _retry_later(response)


def _login_error(request: web.Request, message: str) -> web.Response:
    return _login_form(request, pages.form_token(request), status=400, error=message)


def _retry_later(response: web.Response) -> web.Response:
    if response.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _refuse_early(request: web.Request) -> None:
    """Refuse before reading when Content-Length already tells the answer."""
    length = request.content_length
    app_state = pages.state(request)
    if request.content_type != "multipart/form-data":
        raise PageError(400)
    if length is None:
        return
    if length > app_state.config.limits.max_submission_bytes + 1024 * 1024:
        raise PageError(413)
    try:
        app_state.store.ensure_room(expected_disk_bytes(length))
    except DiskReserveError:
        raise PageError(507) from None
    except (ValueError, HttpProcessingError):  # aiohttp's multipart parser: a malformed body
        raise PageError(400) from None


def _intake_page_error(request: web.Request, error: IntakeError) -> PageError:
    _ = pages.gettext(request)
    code = pages.locale(request)
    if isinstance(error, CsrfError):
        return PageError(403)
    if isinstance(error, StalledError):
        return PageError(408)
    if isinstance(error, LimitExceededError):
        detail = _(LIMIT_MESSAGES.get(error.what, LIMIT_MESSAGES["submission"])) % {
            "limit": format_bytes(error.limit, code) if error.what not in ("files", "fields")
            else format_number(error.limit, code)}
        return PageError(413, detail=detail)
    if isinstance(error, EmptySubmissionError):
        return PageError(400, title=N_("Nothing to send"),
                         detail=N_("Please write a message or choose at least one file."))
    return PageError(400)


LIMIT_MESSAGES = {
    "file": N_("A file is larger than %(limit)s, the most this drop accepts for one file. "
               "Nothing was kept. Please go back and send smaller files."),
    "submission": N_("Everything together is larger than %(limit)s, the most this drop accepts "
                     "at once. Nothing was kept. Please send fewer files at a time."),
    "message": N_("The message is longer than %(limit)s. Nothing was kept. Please shorten it "
                  "or send it as a file."),
    "files": N_("You can send at most %(limit)s files at once. Nothing was kept."),
    "field": N_("An answer is longer than %(limit)s. Nothing was kept."),
    "fields": N_("The form has more than %(limit)s answers. Nothing was kept."),
}


def _limits(request: web.Request) -> dict[str, str]:
    limits = pages.state(request).config.limits
    code = pages.locale(request)
    return {
        "file": format_bytes(limits.max_file_bytes, code),
        "submission": format_bytes(limits.max_submission_bytes, code),
        "files": format_number(limits.max_files, code),
    }


async def _replies(request: web.Request, session: Session) -> list[dict[str, str | None]]:
    """The source's replies, decrypted in memory for this page only."""
    identity = session.reply_identity
    if session.source_id is None or identity is None:
        return []
    app_state = pages.state(request)
    async with _db(request) as dbs:
        rows = await db.replies_for(dbs, session.source_id)
    shown: list[dict[str, str | None]] = []
    for row in rows:
        text = await asyncio.to_thread(_read_reply, app_state.store, row.name, identity)
        shown.append({"id": row.id, "day": row.day, "text": text})
    return shown


async def _received(request: web.Request, session: Session) -> list[dict[str, Any]]:
    """What arrived from this source and is still on the server: per submission its day and,
    from the sealed receipt, per file its name, size and the first digits of its SHA-256."""
    if session.source_id is None:
        return []
    async with _db(request) as dbs:
        rows = await db.source_submissions(dbs, session.source_id)
    code = pages.locale(request)
    shown: list[dict[str, Any]] = []
    for _id, day, sealed in rows:
        receipt = _open_receipt(session, sealed)
        files = [{"name": _break_points(f.name), "size": format_bytes(f.size, code),
                  "sha256": f.sha256_prefix} for f in receipt.files] if receipt else []
        shown.append({"day": day, "known": receipt is not None, "files": files,
                      "message": bool(receipt and receipt.message)})
    return shown


def _break_points(name: str, longest: int = 16) -> list[str]:
    """A file name in pieces the page joins with <wbr>: a long name without spaces must wrap
    within 320 px even before (or without) the stylesheet. Breaks after separators, and inside
    any run longer than `longest` characters."""
    pieces = [piece for piece in re.split(r"(?<=[_\-.,;)\]])", name) if piece]
    return [piece[i:i + longest] for piece in pieces for i in range(0, len(piece), longest)]


def _open_receipt(session: Session, sealed: bytes | None) -> Receipt | None:
    if sealed is None or session.receipt_key is None:
        return None
    try:
        return open_receipt(session.receipt_key, sealed)
    except ReceiptError:
        return None


def _read_reply(store: Store, name: str, identity: X25519Identity) -> str | None:
    """The reply's text; None if it cannot be opened (damaged, or not for this codename)."""
    try:
        with store.open(name) as reply:  # through the store: the file's access time stays put
            return decrypt(reply.read(), [identity]).decode("utf-8", "replace")
    except (AgeError, OSError):
        return None


def _maker(request: web.Request) -> async_sessionmaker[AsyncSession]:
    maker = pages.state(request).db
    if maker is None:
        raise PageError(500)
    return maker


def _db(request: web.Request) -> AsyncSession:
    return _maker(request)()


def _writing(request: web.Request) -> AbstractAsyncContextManager[AsyncSession]:
    """A write transaction, in turn with this process's other writes (db.writing)."""
    return db.writing(_maker(request))


def _body_timeout(request: web.Request) -> float:
    return pages.state(request).config.server.body_idle_timeout_seconds


def _today() -> str:
    return datetime.now(UTC).date().isoformat()
