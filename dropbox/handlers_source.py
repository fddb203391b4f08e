"""The source's pages: landing, a new codename, submitting, returning with a codename, logout.

Each handler turns HTTP into a call on the session, the intake or the database and back; the work
itself lives in intake.py, sessions.py and db.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from sqlalchemy.ext.asyncio import AsyncSession

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
from dropbox.sessions import COOKIE_NAME, CSRF_FIELD, Session
from dropbox.store import CiphertextStore, DiskReserveError
from keys.age import X25519Identity, decrypt
from keys.codename import (
    SourceKeys,
    generate_codename,
    group_codename,
    normalize_codename,
    to_locale_digits,
)
from keys.errors import AgeError, BusyError, CodenameError

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
                        fingerprint=pages.state(request).keyring_file.fingerprint())


async def start_page(request: web.Request) -> web.Response:
    """A fresh codename every time this page loads; it is shown here once and never again. It is
    kept nowhere on the server: the form's signed token carries it back (see form_tokens.py)."""
    codename = normalize_codename(generate_codename())
    return _start_form(request, codename, pages.form_token(request, bound=codename))


async def start_confirm(request: web.Request) -> web.Response:
    """The source wrote the codename down: only now is the source record created."""
    form = await _small_form(request)
    token = form.get(CSRF_FIELD)
    proof = pages.check_form_token(request, token)
    if proof is None or not proof.bound:
        session = pages.current_session(request)
        if session is not None and session.logged_in:  # a second click, or an old page
            return pages.redirect("/submit")
        raise PageError(403)
    try:
        keys = await _derive(request, proof.bound, proof.issued)
    except BusyError:  # nothing is lost: the same codename and form, to send again
        return _start_form(request, proof.bound, str(token), status=503, error=_BUSY)
    async with _db(request) as dbs, dbs.begin():
        # get_or_create: two clicks that both got through create one source, not an error
        source = await db.get_or_create_source(
            dbs, keys.lookup_id, str(keys.reply_identity.recipient()), _today())
    pages.log_in(request, source.id, keys.reply_identity)
    return pages.redirect("/submit")


def _start_form(request: web.Request, codename: str, token: str, status: int = 200,
                error: str | None = None) -> web.Response:
    grouped = group_codename(codename)
    local = to_locale_digits(grouped, pages.locale(request))
    _ = pages.gettext(request)
    response = pages.render(request, "start.html", status=status, form_token=token,
                            codename=grouped, codename_local=local if local != grouped else "",
                            error=_(error) if error else None)
    return _retry_later(response)


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
        questionnaire=pages.state(request).questionnaire,
        q_values=invalid.values if invalid else {}, q_errors=invalid.errors if invalid else {},
        q_files_dropped=bool(invalid and invalid.files_dropped))


async def submit_post(request: web.Request) -> web.Response:
    session = pages.current_session(request)
    if session is None:
        raise PageError(403)
    if not session.logged_in or session.source_id is None:
        return pages.redirect("/login")
    _refuse_early(request)
    try:
        with pages.state(request).uploads.take(session.key):
            return await _receive(request, session, session.source_id)
    except BusyError:  # shed under load: do not linger reading the refused body
        return await answer_and_close(request, error_page(request, PageError(503)))


async def _receive(request: web.Request, session: Session, source_id: str) -> web.Response:
    """Stream the submission into the store, then record it: the page that says it arrived."""
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

        async def record(submission: ReceivedSubmission) -> None:
            async with _db(request) as dbs, dbs.begin():
                await db.add_submission(dbs, source_id, submission.ciphertexts(),
                                        submission.day)

        await store_submission(received, app_state.store, record)
        claim.submitted = True
    return pages.render(request, "submitted.html", file_count=len(received.files),
                        has_message=received.message is not None)


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
    pages.log_in(request, source.id, keys.reply_identity)
    return pages.redirect("/submit")


async def logout(request: web.Request) -> web.Response:
    form = await _small_form(request)
    session = pages.current_session(request)
    token = form.get(CSRF_FIELD)
    if session is None or not isinstance(token, str) or not session.check_csrf(token):
        raise PageError(403)
    pages.state(request).sessions.drop(session.key)
    await pages.state(request).resumable.forget_session(session.key)
    response = pages.redirect("/")
    response.del_cookie(COOKIE_NAME, path="/")
    return response


# --- helpers ----------------------------------------------------------------------------------

_BUSY = N_("This drop is busy right now. Please wait a minute and try again.")
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
        shown.append({"day": row.day, "text": text})
    return shown


def _read_reply(store: CiphertextStore, name: str, identity: X25519Identity) -> str | None:
    """The reply's text; None if it cannot be opened (damaged, or not for this codename)."""
    try:
        with store.open(name) as reply:  # through the store: the file's access time stays put
            return decrypt(reply.read(), [identity]).decode("utf-8", "replace")
    except (AgeError, OSError):
        return None


def _db(request: web.Request) -> AsyncSession:
    maker = pages.state(request).db
    if maker is None:
        raise PageError(500)
    return maker()


def _today() -> str:
    return datetime.now(UTC).date().isoformat()
