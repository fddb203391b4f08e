"""Shared fixtures: a demo organization and the real intake server on a real socket.

Use them like this (every test gets its own folder under tmp_path):

    async def test_something(running_server):
        async with running_server(limits={"max_file_bytes": 1000}) as server:
            async with SourceClient(server.url) as source:
                codename = await source.start()             # issue + confirm a codename
                status, html = await source.submit("hello", [("a.txt", b"data", "text/plain")])
            assert server.submissions() ...                 # rows from the real SQLite file
            server.decrypt(name)                  # a ciphertext, opened by the investigator

- `demo_org` is an organization made by `dropbox.demo.create_demo_org` with the cheapest Argon2
  and scrypt settings: org key, signed keyring with one investigator, instance salt, config.
- `running_server(**overrides)` is an async context manager factory. Overrides are TOML sections
  as dicts (`server=`, `storage=`, `limits=`, `keys=`, `i18n=`); they are merged into the demo
  config, written to the config file (so a subprocess can use `server.config_path` too) and
  served with `create_app` + `start_site` on 127.0.0.1, port 0, with a real SQLite file.
- Backends: a test module that sets `BACKENDS = ("sqlite", "postgresql")` runs each of its tests
  that use `database_url` (through `running_server` too) once per backend (tests marked `tor`
  once, on SQLite); `database_url` is None
  for the demo's own SQLite file, or a fresh database in the session's PostgreSQL cluster
  (tests/postgres.py; skipped where PostgreSQL is not installed).
- `SourceClient(url)` plays a source's browser without JavaScript: cookies, CSRF tokens from the
  pages, plain form posts.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from postgres import PostgresCluster, is_postgres, postgres_bin
from postgres import query as postgres_query

from dropbox import db
from dropbox.app import create_app, start_site
from dropbox.config import Config, load_config
from dropbox.demo import DemoOrg, create_demo_org
from dropbox.pages import STATE, AppState
from keys.age import decrypt, encrypt
from keys.codename import derive_source_keys

pytest_plugins = ["conftest_tor"]  # the private Tor network fixtures (tests/tornet.py)

FileSpec = tuple[str, bytes, str]  # (filename, content, content type)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole session (started on first use)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql: ./dev test adds it)")
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends = getattr(metafunc.module, "BACKENDS", None)
    # Tests on the private Tor network are slow and not about the database: SQLite only.
    if metafunc.definition.get_closest_marker("tor") is not None:
        return
    if backends and "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", backends, indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (the demo's SQLite file in its data folder) or a fresh PostgreSQL database's URL."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database()


@pytest.fixture
def demo_org(tmp_path: Path) -> DemoOrg:
    """A throwaway organization with one investigator, built with the cheapest KDF settings."""
    return create_demo_org(tmp_path / "demo-org", port=0, cheap_kdf=True)


@dataclass
class RunningServer:
    """A live intake server: its base URL, config, organization and the running application."""

    url: str
    config: Config
    org: DemoOrg
    app: web.Application

    @property
    def state(self) -> AppState:
        """The application's state: keyring, store, sessions, database sessionmaker."""
        return self.app[STATE]

    @property
    def config_path(self) -> Path:
        return self.org.config_path

    @property
    def data_dir(self) -> Path:
        return self.config.storage.data_dir

    @property
    def store_dir(self) -> Path:
        return self.config.storage.store_dir

    @property
    def database_path(self) -> Path:
        return Path(self.config.storage.database_url.split(":///", 1)[1])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows from the real database (SQLite: a read-only connection to its file)."""
        if is_postgres(self.config.storage.database_url):
            return postgres_query(self.config.storage.database_url, sql, *args)
        with contextlib.closing(sqlite3.connect(f"file:{self.database_path}?mode=ro",
                                                uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def submissions(self) -> list[tuple[str, str]]:
        """(submission id, source id) for every submission row."""
        return [(r[0], r[1]) for r in self.query("SELECT id, source_id FROM submissions")]

    def ciphertexts(self, submission_id: str) -> dict[str, list[str]]:
        """Store names of a submission's ciphertexts by kind (message, file, manifest)."""
        found: dict[str, list[str]] = {}
        for kind, name in self.query(
            "SELECT kind, name FROM ciphertexts WHERE submission_id = ? ORDER BY id",
            submission_id,
        ):
            found.setdefault(kind, []).append(name)
        return found

    def decrypt(self, name: str) -> bytes:
        """A stored ciphertext opened with the investigator's identity."""
        store = self.state.store
        return decrypt(store.path(name).read_bytes(), [self.org.investigator.identity])

    def stored_files(self) -> list[Path]:
        """Every file under the store (committed or partial)."""
        return sorted(p for p in self.store_dir.rglob("*") if p.is_file())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # an inline table, e.g. one instance name per locale
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    """Write a config file from a {section: {key: value}} dict (values: flat or inline tables)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(v)}" for key, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


@contextlib.asynccontextmanager
async def serve_org(org: DemoOrg, **overrides: dict[str, Any]) -> AsyncIterator[RunningServer]:
    """Serve `org` with its config merged with `overrides`, on 127.0.0.1 port 0."""
    sections: dict[str, dict[str, Any]] = tomllib.loads(org.config_path.read_text("utf-8"))
    sections["server"]["listen"] = "127.0.0.1:0"
    sections["storage"].setdefault("reserve_bytes", 0)
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    write_config(org.config_path, sections)
    config = load_config(org.config_path)
    app = create_app(config)
    runner, url = await start_site(app, config.server.listen, config)
    try:
        yield RunningServer(url=url, config=config, org=org, app=app)
    finally:
        await runner.cleanup()


@pytest.fixture
def running_server(
    tmp_path: Path, database_url: str | None
) -> Callable[..., AbstractAsyncContextManager[RunningServer]]:
    """`async with running_server(**overrides) as server:` — a fresh organization and server
    (on PostgreSQL, servers started in one test share its database)."""
    counter = iter(range(1_000_000))

    def start(**overrides: dict[str, Any]) -> AbstractAsyncContextManager[RunningServer]:
        org = create_demo_org(tmp_path / f"server-{next(counter)}", port=0, cheap_kdf=True,
                              database_url=database_url)
        return serve_org(org, **overrides)

    return start


async def add_reply(server: RunningServer, codename: str, text: bytes, *, day: str | None = None,
                    bundle_id: str | None = None) -> str:
    """A reply stored as the transfer API stores one: encrypted to the source, with its day
    (today unless given); its id."""
    state = server.state
    keys = derive_source_keys(codename, state.instance_salt, server.config.keys.profile)
    async with state.store.writer() as writer:
        await writer.write(encrypt(text, [keys.reply_identity.recipient()]))
        stored = await writer.commit()
    assert state.db is not None
    async with state.db.begin() as dbs:
        source = await db.get_source_by_lookup(dbs, keys.lookup_id)
        assert source is not None
        return await db.add_reply(dbs, source.id, stored, day or db.today(),
                                  "Demo investigator", bundle_id)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_CODENAME = re.compile(r'id="codename">([^<]+)<')
_SUBMIT_ACTION = re.compile(r'id="submit-form" method="post" action="([^"]+)"')


def last_group(codename: str) -> str:
    """What a new source types into `codename-check`: the codename's last group."""
    return codename.split()[-1]


class SourceClient:
    """A source's browser without JavaScript: cookies, the pages' CSRF tokens, plain forms."""

    def __init__(self, url: str, accept_language: str | None = None) -> None:
        self.url = url
        headers = {"Accept-Language": accept_language} if accept_language else {}
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1 is an IP address
            headers=headers,
        )
        self.csrf = ""
        self.codename = ""  # the last codename a page showed
        self.submit_action = ""  # the last submit form's action (with its single-use token)

    async def __aenter__(self) -> SourceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as response:
            return response.status, self._remember(await response.text())

    async def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """A urlencoded POST carrying the last page's CSRF token (unless fields give one)."""
        data = {"csrf_token": self.csrf, **fields}
        async with self.http.post(self.url + path, data=data) as response:
            return response.status, self._remember(await response.text())

    async def start(self) -> str:
        """Get a new codename, confirm it; returns the codename as shown ("1234 5678 ...")."""
        status, html = await self.get("/start")
        assert status == 200, html
        assert self.codename, "no codename on the start page"
        codename = self.codename
        status, html = await self.confirm()
        assert status == 200, html
        assert 'id="submit-form"' in html, html
        return codename

    async def confirm(self, check: str | None = None) -> tuple[int, str]:
        """Press "I have written down my codename", typing `check` (by default the last group
        of the codename the start page showed)."""
        typed = last_group(self.codename) if check is None else check
        return await self.post_form("/start", {"codename_check": typed})

    async def login(self, codename: str) -> tuple[int, str]:
        await self.get("/login")
        return await self.post_form("/login", {"codename": codename})

    async def logout(self) -> tuple[int, str]:
        return await self.post_form("/logout", {})

    async def submit(
        self,
        message: str | bytes = "",
        files: Sequence[FileSpec] = (),
        fields: Sequence[tuple[str, str]] = (),
        csrf: str | None = None,
    ) -> tuple[int, str]:
        """POST the submit form as multipart: the CSRF token first, as a browser sends it, to the
        form's action (its single-use token). After a submission arrived, the next one loads the
        form again, as "Send more" does."""
        if not self.csrf or not self.submit_action:
            await self.get("/submit")
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("csrf_token", self.csrf if csrf is None else csrf)
        for name, value in fields:
            form.add_field(name, value)
        form.add_field("message", message)
        for filename, content, content_type in files:
            form.add_field("files", content, filename=filename, content_type=content_type)
        async with self.http.post(self.url + self.submit_action, data=form) as response:
            html = self._remember(await response.text())
        if 'id="submitted"' in html:
            self.submit_action = ""  # this form's token is spent
        return response.status, html

    def _remember(self, html: str) -> str:
        match = _CSRF.search(html)
        if match:
            self.csrf = unescape(match.group(1))
        match = _CODENAME.search(html)
        if match:
            self.codename = unescape(match.group(1))
        match = _SUBMIT_ACTION.search(html)
        if match:
            self.submit_action = unescape(match.group(1))
        return html


@pytest.fixture
def source_client() -> type[SourceClient]:
    """The SourceClient class, for tests that prefer a fixture to an import from conftest."""
    return SourceClient
