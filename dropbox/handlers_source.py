"""The source's pages: landing, a new codename, submitting, returning with a codename, logout.

Each handler turns HTTP into a call on the session, the intake or the database and back; the work
itself lives in intake.py, sessions.py and db.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from sqlalchemy.ext.asyncio import AsyncSession

from dropbox import db, pages
from dropbox.i18n import N_, format_bytes
from dropbox.intake import (
    CsrfError,
    EmptySubmissionError,
    Intake,
    IntakeError,
    LimitExceededError,
    ReceivedSubmission,
    store_submission,
)
from dropbox.localnum import format_number
from dropbox.questionnaire import AnswersInvalidError, intake_check
from dropbox.security import PageError
from dropbox.sessions import COOKIE_NAME, CSRF_FIELD, Session
from dropbox.store import DiskReserveError
from keys.age import X25519Identity, decrypt
from keys.codename import SourceKeys, generate_codename, group_codename, to_locale_digits
from keys.errors import AgeError, CodenameError


def expected_disk_bytes(content_length: int) -> int:
    """A bound on what a body of `content_length` bytes takes in the store: age adds 16 bytes per
    64 KiB chunk (1/4096) and a header of about 200 bytes per part; the manifest is small."""
    return content_length + content_length // 1024 + 1024 * 1024
Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing)
    app.router.add_get("/start", start_page)
    app.router.add_post("/start", start_confirm)
    app.router.add_get("/submit", submit_page)
    app.router.add_post("/submit", submit_post)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)


async def landing(request: web.Request) -> web.Response:
    return pages.render(request, "landing.html",
                        fingerprint=pages.state(request).keyring.fingerprint())


async def start_page(request: web.Request) -> web.Response:
    """A fresh codename every time this page loads; it is shown here once and never again."""
    session = pages.ensure_session(request)
    session.pending_codename = generate_codename()
    context = _codename_context(request, session)
    return pages.render(request, "start.html", csrf=True, codename=context["codename"],
                        codename_local=context["codename_local"])


async def start_confirm(request: web.Request) -> web.Response:
    """The source wrote the codename down: only now is the source record created."""
    session, _form = await _checked_form(request)
    codename = session.pending_codename
    if codename is None:  # a second click on the button, or a page from an old session
        return pages.redirect("/submit" if session.logged_in else "/start")
    keys = await _derive(request, session, codename)
    async with _db(request) as dbs, dbs.begin():
        source = await db.create_source(dbs, keys.lookup_id, str(keys.reply_identity.recipient()),
                                        _today())
    pages.log_in(request, session, source.id, keys.reply_identity)
    return pages.redirect("/submit")


async def submit_page(request: web.Request) -> web.Response:
    session = pages.current_session(request)
    if session is None or not session.logged_in:
        return pages.redirect("/login")
    return await _submit_form(request, session)


async def _submit_form(request: web.Request, session: Session,
                       invalid: AnswersInvalidError | None = None) -> web.Response:
    """The submit page; after a refused submission, with the errors and what was typed."""
    return pages.render(
        request, "submit.html", status=400 if invalid else 200, csrf=True,
        limits=_limits(request), replies=await _replies(request, session),
        questionnaire=pages.state(request).questionnaire,
        q_values=invalid.values if invalid else {}, q_errors=invalid.errors if invalid else {},
        q_files_dropped=bool(invalid and invalid.files_dropped))


async def submit_post(request: web.Request) -> web.Response:
    session = pages.current_session(request)
    if session is None:
        raise PageError(403)
    if not session.logged_in or session.source_id is None:
        return pages.redirect("/login")
    source_id = session.source_id
    _refuse_early(request)
    app_state = pages.state(request)
    intake = Intake(app_state.store, app_state.keyring.active_recipients(),
                    app_state.config.limits, session.check_csrf)
    code = pages.locale(request)
    check = intake_check(app_state.questionnaire, code, pages.gettext(request))
    try:
        received = await intake.receive(await request.multipart(), _today(),
                                        extra={"locale": code}, check=check)
    except AnswersInvalidError as invalid:  # nothing was kept; ask again, keeping the answers
        return await _submit_form(request, session, invalid)
    except IntakeError as error:
        raise _intake_page_error(request, error) from None
    except DiskReserveError:
        raise PageError(507) from None
    except (ValueError, HttpProcessingError):  # aiohttp's multipart parser: a malformed body
        raise PageError(400) from None

    async def record(submission: ReceivedSubmission) -> None:
        async with _db(request) as dbs, dbs.begin():
            await db.add_submission(dbs, source_id, submission.ciphertexts(), submission.day)

    await store_submission(received, app_state.store, record)
    return pages.render(request, "submitted.html", file_count=len(received.files),
                        has_message=received.message is not None)


async def login_page(request: web.Request) -> web.Response:
    return pages.render(request, "login.html", csrf=True, error=None)


async def login_post(request: web.Request) -> web.Response:
    session, form = await _checked_form(request)
    typed = form.get("codename")
    try:
        keys = await _derive(request, session, typed if isinstance(typed, str) else "")
    except CodenameError:
        return _login_error(request, N_("That is not a codename. A codename has 16 digits "
                                        "(or 7 words). Please check it and try again."))
    async with _db(request) as dbs:
        source = await db.get_source_by_lookup(dbs, keys.lookup_id)
    if source is None:
        return _login_error(request, N_("No testimony was found for that codename. Please "
                                        "check it and try again."))
    pages.log_in(request, session, source.id, keys.reply_identity)
    return pages.redirect("/submit")


async def logout(request: web.Request) -> web.Response:
    session, _form = await _checked_form(request)
    pages.state(request).sessions.drop(session.key)
    response = pages.redirect("/")
    response.del_cookie(COOKIE_NAME, path="/")
    return response


# --- helpers ----------------------------------------------------------------------------------


async def _checked_form(request: web.Request) -> tuple[Session, Form]:
    """The session of a small urlencoded form whose CSRF token matches (403 otherwise).
    Anything else (multipart above all) is refused before aiohttp could spool it to disk."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise PageError(400)
    form = await request.post()
    session = pages.current_session(request)
    token = form.get(CSRF_FIELD)
    if session is None or not isinstance(token, str) or not session.check_csrf(token):
        raise PageError(403)
    return session, form


async def _derive(request: web.Request, session: Session, codename: str) -> SourceKeys:
    app_state = pages.state(request)
    if not app_state.limiter.allow(session, pages.now()):
        raise PageError(429)
    return await app_state.deriver.derive(codename)


def _login_error(request: web.Request, message: str) -> web.Response:
    _ = pages.gettext(request)
    return pages.render(request, "login.html", status=400, csrf=True, error=_(message))


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


def _codename_context(request: web.Request, session: Session) -> dict[str, str]:
    grouped = group_codename(session.pending_codename or "")
    local = to_locale_digits(grouped, pages.locale(request))
    return {"codename": grouped, "codename_local": local if local != grouped else ""}


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
        text = await asyncio.to_thread(_read_reply, app_state.store.path(row.name), identity)
        shown.append({"day": row.day, "text": text})
    return shown


def _read_reply(path: Path, identity: X25519Identity) -> str | None:
    """The reply's text; None if it cannot be opened (damaged, or not for this codename)."""
    try:
        return decrypt(path.read_bytes(), [identity]).decode("utf-8", "replace")
    except (AgeError, OSError):
        return None


def _db(request: web.Request) -> AsyncSession:
    maker = pages.state(request).db
    if maker is None:
        raise PageError(500)
    return maker()


def _today() -> str:
    return datetime.now(UTC).date().isoformat()
