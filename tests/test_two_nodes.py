"""Two `amanat serve` nodes on one PostgreSQL database with the database ciphertext store (issue 15
section 2): real server processes, real sockets, a real PostgreSQL cluster.

- a source submits to node A, an investigator pulls from node B's transfer API, and the bundle
  verifies and decrypts; the acknowledgement (through B) purges it, and no chunk of it is left in
  the tables or in the database's files;
- the kill -9 campaign: uploads run against both nodes while one node or the other is killed at
  random moments and restarted; every submission a source was told about is complete, and nothing
  incomplete is listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from postgres import PostgresCluster, query
from server_process import MIB, ServerProcess, make_org, new_source, upload
from tus_client import Tus

from dropbox.demo import DemoOrg
from keys.age import decrypt
from keys.bundle import read_bundle, transfer_key_lookup
from keys.keyring import load_keyring, parse_org_public_key
from workstation.client import TransferClient


@pytest.fixture
def org(tmp_path: Path, postgres_cluster: PostgresCluster) -> DemoOrg:
    url = postgres_cluster.new_database()
    return make_org(tmp_path / "org", storage={"database_url": url, "ciphertext": "database"})


def database_url(org: DemoOrg) -> str:
    from dropbox.config import load_config

    return load_config(org.config_path).storage.database_url


@contextlib.contextmanager
def two_nodes(org: DemoOrg, tmp: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes of one service: the same config (each listener on a free port of its own)."""
    nodes = (ServerProcess(org, tmp / "node-a"), ServerProcess(org, tmp / "node-b"))
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def stored_bytes(url: str, name: str) -> bytes:
    """A committed object's ciphertext, straight from the chunk table."""
    assert query(url, "SELECT committed FROM stored_objects WHERE name = ?", name) == [(True,)]
    rows = query(url, "SELECT data FROM stored_chunks WHERE name = ? ORDER BY seq", name)
    return b"".join(row[0] for row in rows)


def all_objects(url: str) -> dict[str, bytes]:
    """Every committed object's ciphertext, in one query."""
    joined: dict[str, bytes] = {}
    for name, data in query(url, "SELECT c.name, c.data FROM stored_chunks c JOIN stored_objects o"
                                 " ON o.name = c.name WHERE o.committed ORDER BY c.name, c.seq"):
        joined[name] = joined.get(name, b"") + data
    return joined


def transfer_lookup(org: DemoOrg) -> Any:
    """The review side's check: bundles signed by the transfer key the keyring pins."""
    org_pub = parse_org_public_key((org.root / "org" / "org.pub").read_bytes())
    keyring = load_keyring((org.root / "org" / "keyring.json").read_bytes(), org_pub)
    return transfer_key_lookup(keyring.transfer_verify_key)


async def pull_from(org: DemoOrg, node: ServerProcess) -> tuple[bytes, Any]:
    """A pull through `node`'s transfer API: the raw bundle and the verified one."""
    out = io.BytesIO()
    async with TransferClient(node.transfer_url, org.credential.signing_key) as client:
        await client.pull(out)
    out.seek(0)
    return out.getvalue(), read_bundle(out, transfer_lookup(org))


async def test_a_submission_to_one_node_is_pulled_from_the_other_then_purged(
    org: DemoOrg, tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = database_url(org)
    content = os.urandom(3 * MIB + 4321)  # several chunks
    with two_nodes(org, tmp_path) as (a, b):
        source = await new_source(a.url)
        result = await upload(source, b"from node A", "scan.bin", [content], len(content))
        assert result.status == 200
        assert b'id="submitted"' in result.body
        assert list((org.root / "data" / "store" / "objects").rglob("*.age")) == []

        raw, bundle = await pull_from(org, b)
        [item] = bundle.manifest.items
        by_kind = {c.kind: c.name for c in item.ciphertexts}
        identity = [org.investigator.identity]
        assert decrypt(bundle.read_member(by_kind["file"]), identity) == content
        assert decrypt(bundle.read_member(by_kind["message"]), identity) == b"from node A"
        ciphertext = stored_bytes(url, by_kind["file"])
        assert ciphertext in raw
        marks = [ciphertext[i:i + 64] for i in range(0, len(ciphertext) - 64, len(ciphertext) // 8)]
        assert holding(postgres_cluster, url, marks), "the search would not find the chunks"

        # `amanat export` on a node reads the same chunks (its store runs its own loop thread).
        exported = tmp_path / "export.tar"
        subprocess.run([sys.executable, "-m", "dropbox.cli", "export", "--config",
                        str(org.config_path), "--out", str(exported)], check=True,
                       capture_output=True)
        with exported.open("rb") as stream:
            offline = read_bundle(stream, transfer_lookup(org))
            assert decrypt(offline.read_member(by_kind["file"]), identity) == content

        async with TransferClient(a.transfer_url, org.credential.signing_key) as client:
            answer = await client.ack([item.submission_id])
        assert answer["deleted"] == 3
        assert query(url, "SELECT count(*) FROM stored_chunks") == [(0,)]
        assert query(url, "SELECT count(*) FROM stored_objects") == [(0,)]

    # Nothing of the purged ciphertext in the database's files (its tables were rewritten).
    assert holding(postgres_cluster, url, marks) == []


def holding(cluster: PostgresCluster, url: str, marks: list[bytes]) -> list[str]:
    """The database's files (tables, TOAST, indexes) holding any of `marks`, after a checkpoint
    wrote every page out. Its write-ahead log is not searched (docs/format.md)."""
    cluster.checkpoint()
    [(oid,)] = query(url, "SELECT oid FROM pg_database WHERE datname = current_database()")
    files = [p for p in (cluster.data_dir / "base" / str(oid)).iterdir() if p.is_file()]
    assert len(files) > 100
    return [p.name for p in files if any(m in p.read_bytes() for m in marks)]


async def test_a_resumable_upload_cut_twice_goes_into_the_database_store(
    org: DemoOrg, tmp_path: Path
) -> None:
    """tus: each PATCH's ciphertext is written (as chunks) before its answer; a cut connection
    resumes from the offset the database holds; the finished upload joins the submission."""
    url = database_url(org)
    data = os.urandom(2 * MIB + 999)
    with two_nodes(org, tmp_path) as (a, b):
        source = await new_source(a.url)
        tus = Tus(a.url, source.cookie, source.csrf)
        location, cut = await tus.upload(data, cuts=[300_000, 1_500_000], filename="r.bin")
        assert cut == 2
        assert query(url, "SELECT count(*) FROM stored_objects WHERE committed") == [(1,)]
        form = aiohttp.FormData({"csrf_token": source.csrf, "message": "resumed",
                                 "uploads": location.rsplit("/", 1)[1]},
                                default_to_multipart=True)
        async with aiohttp.ClientSession(headers={"Cookie": source.cookie}) as http, \
                http.post(a.url + "/submit", data=form) as answer:
            page = await answer.text()
        assert 'id="submitted"' in page, re.findall(r'class="error[^"]*">([^<]*)', page)
        _, bundle = await pull_from(org, b)
        [item] = bundle.manifest.items
        [file] = [c.name for c in item.ciphertexts if c.kind == "file"]
        assert decrypt(bundle.read_member(file), [org.investigator.identity]) == data


# --- the kill -9 campaign ---------------------------------------------------------------------

ROUNDS = 4
SUBMITTERS = 4


async def submit_once(node: ServerProcess, number: int, rng: random.Random,
                      told: dict[bytes, bytes]) -> None:
    """One source submits one file of 0.5 to 3 MiB; what the source is told arrived goes into
    `told` (message -> content). A killed node's errors just end the attempt."""
    content = rng.randbytes(rng.randint(MIB // 2, 3 * MIB))
    message = f"testimony {number}".encode()
    try:
        source = await new_source(node.url)
        result = await upload(source, message, f"f{number}.bin", [content], len(content))
    except (OSError, aiohttp.ClientError, AssertionError, TimeoutError):
        return
    if result.status == 200 and b'id="submitted"' in result.body:
        told[message] = content


async def uploads_in_flight(url: str, seen: set[str], patience: float = 3.0) -> int:
    """Uploads under way that were not at the last call (a killed node's uncommitted objects
    stay until swept days later), waiting a little for one to start; adds them to `seen`."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        rows = await asyncio.to_thread(
            query, url, "SELECT name FROM stored_objects WHERE NOT committed")
        fresh = {name for (name,) in rows} - seen
        if fresh or asyncio.get_running_loop().time() > deadline:
            seen |= fresh
            return len(fresh)
        await asyncio.sleep(0.01)


async def submitter(nodes: tuple[ServerProcess, ServerProcess], first: int, stop: asyncio.Event,
                    told: dict[bytes, bytes], seed: int) -> int:
    rng, number = random.Random(seed), first
    while not stop.is_set():
        node = nodes[rng.randrange(2)]
        if node.url:
            await submit_once(node, number, rng, told)
        number += SUBMITTERS
        await asyncio.sleep(0.01)
    return number


@pytest.mark.slow
async def test_kill_9_campaign_against_two_nodes_loses_nothing_acknowledged(
    org: DemoOrg, tmp_path: Path
) -> None:
    url = database_url(org)
    told: dict[bytes, bytes] = {}
    rng = random.Random(15)
    with two_nodes(org, tmp_path) as nodes:
        stop = asyncio.Event()
        workers = [asyncio.create_task(submitter(nodes, i, stop, told, 100 + i))
                   for i in range(SUBMITTERS)]
        kills = in_flight = 0
        seen: set[str] = set()
        for round_ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(0.3, 1.5))  # uploads are in flight on both nodes
            victim = nodes[round_ % 2]
            in_flight += bool(await uploads_in_flight(url, seen))
            victim.kill()
            kills += 1
            victim.url = ""
            await asyncio.to_thread(victim.start)  # its startup sweep runs while the other works
        stop.set()
        await asyncio.gather(*workers)
        assert kills == ROUNDS
        assert in_flight >= ROUNDS // 2, "too few kills came while uploads were being written"
        assert len(told) >= ROUNDS, "too few submissions were acknowledged to mean anything"

        # Every submission a source was told about is complete and decrypts to what it sent.
        identity = [nodes[0].org.investigator.identity]
        everything = all_objects(url)
        rows = query(url, "SELECT s.id, c.kind, c.name FROM submissions s"
                          " JOIN ciphertexts c ON c.submission_id = s.id")
        by_submission: dict[str, dict[str, str]] = {}
        for submission_id, kind, name in rows:
            by_submission.setdefault(submission_id, {})[kind] = name
        found = {}
        for kinds in by_submission.values():
            assert set(kinds) == {"message", "file", "manifest"}
            message = decrypt(everything[kinds["message"]], identity)
            found[message] = decrypt(everything[kinds["file"]], identity)
            manifest = json.loads(decrypt(everything[kinds["manifest"]], identity))
            assert manifest["files"][0]["size"] == len(found[message])
        for message, content in told.items():
            assert found.get(message) == content, message

        # Both restarted nodes still take submissions, and a pull lists exactly the rows.
        for node in nodes:
            source = await new_source(node.url)
            result = await upload(source, b"after", "after.bin", [b"still here"], 10)
            assert result.status == 200
            assert b'id="submitted"' in result.body
        _, bundle = await pull_from(org, nodes[1])
        listed = {item.submission_id for item in bundle.manifest.items}
        assert listed == {r[0] for r in query(url, "SELECT id FROM submissions")}
        assert len(listed) == len(by_submission) + 2
