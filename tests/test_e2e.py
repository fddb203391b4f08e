"""End to end, with real processes (issue 5, "Tests must show").

`amanat demo` runs as a subprocess; a source's browser (no JavaScript) follows the real HTML forms
with their CSRF tokens and sends three submissions, one with a 20 MiB file; the server exports a
bundle (`amanat export`) and the workstation pulls one (`amanat transfer pull`, signed);
`amanat-review` imports them, `show` and `extract` give back the originals byte for byte;
the keys are split as in a deployment: the online workstation holds only the transfer
credential (and the public keyring), the review workstation only the offline identity;
`amanat-review reply` writes a reply that `amanat transfer push` carries; the source logs in with
its codename and reads it in the page; `amanat transfer ack` makes the server delete those
ciphertexts. Along the way: a tampered bundle, a replayed request, a wrong passphrase and a revoked
investigator are refused, and a testimony carrying terminal escapes prints harmlessly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from postgres import PostgresCluster, is_postgres
from postgres import query as postgres_query

from dropbox.demo import create_demo_org
from keys.identity_file import open_credential
from keys.transfer_auth import EMPTY_SHA256, sign_request

pytestmark = pytest.mark.slow
BACKENDS = ("sqlite", "postgresql")  # conftest.py: tests using `database_url` run on both
TABLES = ("sources", "submissions", "ciphertexts", "acknowledgements", "replies")

MIB = 1024 * 1024
REVIEW_MISSING = not Path(__file__).resolve().parent.parent.joinpath("review", "cli.py").exists()


# --- the real processes -----------------------------------------------------------------------


def amanat(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("dropbox.cli", args, check)


def review(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("review.cli", args, check)


def _run(module: str, args: tuple[object, ...], check: bool) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass
class Demo:
    root: Path
    url: str
    transfer_url: str
    config: Path
    identity: Path
    credential: Path
    passphrase_file: Path
    database_url: str | None = None  # None: the demo's SQLite file
    purged: list[str] = field(default_factory=list)  # ids and store names an ack let go of

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if self.database_url is not None and is_postgres(self.database_url):
            return postgres_query(self.database_url, sql, *args)
        database = self.root / "data" / "amanat.sqlite3"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def object_path(self, name: str) -> Path:
        return self.root / "data" / "store" / "objects" / name[:2] / name

    def client_args(self) -> list[object]:
        return ["--url", self.transfer_url, "--credential", self.credential,
                "--passphrase-file", self.passphrase_file]

    def keyring_args(self) -> list[object]:
        org = self.root / "org"
        return ["--keyring", org / "keyring.json", "--org-pub", org / "org.pub"]

    def split(self, online: Path, offline: Path) -> None:
        """Move each credential where it belongs: the online workstation gets the transfer
        credential, the review workstation the offline identity; the demo folder keeps neither."""
        for folder, attribute in ((online, "credential"), (offline, "identity")):
            folder.mkdir()
            source = getattr(self, attribute)
            moved = folder / source.name
            source.rename(moved)
            setattr(self, attribute, moved)


@contextlib.contextmanager
def demo_server(root: Path, database_url: str | None = None) -> Iterator[Demo]:
    """`amanat demo` in a subprocess; on `database_url` (made here, then reused by the demo as
    an existing folder) when one is given."""
    root.mkdir(parents=True)
    if database_url is not None:
        org = create_demo_org(root, port=0, cheap_kdf=True, database_url=database_url)
        (root / "demo.json").write_text(json.dumps({"investigator_passphrase": org.passphrase}))
    log = root.parent / "demo.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "dropbox.cli", "demo", "--data", str(root), "--no-tor",
             "--cheap-kdf", "--port", "0"],
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        state = _wait_for_state(root / "demo.json", process, log)
        passphrase_file = root / "passphrase.txt"
        passphrase_file.write_text(state["investigator_passphrase"] + "\n")
        yield Demo(root, state["url"], state["transfer_url"], Path(state["config"]),
                   Path(state["investigator_identity"]),
                   Path(state["investigator_transfer_credential"]), passphrase_file, database_url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_state(path: Path, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"amanat demo exited:\n{log.read_text()}")
        with contextlib.suppress(OSError, ValueError):
            state: dict[str, Any] = json.loads(path.read_text())
            if state.get("transfer_url"):
                return state
        time.sleep(0.1)
    raise AssertionError("amanat demo did not start in time")


# --- a browser without JavaScript: it only does what the HTML forms allow ----------------------


@dataclass
class Form:
    action: str
    method: str
    enctype: str
    hidden: dict[str, str] = field(default_factory=dict)
    # name -> control type ("text", "textarea", "radio", "checkbox", "file", ...)
    controls: dict[str, str] = field(default_factory=dict)
    options: dict[str, set[str]] = field(default_factory=dict)  # radio/checkbox values


class _FormParser(HTMLParser):
    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.inside = wanted, False
        self.form: Form | None = None
        self.replies: list[str] = []
        self._reply: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.wanted in (a.get("id"), a.get("action")):
            self.form = Form(a["action"], a.get("method", "get").lower(),
                             a.get("enctype", "application/x-www-form-urlencoded"))
            self.inside = True
        elif tag == "p" and a.get("class") == "reply":
            self._reply = []
        elif self.inside and self.form is not None and tag in ("input", "textarea", "select"):
            kind = a.get("type", "text") if tag == "input" else tag
            name = a.get("name", "")
            if kind == "hidden":
                self.form.hidden[name] = a.get("value", "")
            else:
                self.form.controls[name] = kind
                if kind in ("radio", "checkbox"):
                    self.form.options.setdefault(name, set()).add(a.get("value", "on"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "p" and self._reply is not None:
            self.replies.append("".join(self._reply))
            self._reply = None

    def handle_data(self, data: str) -> None:
        if self._reply is not None:
            self._reply.append(data)


def parse_page(html: str, wanted: str) -> tuple[Form, list[str]]:
    """The form whose id or action is `wanted`, and the replies shown on the page."""
    parser = _FormParser(wanted)
    parser.feed(html)
    assert parser.form is not None, f"no form {wanted!r} on the page"
    return parser.form, [unescape(r) for r in parser.replies]


class Browser:
    """Cookies, the forms the pages serve (with their CSRF tokens), nothing else."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str) -> str:
        async with self.http.get(self.base + path) as response:
            assert response.status == 200, path
            return await response.text()

    async def send(
        self,
        form: Form,
        values: dict[str, list[str]],
        files: Sequence[tuple[str, str, bytes]] = (),
    ) -> tuple[int, str]:
        """Post `form` like a browser: its hidden fields, then the values typed or ticked (each
        checked against the form's controls), then the chosen files."""
        data = aiohttp.FormData(default_to_multipart=form.enctype == "multipart/form-data")
        for name, value in form.hidden.items():
            data.add_field(name, value)
        for name, chosen in values.items():
            assert name in form.controls, f"the form has no control {name!r}"
            for value in chosen:
                if name in form.options:
                    assert value in form.options[name], f"{name} has no option {value!r}"
                data.add_field(name, value)
        for name, filename, content in files:
            assert form.controls.get(name) == "file", f"{name!r} is not a file input"
            # a stream, as a browser reads a file (aiohttp warns about big bytes bodies)
            data.add_field(name, io.BytesIO(content), filename=filename,
                           content_type="application/octet-stream")
        assert form.method == "post"
        async with self.http.post(self.base + form.action, data=data) as response:
            return response.status, await response.text()


async def new_source_submits(
    base: str, values: dict[str, list[str]], files: list[tuple[str, str, bytes]]
) -> str:
    """A new source: get a codename, confirm it, send one submission; returns the codename."""
    browser = Browser(base)
    try:
        start = await browser.get("/start")
        codename = unescape(start.split('id="codename">', 1)[1].split("<", 1)[0])
        confirm, _ = parse_page(start, "/start")
        status, page = await browser.send(confirm, {"codename_check": [codename.split()[-1]]})
        assert status == 200, page
        submit, _ = parse_page(page, "submit-form")
        status, page = await browser.send(submit, values, files)
        assert status == 200, page
        assert 'id="submitted"' in page, page
    finally:
        await browser.close()
    return codename


async def source_reads_replies(base: str, codename: str) -> list[str]:
    browser = Browser(base)
    try:
        login, _ = parse_page(await browser.get("/login"), "login-form")
        status, page = await browser.send(login, {"codename": [codename]})
        assert status == 200, page
        _, replies = parse_page(page, "submit-form")
    finally:
        await browser.close()
    return replies


# --- the run ----------------------------------------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b[31mred\u202egnp.exe"

SUBMISSIONS: list[tuple[dict[str, list[str]], list[tuple[str, str, bytes]]]] = [
    # 1: text only, in Dari
    ({"message": ["ما را به زور از خانه بیرون کردند.\nThey forced us out of our home."]}, []),
    # 2: text and form answers
    (
        {
            "message": ["Police took our PoR cards at a checkpoint near Peshawar."],
            "q_when": ["1403-05-12"],
            "q_province": ["khyber_pakhtunkhwa"],
            "q_city": ["Peshawar"],
            "q_at_risk": ["self", "children"],
            "q_documents": ["por_card"],
            "q_urgency": ["days"],
            "q_consent_uses": ["advocacy", "legal"],
        },
        [],
    ),
    # 3: files, one of 20 MiB, and a message carrying terminal escapes and a bidi override
    (
        {"message": [f"Files attached. {ESCAPES} end."]},
        [
            ("files", "video.mp4", os.urandom(20 * MIB)),
            ("files", "notice.pdf", b"%PDF-1.4\n" + os.urandom(50_000)),
        ],
    ),
]


def review_json(vault: Path, pf: Path, *args: object) -> Any:
    return json.loads(review(*args, "--vault", vault, "--passphrase-file", pf, "--json").stdout)


@pytest.mark.skipif(REVIEW_MISSING, reason="review/cli.py (amanat-review) is not there yet")
def test_end_to_end(
    tmp_path: Path, database_url: str | None, request: pytest.FixtureRequest
) -> None:
    with demo_server(tmp_path / "demo", database_url) as demo:
        _run_everything(demo, tmp_path)
    if database_url is not None:  # the purge rewrote the tables: their files hold none of it
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        cluster.checkpoint()
        [(oid,)] = demo.query("SELECT oid FROM pg_database WHERE datname = current_database()")
        for path in (cluster.data_dir / "base" / str(oid)).iterdir():
            data = path.read_bytes()
            assert not [m for m in demo.purged if m.encode() in data], path


def _run_everything(demo: Demo, tmp: Path) -> None:
    # --- three sources send testimonies through the HTML forms -----------------------------
    codenames = [
        asyncio.run(new_source_submits(demo.url, values, files))
        for values, files in SUBMISSIONS
    ]
    assert len(demo.query("SELECT id FROM submissions")) == 3

    # --- the split keys: nothing on the online workstation opens a testimony ----------------
    demo.split(tmp / "online", tmp / "offline")
    for path in (tmp / "online").iterdir():
        assert b"AGE-SECRET-KEY" not in path.read_bytes().upper()
    refused = amanat("transfer", "pull", "--url", demo.transfer_url, "--identity", demo.identity,
                     "--passphrase-file", demo.passphrase_file, "--out", tmp / "n.tar",
                     check=False)
    assert refused.returncode == 1
    assert "must stay on the review workstation" in refused.stderr
    refused = amanat("transfer", "pull", "--url", demo.transfer_url, "--credential",
                     demo.identity, "--passphrase-file", demo.passphrase_file, "--out",
                     tmp / "n.tar", check=False)
    assert refused.returncode == 1
    assert "holds an age identity" in refused.stderr
    assert not (tmp / "n.tar").exists()
    status = json.loads(amanat("transfer", "status", *demo.client_args(), "--json").stdout)
    assert status["waiting"]["submissions"] == 3
    assert status["waiting"]["bytes"] > 20 * MIB
    assert status["acknowledged_by_me"] == 0

    # --- bundles: exported on the server host, and pulled signed by the workstation --------
    exported, pulled = tmp / "export.tar", tmp / "pull.tar"
    amanat("export", "--config", demo.config, "--out", exported)
    result = amanat("transfer", "pull", *demo.client_args(), "--out", pulled)
    assert "pull:" in result.stderr  # the progress bar
    assert exported.stat().st_size > 20 * MIB
    assert pulled.stat().st_size > 20 * MIB
    assert exported.stat().st_mode & 0o077 == 0
    assert pulled.stat().st_mode & 0o077 == 0

    # --- the review workstation ------------------------------------------------------------
    vault, pf = tmp / "vault", demo.passphrase_file
    org = demo.root / "org"
    review("init", "--vault", vault, "--passphrase-file", pf, "--identity", demo.identity,
           "--keyring", org / "keyring.json", "--org-pub", org / "org.pub")

    # a tampered bundle is refused whole, with its reason, and changes nothing
    data = bytearray(pulled.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the 20 MiB file
    tampered = tmp / "tampered.tar"
    tampered.write_bytes(bytes(data))
    refused = review("import", "--vault", vault, "--passphrase-file", pf, tampered, check=False)
    assert refused.returncode == 1
    assert "SHA-256" in refused.stderr or "sha256" in refused.stderr.lower(), refused.stderr
    assert review_json(vault, pf, "list") == []

    # a wrong passphrase is a clear error, for the vault and for the transfer credential
    wrong = tmp / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    bad = review("list", "--vault", vault, "--passphrase-file", wrong, check=False)
    assert bad.returncode == 1
    assert "wrong passphrase" in bad.stderr
    bad = amanat("transfer", "pull", "--url", demo.transfer_url, "--credential",
                 demo.credential, "--passphrase-file", wrong, "--out", tmp / "never.tar",
                 check=False)
    assert bad.returncode == 1
    assert "passphrase does not open" in bad.stderr
    assert not (tmp / "never.tar").exists()

    review("import", "--vault", vault, "--passphrase-file", pf, pulled)
    again = review("import", "--vault", vault, "--passphrase-file", pf, exported)
    assert "0 new submission(s), 3 already in the vault" in again.stdout  # same items

    listed = review_json(vault, pf, "list")
    assert len(listed) == 3
    shown = [review_json(vault, pf, "show", row["id"]) for row in listed]
    by_message = {s["message"].split(" ", 1)[0]: s for s in shown}

    # messages and answers come back exactly as sent
    text_only = next(s for s in shown if s["message"] == SUBMISSIONS[0][0]["message"][0])
    assert text_only["attachments"] == []
    answered = next(s for s in shown if s["message"] == SUBMISSIONS[1][0]["message"][0])
    for name, values in SUBMISSIONS[1][0].items():
        if name != "message":
            assert answered["answers"][name] == values, name
    with_files = by_message["Files"]
    sent_files = {name: content for _, name, content in SUBMISSIONS[2][1]}
    assert {a["name"]: (a["size"], a["sha256"]) for a in with_files["attachments"]} == {
        name: (len(c), hashlib.sha256(c).hexdigest()) for name, c in sent_files.items()
    }

    # extract gives back the original files byte for byte
    out = tmp / "extracted"
    review("extract", with_files["id"], "--vault", vault, "--passphrase-file", pf, "--out", out)
    for name, content in sent_files.items():
        assert (out / name).read_bytes() == content

    # untrusted text cannot drive the terminal: no escape or bidi override reaches stdout
    printed = review("show", with_files["id"], "--vault", vault, "--passphrase-file", pf).stdout
    assert "Files attached." in printed
    for control in ("\x1b", "\x07", "\u202e"):
        assert control not in printed

    # --- a reply travels back and the source reads it in the page -----------------------------
    reply_text = "We have your files. Stay safe — ما پیام شما را دریافت کردیم."
    outbox = tmp / "outbox"
    review("reply", answered["source"], "--message", reply_text, "--vault", vault,
           "--passphrase-file", pf, "--out", outbox)
    pushed = amanat("transfer", "push", *demo.client_args(), outbox)
    assert "stored 1 repl" in pushed.stdout
    stored = demo.query("SELECT name FROM replies")
    assert len(stored) == 1
    assert reply_text.encode() not in demo.object_path(stored[0][0]).read_bytes()
    assert asyncio.run(source_reads_replies(demo.url, codenames[1])) == [reply_text]
    assert asyncio.run(source_reads_replies(demo.url, codenames[0])) == []

    # --- a replayed request is refused -------------------------------------------------------
    assert asyncio.run(_replay_pull(demo)) == (200, 401, "replayed_nonce")

    # --- acknowledgement: the server lets go of those ciphertexts ----------------------------
    names = [row[0] for row in demo.query("SELECT name FROM ciphertexts")]
    demo.purged = [*names, *(row[0] for row in demo.query("SELECT id FROM submissions"))]
    assert len(names) >= 3 + 2
    assert all(demo.object_path(n).exists() for n in names)
    refused = amanat("transfer", "ack", *demo.client_args(), "--bundle", tampered,
                     *demo.keyring_args(), check=False)
    assert refused.returncode == 1  # an altered bundle acknowledges nothing
    assert all(demo.object_path(n).exists() for n in names)
    acked = amanat("transfer", "ack", *demo.client_args(), "--bundle", pulled,
                   *demo.keyring_args())
    assert "acknowledged 3" in acked.stdout
    assert not any(demo.object_path(n).exists() for n in names)
    assert demo.query("SELECT count(*) FROM ciphertexts") == [(0,)]
    assert demo.query("SELECT count(*) FROM submissions") == [(0,)]  # not even their days
    for table in TABLES:  # no other row names them either
        rows = repr(demo.query(f"SELECT * FROM {table}"))
        assert not [m for m in demo.purged if m in rows], table
    empty = tmp / "empty.tar"
    amanat("transfer", "pull", *demo.client_args(), "--out", empty)
    assert empty.stat().st_size < 4096  # a signed bundle with no items
    status = json.loads(amanat("transfer", "status", *demo.client_args(), "--json").stdout)
    assert status == {"waiting": {"submissions": 0, "files": 0, "bytes": 0, "replies": 1},
                      "acknowledged_by_me": 0, "replies_deleted_by_sources": []}
    # the vault still holds everything
    assert "OK" in review("verify", "--vault", vault, "--passphrase-file", pf).stdout

    # --- a revoked investigator is refused, without restarting the server ----------------------
    amanat("keys", "revoke", "--dir", org, "--label", "Demo investigator")
    revoked = amanat("transfer", "pull", *demo.client_args(), "--out", tmp / "r.tar", check=False)
    assert revoked.returncode == 1
    assert "403 revoked_key" in revoked.stderr


async def _replay_pull(demo: Demo) -> tuple[int, int, str]:
    """Send one signed pull twice, byte for byte."""
    credential = open_credential(demo.credential.read_bytes(),
                                 demo.passphrase_file.read_text().strip())
    headers = sign_request(credential.signing_key, "GET", "/v1/pull", EMPTY_SHA256, time.time())
    async with aiohttp.ClientSession() as http:
        async with http.get(demo.transfer_url + "/v1/pull", headers=headers) as first:
            await first.read()
        async with http.get(demo.transfer_url + "/v1/pull", headers=headers) as second:
            answer = await second.json()
    return first.status, second.status, answer["error"]
