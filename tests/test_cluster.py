"""Two intake nodes on one PostgreSQL database and one cluster key, each its own application
on its own socket (nothing shared but the database, the store folder and the key file), as
Onionbalance would put them behind one address: a source may land on either at any request.

A source starts on one node and confirms on the other, submits on one and reads its replies on
the other, logs out on one and its cookie no longer works on the other; a tampered cookie is
refused; login attempts spread over both nodes are limited as on one; floods grow nothing
beyond the configured bounds, in memory or in the database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from conftest import RunningServer, SourceClient, add_reply, serve_org
from postgres import PostgresCluster
from yarl import URL

from dropbox.cluster import new_cluster_key
from dropbox.demo import create_demo_org
from dropbox.pages import SEALED_COOKIE
from dropbox.sessions import COOKIE_NAME
from keys.codename import generate_codename

PER_MINUTE = 4
MAX_ANONYMOUS = 40
COUNTED_TABLES = ("sources", "submissions", "ciphertexts", "replies", "acknowledgements",
                  "deleted_replies")


@contextlib.asynccontextmanager
async def two_nodes(root: Path, cluster: PostgresCluster,
                    **server: Any) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    org = create_demo_org(root / "org", port=0, cheap_kdf=True,
                          database_url=cluster.new_database())
    key_file = root / "session.key"
    key_file.write_text(new_cluster_key())
    key_file.chmod(0o600)
    settings = {"session_key_file": str(key_file), "cluster_nodes": 2, **server}
    async with serve_org(org, server=settings,
                         keys={"login_attempts_per_session_per_minute": PER_MINUTE}) as a, \
            serve_org(org, server=settings) as b:
        assert a.state.sealed is not None
        assert b.state is not a.state
        yield a, b


def on(client: SourceClient, node: RunningServer) -> SourceClient:
    """The next requests of this browser land on `node` (its cookies go along: one host)."""
    client.url = node.url
    return client


def cookies(client: SourceClient) -> dict[str, str]:
    return {c.key: c.value for c in client.http.cookie_jar}


async def test_a_source_moves_between_nodes_and_stays_logged_in(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    async with two_nodes(tmp_path, postgres_cluster) as (a, b), SourceClient(a.url) as source:
        status, _ = await on(source, a).get("/start")
        assert status == 200
        codename = source.codename
        status, page = await on(source, b).confirm()  # the form and codename came from A
        assert status == 200
        assert 'id="submit-form"' in page
        assert len(b.state.sessions) == 1
        assert len(a.state.sessions) == 0
        status, page = await on(source, a).submit("testimony sent through node A")
        assert status == 200
        assert 'id="submitted"' in page
        assert len(a.query("SELECT id FROM submissions")) == 1

        await add_reply(a, codename, b"We read it, thank you.", day="2026-01-02")
        status, page = await on(source, b).get("/submit")
        assert "We read it, thank you." in page  # decrypted on B with the sealed identity

        before_logout = cookies(source)
        status, _ = await on(source, a).logout()
        assert status == 200
        assert SEALED_COOKIE not in cookies(source)
        status, page = await on(source, b).get("/submit")
        assert 'id="submit-form"' not in page  # B sends the browser to the login page

        # The cookies from before the logout, replayed, open no session on either node.
        async with SourceClient(b.url) as thief:
            thief.http.cookie_jar.update_cookies(before_logout, URL(b.url))
            for node in (b, a):
                status, page = await on(thief, node).get("/submit")
                assert 'id="submit-form"' not in page

        # Logging in again (on B) works, and the new session is good on A.
        status, page = await on(source, b).login(codename)
        assert 'id="submit-form"' in page
        status, page = await on(source, a).get("/submit")
        assert "We read it, thank you." in page


async def test_a_tampered_or_foreign_session_cookie_is_refused(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    async with two_nodes(tmp_path, postgres_cluster) as (a, b), SourceClient(a.url) as source:
        await source.start()
        good = cookies(source)
        sealed = good[SEALED_COOKIE]
        middle = len(sealed) // 2
        flipped = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1:]
        for changed in ({SEALED_COOKIE: flipped}, {SEALED_COOKIE: sealed[:-3]},
                        {SEALED_COOKIE: "x" * 5000}, {COOKIE_NAME: "A" * 43}):
            async with SourceClient(b.url) as other:
                other.http.cookie_jar.update_cookies({**good, **changed}, URL(b.url))
                status, page = await other.get("/submit")
                assert status == 200
                assert 'id="submit-form"' not in page
        # The original is still good on both.
        for node in (a, b):
            status, page = await on(source, node).get("/submit")
            assert 'id="submit-form"' in page


async def test_login_attempts_spread_over_both_nodes_are_limited_as_one(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    """One visitor alternating between the nodes gets the attempts one node would give it."""
    async with two_nodes(tmp_path, postgres_cluster) as (a, b), SourceClient(a.url) as guesser:
        refused = 0
        allowed = 0
        for attempt in range(8):
            node = (a, b)[attempt % 2]
            status, _ = await on(guesser, node).login(generate_codename())
            if status == 429:
                refused += 1
            else:
                assert status == 400  # a well-formed codename nobody has
                allowed += 1
        assert allowed <= PER_MINUTE
        assert refused >= 8 - PER_MINUTE


async def test_a_flood_against_both_nodes_stays_within_bounds(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    """Fresh visitors hammer the start page and the login form on both nodes: each node's
    login counters stay within their bound, no session appears, and the database holds no new
    row (the pending codenames and form keys live in the visitors' cookies)."""
    async with two_nodes(tmp_path, postgres_cluster,
                         max_anonymous_clients=MAX_ANONYMOUS) as (a, b):
        before = {t: a.query(f"SELECT count(*) FROM {t}")[0][0] for t in COUNTED_TABLES}

        async def visitor(index: int) -> None:
            node = (a, b)[index % 2]
            async with SourceClient(node.url) as client:
                await client.get("/start")
                for _ in range(2):
                    status, _page = await on(client, (b, a)[index % 2]).login(
                        generate_codename())
                    assert status in (400, 429, 503)

        sem = asyncio.Semaphore(16)

        async def bounded(index: int) -> None:
            async with sem:
                await visitor(index)

        await asyncio.gather(*(bounded(i) for i in range(3 * MAX_ANONYMOUS)))
        for node in (a, b):
            assert len(node.state.limiter) <= MAX_ANONYMOUS
            assert len(node.state.sessions) == 0
            assert node.state.deriver.queue.waiting == 0
        after = {t: a.query(f"SELECT count(*) FROM {t}")[0][0] for t in COUNTED_TABLES}
        assert after == before


async def test_a_sealed_cookie_of_a_purged_source_opens_nothing(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    """A sealed cookie alone is not enough: the node asks the database whether the source
    logged out since; a source that no longer exists (purged) has no session anywhere."""
    async with two_nodes(tmp_path, postgres_cluster) as (a, b), SourceClient(a.url) as source:
        await source.start()
        a.query("DELETE FROM sources")
        for node in (a, b):
            status, page = await on(source, node).get("/submit")
            assert status == 200
            assert 'id="submit-form"' not in page



async def test_a_database_that_cannot_answer_logs_nobody_out_for_good(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    """While a node cannot ask the database, its pages treat the source as not logged in, but
    the cookie is kept: once the database answers, the source is logged in again."""
    async with two_nodes(tmp_path, postgres_cluster) as (a, b), SourceClient(a.url) as source:
        await source.start()
        maker, b.state.db = b.state.db, None
        try:
            status, page = await on(source, b).get("/submit")
            assert status == 200
            assert 'id="submit-form"' not in page
            assert SEALED_COOKIE in cookies(source)
        finally:
            b.state.db = maker
        status, page = await source.get("/submit")
        assert 'id="submit-form"' in page
