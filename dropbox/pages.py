"""What every handler shares: the application state, the request's session and locale, and
rendering a localized page.

Kept apart from app.py so that handlers and middlewares can import it without importing the app
factory (which imports them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dropbox import i18n
from dropbox.config import Config
from dropbox.questionnaire import Questionnaire
from dropbox.server_keys import KeyringFile
from dropbox.sessions import (
    COOKIE_NAME,
    CSRF_FIELD,
    KeyDeriver,
    LoginLimiter,
    Session,
    SessionStore,
)
from dropbox.store import CiphertextStore
from keys.age import X25519Identity
from keys.keyring import Keyring

SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("amanat_session")
NEW_SESSION_KEY: web.RequestKey[bool] = web.RequestKey("amanat_new_session", bool)
LOCALE_KEY: web.RequestKey[str] = web.RequestKey("amanat_locale", str)


@dataclass
class AppState:
    """Everything the handlers need, built once by create_app (no global singletons)."""

    config: Config
    keyring_file: KeyringFile
    instance_salt: bytes
    store: CiphertextStore
    sessions: SessionStore
    deriver: KeyDeriver
    limiter: LoginLimiter
    questionnaire: Questionnaire
    db: async_sessionmaker[AsyncSession] | None = None  # set when the app starts

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


def ensure_session(request: web.Request) -> Session:
    """The request's session, created (and its cookie set on the response) if there is none."""
    session = current_session(request)
    if session is None:
        session = state(request).sessions.create(now())
        request[SESSION_KEY] = session
        request[NEW_SESSION_KEY] = True
    return session


def log_in(request: web.Request, session: Session, source_id: str,
           reply_identity: X25519Identity) -> None:
    """Attach a source to the session under a fresh cookie value and CSRF token."""
    session.log_in(source_id, reply_identity)
    state(request).sessions.rotate(session)
    request[NEW_SESSION_KEY] = True


def locale(request: web.Request) -> str:
    return request.get(LOCALE_KEY) or state(request).config.i18n.default_locale


def gettext(request: web.Request) -> Any:
    """The request's `_()` for text built in Python."""
    return i18n.translator(locale(request))


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """Render a page in the request's locale. Pages with forms get a session (for the CSRF token)
    by passing `csrf=True`."""
    code = locale(request)
    config = state(request).config
    session = ensure_session(request) if context.pop("csrf", False) else current_session(request)
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


def set_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """A session cookie: no Expires/Max-Age (gone when the browser closes), HttpOnly, Strict."""
    if request.get(NEW_SESSION_KEY):
        session = current_session(request)
        if session is not None:
            response.set_cookie(COOKIE_NAME, session.key, path="/", httponly=True,
                                samesite="Strict")


def _language_links(request: web.Request) -> list[tuple[i18n.LocaleInfo, str]]:
    """Each locale with a link to the current page in that locale (GET pages), else to /."""
    path = request.path if request.method == "GET" else "/"
    return [(info, f"{path}?{urlencode({'l': info.code})}") for info in i18n.all_locales()]
