"""Issue 10, section 3: no link the service emits may lead off the onion.

Every page and error page, in every locale, is fetched over a raw socket (so the path goes out
exactly as written, the way a crafted link would send it) under hostile paths, and every URL in
its HTML (href, src, action, ...) and every Location header must stay on this origin.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser

import pytest
from conftest import SourceClient

from dropbox import handlers_source
from dropbox.config import LOCALES
from dropbox.security import ERROR_MESSAGES, PageError

HOSTILE_PATHS = [
    "//x.onion/a",
    "/\\x.onion/a",
    "/\\\\x.onion/a",
    "/%2F%2Fx.onion/a",
    "/%2f%2fx.onion/a",
    "/%5Cx.onion/a",
    "/%5C%5Cx.onion/a",
    "/%2F%5Cx.onion/a",
    "/%09/x.onion/a",
    "///x.onion/a",
    "//x.onion/start",
    "//x.onion/login",
    "/start//x.onion/a",
    "/./x.onion/..//a",
    "/static//x.onion/a",
    "/static/..%2F..%2Fx",
    "/" + "a" * 8000,
    "//" + "x" * 7990,
]
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "srcset", "poster", "data", "cite",
                  "background", "manifest", "ping", "xlink:href", "longdesc", "usemap"}


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)
            if tag == "meta" and name == "content" and value and "url=" in value.lower():
                self.urls.append(value.lower().split("url=", 1)[1])


def urls_in(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    return parser.urls


def same_origin(url: str) -> bool:
    """A path on this origin ("/x", not "//x" or "/\\x"), or a query or fragment only. Browsers
    drop tabs and newlines inside URLs and strip leading spaces, so none may appear."""
    if re.search(r"[\x00-\x20\x7f]", url):
        return False
    if url.startswith(("?", "#")):
        return True
    return url.startswith("/") and url[1:2] not in ("/", "\\")


async def fetch(url: str, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], str]:
    """One request over a raw socket, the path sent byte for byte; (status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()
    head, _, content = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, content.decode("utf-8", "replace")


def check_links(what: str, headers: dict[str, str], html: str) -> int:
    location = headers.get("location")
    if location is not None:
        assert same_origin(location), f"{what}: Location {location!r}"
    urls = urls_in(html)
    for url in urls:
        assert same_origin(url), f"{what}: {url!r} leads off this origin"
    return len(urls)


@pytest.fixture
def status_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    """The landing page raises the error page named by `?status=` (every status a source can
    meet, whatever triggers it), and `?crash=1` raises an unexpected exception (500)."""
    landing = handlers_source.landing

    async def patched(request):  # type: ignore[no-untyped-def]
        if "status" in request.query:
            raise PageError(int(request.query["status"]))
        if "crash" in request.query:
            raise RuntimeError("boom")
        return await landing(request)

    monkeypatch.setattr(handlers_source, "landing", patched)


async def test_every_link_stays_on_the_onion(running_server, status_on_demand) -> None:
    async with running_server() as server, SourceClient(server.url) as source:
        await source.start()
        logged_in = {"Cookie": "; ".join(f"{c.key}={c.value}" for c in source.http.cookie_jar)}
        csrf = source.csrf
        checked = 0
        for code in LOCALES:
            lang = {"Accept-Language": code.replace("_", "-")}
            requests: list[tuple[str, str, dict[str, str], bytes]] = []
            for path in ["/", "/start", "/login", "/submit", *HOSTILE_PATHS]:
                for query in ("", f"?l={code}", "?l=//x.onion", f"?l={code}&next=//x.onion"):
                    requests.append(("GET", path + query, lang, b""))
                    requests.append(("GET", path + query, {**lang, **logged_in}, b""))
                requests.append(("POST", path, lang, b""))
                requests.append(("GET", path, {**lang, "X-Tor2Web": "1"}, b""))
            for status in ERROR_MESSAGES:
                requests.append(("GET", f"/?status={status}", lang, b""))
            requests += [
                ("GET", "/?crash=1", lang, b""),
                ("GET", "/logout", lang, b""),  # 405
                ("POST", "/login", {**lang, "Content-Type": "text/plain"}, b"x"),  # 400
                ("POST", "/start", {**lang, "Content-Type":
                                    "application/x-www-form-urlencoded"}, b"csrf_token=x"),
                ("POST", "/login", {**lang, **logged_in, "Content-Type":
                                    "application/x-www-form-urlencoded"},
                 f"csrf_token={csrf}&codename=12".encode()),  # the login page with its error
                ("POST", "/submit", {**lang, **logged_in, "Content-Type":
                                     "multipart/form-data; boundary=b"},
                 f'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n'
                 '--b\r\nContent-Disposition: form-data; name="message"\r\n\r\nhello\r\n'
                 "--b--\r\n".encode()),  # the page after a submission
            ]
            for method, path, headers, body in requests:
                status, got, html = await fetch(server.url, method, path, headers, body)
                what = f"{code} {method} {path[:60]} -> {status}"
                assert status < 500 or "crash" in path or "status=" in path, what
                checked += check_links(what, got, html)
    assert checked > 10_000  # every page was HTML with links (language links, at least)


async def test_a_hostile_path_keeps_its_language_links_home(running_server) -> None:
    async with running_server() as server:
        status, _, html = await fetch(server.url, "GET", "//x.onion/a?l=fa")
    assert status == 404
    links = [u for u in urls_in(html) if "l=" in u]
    assert sorted(links) == sorted(f"/?l={code}" for code in LOCALES)
