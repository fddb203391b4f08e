"""HTTP hardening: security headers on every response, no Server header, Tor2Web refusal,
sessions and locale per request, and error pages that never show a stack trace.

Headers are set in `on_response_prepare`, which runs for every response the application sends
(pages, redirects, errors, static files) right before its headers go out, after aiohttp has added
its own `Server` header, which is removed there.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from dropbox import i18n, pages
from dropbox.i18n import N_, choose_locale, match_locale
from dropbox.sessions import COOKIE_NAME
from keys.errors import AmanatError, BusyError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# The submit page alone runs a script: its own resumable uploads (static/resumable.js), which
# talk to this origin only. Every other page, the landing page above all, stays script-free.
SCRIPTED_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# Short explanations for the statuses a source can meet; every one is translated when shown.
ERROR_MESSAGES: dict[int, tuple[str, str]] = {
    400: (N_("Something in the form was not right"),
          N_("The page could not read what was sent. Please go back and try again.")),
    403: (N_("This form has expired"),
          N_("For your safety, forms work only for a limited time and only from this site. "
             "Please go back, reload the page and try again.")),
    404: (N_("Page not found"), N_("There is no page at this address.")),
    405: (N_("Not allowed"), N_("This page cannot be used in that way.")),
    413: (N_("Too large"), N_("What you sent is larger than this drop accepts.")),
    429: (N_("Too many attempts"),
          N_("There have been too many codename attempts. Please wait a minute and try "
             "again.")),
    500: (N_("Something went wrong"),
          N_("The server could not finish this request. Nothing you sent was kept. Please "
             "try again later.")),
    503: (N_("The drop is busy"),
          N_("Many people are sending right now. Nothing you sent was kept. Please try again "
             "in a minute.")),
    507: (N_("The drop is full"),
          N_("The server does not have enough space right now. Nothing you sent was kept. "
             "Please try again later.")),
}


N_BACK = N_("Back to the start page")


class PageError(AmanatError):
    """Raised by handlers for a localized error page: a status and (untranslated) title/detail."""

    def __init__(self, status: int, title: str | None = None, detail: str | None = None) -> None:
        default_title, default_detail = ERROR_MESSAGES.get(status, ERROR_MESSAGES[500])
        super().__init__(status)
        self.status = status
        self.title = title or default_title
        self.detail = detail or default_detail


async def set_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: the same headers on every response, and no Server header."""
    response.headers.update(SECURITY_HEADERS)
    if request.get(pages.SCRIPTED_KEY):
        response.headers["Content-Security-Policy"] = SCRIPTED_CSP
    response.headers.popall("Server", None)


class HardenedRequest(web.Request):
    """A request whose responses always get the security headers and lose the Server header.

    aiohttp answers a malformed request (a bad request line, headers over the size limits) itself,
    before any route matches, so `on_response_prepare` never sees those responses: without this
    they would carry "Server: Python/3.x aiohttp/3.x", and a plain-text body quoting the parser's
    message and the bytes the client sent. `start_site` makes aiohttp build every request with
    this class."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        await super()._prepare_hook(response)
        await set_security_headers(self, response)
        if _is_aiohttp_error(response):
            assert isinstance(response, web.Response)
            page = minimal_error_page(response.status)
            response.body = page
            response.content_type, response.charset = "text/html", "utf-8"
            response.headers["Content-Length"] = str(len(page))  # aiohttp counted its own body


def _is_aiohttp_error(response: web.StreamResponse) -> bool:
    """An error aiohttp wrote itself: every error of ours is an HTML page (or JSON, for the
    transfer API), so a plain-text one can only be aiohttp's (a malformed request, a handler
    error that escaped the middlewares)."""
    return (isinstance(response, web.Response) and response.status >= 400
            and response.content_type == "text/plain")


def minimal_error_page(status: int) -> bytes:
    """The page for a request too malformed to route (no browser sends one, and nothing of it,
    not even its language, can be trusted): the error's title and explanation in English, and
    nothing of what was sent."""
    _ = i18n.translator("en")
    info = i18n.locale_info("en")
    title, detail = ERROR_MESSAGES.get(status, ERROR_MESSAGES[500 if status >= 500 else 400])
    title, detail, back = (html.escape(_(text)) for text in (title, detail, N_BACK))
    return (
        f'<!doctype html>\n<html lang="{info.lang}" dir="{info.direction}"><head>'
        f'<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f'<title>{title}</title><link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><main><h1>{title}</h1><p>{detail}</p><p><a href="/">{back}</a></p></main>'
        f"</body></html>\n"
    ).encode()


def error_page(request: web.Request, error: PageError) -> web.Response:
    _ = pages.gettext(request)
    return pages.render(request, "error.html", status=error.status,
                        title=_(error.title), detail=_(error.detail))


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the request's logged-in session and locale; set the cookies chosen meanwhile. A
    language link (`?l=`) is remembered in a cookie of its own, not in server-side state. On a
    cluster node the session comes from its sealed cookie (not for static files: no page
    needs it there, and each would cost a database query)."""
    app_state = pages.state(request)
    if app_state.sealed is None:
        request[pages.SESSION_KEY] = app_state.sessions.get(request.cookies.get(COOKIE_NAME),
                                                            pages.now())
    elif not isinstance(request.match_info.route.resource, web.StaticResource):
        request[pages.SESSION_KEY] = await pages.open_sealed_session(request, app_state.sealed)
    chosen = match_locale(request.query.get("l"))
    remembered = request.cookies.get(pages.LANG_COOKIE)
    if chosen is not None and chosen != remembered:
        request[pages.SET_LANG_KEY] = chosen
    request[pages.LOCALE_KEY] = choose_locale(chosen, remembered,
                                              request.headers.get("Accept-Language"),
                                              app_state.config.i18n.default_locale)
    response = await handler(request)
    pages.set_cookies(request, response)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse Tor2Web; turn every failure into a localized page without internals."""
    if "X-Tor2Web" in request.headers:
        return pages.render(request, "tor2web.html", status=403)
    try:
        return await handler(request)
    except PageError as error:
        return error_page(request, error)
    except BusyError:  # at capacity (e.g. no turn to write in time): nothing was done
        return error_page(request, PageError(503))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, PageError(exc.status))
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:
        # The type and place only: messages could carry user input and tracebacks are noise to
        # a source; operators can reproduce with the type and path.
        logger.error("unhandled %s on %s %s", type(exc).__name__, request.method,
                     request.match_info.route.resource.canonical
                     if request.match_info.route.resource else "?")
        return error_page(request, PageError(500))
