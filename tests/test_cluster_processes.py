"""Two `amanat serve` processes on one PostgreSQL database and one cluster key: a source keeps
its session across both, and when the node it used is killed (SIGKILL: nothing of its memory
survives) the other one still knows the source."""

from __future__ import annotations

from pathlib import Path

from conftest import SourceClient
from postgres import PostgresCluster
from server_process import ServerProcess, make_org
from yarl import URL

from dropbox.cluster import new_cluster_key


async def test_a_source_outlives_the_node_it_logged_in_on(
    tmp_path: Path, postgres_cluster: PostgresCluster,
) -> None:
    key_file = tmp_path / "session.key"
    key_file.write_text(new_cluster_key())
    key_file.chmod(0o600)
    org = make_org(tmp_path / "org",
                   server={"session_key_file": str(key_file), "cluster_nodes": 2},
                   storage={"database_url": postgres_cluster.new_database()})
    a = ServerProcess(org, tmp_path / "tmp-a")
    b = ServerProcess(org, tmp_path / "tmp-b")
    a.start()
    try:
        b.start()
        async with SourceClient(a.url) as source:
            await source.get("/start")
            source.url = b.url
            status, page = await source.confirm()  # the start page came from the other process
            assert status == 200
            assert 'id="submit-form"' in page
            status, page = await source.submit("sent to process B")
            assert 'id="submitted"' in page
            source.url = a.url
            status, page = await source.get("/submit")
            assert 'id="submit-form"' in page  # A never saw the login
            a.kill()
            source.url = b.url
            status, page = await source.submit("sent after A died")
            assert status == 200
            assert 'id="submitted"' in page
            # A restarted (a fresh process: nothing in memory) opens the session from its cookie.
            a.start()
            source.url = a.url
            status, page = await source.get("/submit")
            assert 'id="submit-form"' in page
            before_logout = {c.key: c.value for c in source.http.cookie_jar}
            source.url = b.url
            status, _ = await source.logout()
            assert status == 200
        async with SourceClient(a.url) as replay:  # the cookies of before, on the other node
            replay.http.cookie_jar.update_cookies(before_logout, URL(a.url))
            status, page = await replay.get("/submit")
            assert status == 200
            assert 'id="submit-form"' not in page
    finally:
        a.kill()
        b.kill()
