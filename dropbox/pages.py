"""What every handler shares: the application state, the request's session and locale, and
rendering a localized page.

Kept apart from app.py so that handlers and middlewares can import it without importing the app
factory (which imports them).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import db, i18n
from dropbox.cluster import REFRESH_SECONDS, SealedSessions, SessionClaims
from dropbox.config import Config
from dropbox.form_tokens import (
    FormProof,
    FormTokens,
    PendingCodenames,
    new_client_key,
    valid_client_key,
)
from dropbox.load import UploadSlots
from dropbox.questionnaire import Questionnaire
from dropbox.resumable import ResumableUploads
from dropbox.server_keys import KeyringFile
from dropbox.sessions import (
    COOKIE_NAME,
    CSRF_FIELD,
    KeyDeriver,
    LoginLimiter,
    Session,
    SessionStore,
)
from dropbox.store import Store
from keys.codename import SourceKeys
from keys.errors import StorageError
from keys.keyring import Keyring

SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("amanat_session")
CLIENT_KEY: web.RequestKey[str] = web.RequestKey("amanat_client", str)
SET_COOKIE_KEY: web.RequestKey[str] = web.RequestKey("amanat_set_cookie", str)
LOCALE_KEY: web.RequestKey[str] = web.RequestKey("amanat_locale", str)
SET_LANG_KEY: web.RequestKey[str] = web.RequestKey("amanat_set_lang", str)
SET_PENDING_KEY: web.RequestKey[str] = web.RequestKey("amanat_set_pending", str)
SET_SEALED_KEY: web.RequestKey[str] = web.RequestKey("amanat_set_sealed", str)
SCRIPTED_KEY: web.RequestKey[bool] = web.RequestKey("amanat_scripted", bool)
"""Set by the one page that runs a script (submit): its CSP allows scripts from this origin."""
logger = logging.getLogger(__name__)
EPOCH_CHECK_SECONDS = 10.0
LANG_COOKIE = "amanat_lang"
PENDING_COOKIE = "amanat_codename"  # the sealed codename of the start page (form_tokens.py)
SEALED_COOKIE = "amanat_sealed"  # a cluster node's sealed session (cluster.py)


@dataclass
class AppState:
    """Everything the handlers need, built once by create_app (no global singletons)."""

    config: Config
    keyring_file: KeyringFile
    instance_salt: bytes
    store: Store
    sessions: SessionStore
    forms: FormTokens
    deriver: KeyDeriver
    limiter: LoginLimiter
    questionnaire: Questionnaire
    uploads: UploadSlots  # submissions being received, all sources and per session
    resumable: ResumableUploads  # tus uploads waiting for more bytes or for their submission
    db: async_sessionmaker[AsyncSession] | None = None  # set when the app starts
    pending: PendingCodenames = field(default_factory=PendingCodenames)
    sealed: SealedSessions | None = None  # on the nodes of a cluster (cluster.py)

    @property
    def keyring(self) -> Keyring:
        """The keyring in force now (a signed revocation applies without a restart)."""
        return self.keyring_file.current()


STATE: web.AppKey[AppState] = web.AppKey("amanat_state", AppState)


def state(request: web.Request) -> AppState:
    return request.app[STATE]


def now() -> float:
    return time.monotonic()


def current_session(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)


def client_key(request: web.Request) -> str:
    """The visitor's cookie value (a logged-in session's key, or a random value that names an
    anonymous visitor and is stored nowhere); a new one is set on the response if there is none.
    The value is never chosen by the visitor: an unknown shape is replaced."""
    key = request.get(CLIENT_KEY)
    if key is None:
        cookie = request.cookies.get(COOKIE_NAME)
        key = cookie if valid_client_key(cookie) else new_client_key()
        if key != cookie:
            request[SET_COOKIE_KEY] = key
        request[CLIENT_KEY] = key
    return key


def form_token(request: web.Request, bound: str = "") -> str:
    """A signed token for a form of an anonymous page (login, start), bound to this visitor."""
    return state(request).forms.issue(client_key(request), now(), bound)


def check_form_token(request: web.Request, token: object) -> FormProof | None:
    """What a posted form token proves, or None if it is not this visitor's or has expired."""
    if not isinstance(token, str):
        return None
    return state(request).forms.check(token, request.cookies.get(COOKIE_NAME), now())


def log_in(request: web.Request, source_id: str, keys: SourceKeys,
           codename: str | None = None, epoch: str = "") -> Session:
    """A new logged-in session under a fresh cookie value and CSRF token (a value or token known
    before login is useless after it); the visitor's previous session, if any, ends. `codename`
    only when it was issued in this session (it can then be shown again); `epoch` is the
    source's session epoch (db.py), for a cluster node's sealed cookie."""
    sessions = state(request).sessions
    previous = current_session(request)
    if previous is not None:
        sessions.drop(previous.key)
    session = sessions.create(now())
    session.log_in(source_id, keys, codename)
    session.epoch = epoch
    request[SESSION_KEY] = session
    request[CLIENT_KEY] = request[SET_COOKIE_KEY] = session.key
    seal_session(request, session)
    return session


def seal_session(request: web.Request, session: Session) -> None:
    """On a cluster node: the session sealed into its cookie, with this moment as its last use
    (nothing to do on a single node)."""
    sealed = state(request).sealed
    if sealed is None or session.source_id is None or session.reply_identity is None \
            or session.receipt_key is None:
        return
    claims = SessionClaims(session.key, session.source_id, session.epoch, session.csrf_token,
                           session.reply_identity, session.receipt_key, session.codename)
    request[SET_SEALED_KEY] = sealed.seal(claims, now())


def end_session(request: web.Request, session: Session) -> None:
    """Logout: the session out of this node's memory and its cookies deleted (the caller
    renews the source's session epoch on a cluster node, which ends it on every other)."""
    state(request).sessions.drop(session.key)
    request[SET_COOKIE_KEY] = ""
    if state(request).sealed is not None:
        request[SET_SEALED_KEY] = ""


async def open_sealed_session(request: web.Request, sealed: SealedSessions) -> Session | None:
    """On a cluster node: the session sealed in the request's cookie, if it opens, is this
    visitor's, was used within the idle timeout and its source has not logged out since (on
    any node); kept in this node's store meanwhile, and resealed when its time grows old."""
    app_state = state(request)
    key = request.cookies.get(COOKIE_NAME)
    opened = sealed.open(request.cookies.get(SEALED_COOKIE), key, now())
    if opened is None:
        if valid_client_key(key):
            app_state.sessions.drop(key)
        return None
    claims, age = opened
    holds = await _epoch_holds(app_state, claims)
    if holds is None:  # the database cannot tell now: not logged in for this request only
        return None
    if not holds:
        app_state.sessions.drop(claims.key)
        request[SET_SEALED_KEY] = ""
        return None
    session = app_state.sessions.get(claims.key, now()) or app_state.sessions.create(
        now(), claims.key)
    session.source_id, session.epoch = claims.source_id, claims.epoch
    session.reply_identity, session.receipt_key = claims.reply_identity, claims.receipt_key
    session.codename, session.csrf_token = claims.codename, claims.csrf_token
    if age >= REFRESH_SECONDS:
        seal_session(request, session)
    return session


async def _epoch_holds(app_state: AppState, claims: SessionClaims) -> bool | None:
    """Whether the source still has the session epoch of the sealed session (no logout since);
    None when the database cannot tell within the deadline."""
    if app_state.db is None:
        return None
    try:
        async with asyncio.timeout(EPOCH_CHECK_SECONDS), app_state.db() as dbs:
            epoch = await db.session_epoch(dbs, claims.source_id)
    except (TimeoutError, StorageError, OSError) as exc:
        logger.error("session check failed: %s", type(exc).__name__)
        return None
    return epoch is not None and hmac.compare_digest(epoch, claims.epoch)


def locale(request: web.Request) -> str:
    return request.get(LOCALE_KEY) or state(request).config.i18n.default_locale


def gettext(request: web.Request) -> Any:
    """The request's `_()` for text built in Python."""
    return i18n.translator(locale(request))


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """Render a page in the request's locale. The forms of logged-in pages (submit, logout) carry
    the session's CSRF token; anonymous forms pass their own `form_token`."""
    code = locale(request)
    config = state(request).config
    session = current_session(request)
    html = i18n.environment(code).get_template(template).render(
        locale=i18n.locale_info(code),
        locales=i18n.all_locales(),
        language_links=_language_links(request),
        csrf_field=CSRF_FIELD,
        csrf_token=session.csrf_token if session else "",
        logged_in=bool(session and session.logged_in),
        instance_name=config.server.instance_name.text(code),
        instance_description=config.server.instance_description.text(code),
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str) -> web.Response:
    """A 303 See Other (a POST followed by a GET), without raising."""
    return web.Response(status=303, headers={"Location": location})


def set_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """The visitor's cookie and the language cookie, if this request chose new values: session
    cookies (no Expires/Max-Age: gone when the browser closes), HttpOnly, SameSite=Strict."""
    for name, key in ((COOKIE_NAME, SET_COOKIE_KEY), (LANG_COOKIE, SET_LANG_KEY),
                      (PENDING_COOKIE, SET_PENDING_KEY), (SEALED_COOKIE, SET_SEALED_KEY)):
        value = request.get(key)
        if value == "":
            response.del_cookie(name, path="/")
        elif value is not None:
            response.set_cookie(name, value, path="/", httponly=True, samesite="Strict")


def _language_links(request: web.Request) -> list[tuple[i18n.LocaleInfo, str]]:
    """Each locale with a link to the current page in that locale (GET pages), else to /.

    The link is built from the matched route, never from the request's path: a path such as
    `//phish.onion/` or `/\\phish/` is served (as a 404) under the real address, and a link
    copied from it would lead off the onion."""
    path = _route_path(request) if request.method == "GET" else "/"
    return [(info, f"{path}?{urlencode({'l': info.code})}") for info in i18n.all_locales()]


def _route_path(request: web.Request) -> str:
    """The path of the page's own route ("/" for anything but a plain page route)."""
    resource = request.match_info.route.resource
    if isinstance(resource, web.PlainResource):
        return str(resource.url_for())
    return "/"
