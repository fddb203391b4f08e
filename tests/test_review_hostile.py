"""A compromised server: bundles that verify (it holds the transfer key) but carry crafted fields.

Each hostile field is refused or neutralised: the item is quarantined with its reason and the rest
of the bundle imports, the vault still opens, and nothing unescaped reaches a terminal or an
exported file. Built with the kit in test_review_kit.py; the CLI runs in this process (`main`)
so hypothesis can try many bundles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_review_kit import PASSPHRASE, Org, Submission, build_bundle, make_org, rewrite_state

from keys.age import encrypt
from keys.identity_file import protect_identity
from keys.manifest import IntakeLimits
from review import cli
from review.vault import STATE_FORMAT_V1, Vault, verify_chain

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[1;1H\x1b[32mverified OK\x1b[0m\x9b2J\u202egpj.exe\u202c"
# What must never reach a terminal or a file for humans: C0 but newline and tab, DEL, C1, and
# bidi embeddings/overrides (the tool's own isolates, balanced, are allowed).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")
SMALL = IntakeLimits(max_message_bytes=64 * 1024, max_file_bytes=1024 * 1024, max_files=3,
                     max_fields=10, max_field_bytes=1024)


@pytest.fixture(scope="module")
def org() -> Org:
    return make_org()


class Tool:
    """A vault and the CLI run in-process against it, every output checked for controls."""

    def __init__(self, root: Path, org: Org, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.org, self.capsys = root, org, capsys
        identity = protect_identity(org.investigators[0], PASSPHRASE, work_factor=10)
        Vault.create(
            root / "vault", identity, org.keyring_doc, org.org_pub_doc, PASSPHRASE.encode()
        ).close()
        self.passfile = root / "pass"
        self.passfile.write_text(PASSPHRASE)

    def run(self, *args: object, ok: bool = True) -> str:
        self.capsys.readouterr()
        code = cli.main([*map(str, args), "--vault", str(self.root / "vault"),
                         "--passphrase-file", str(self.passfile)])
        out, err = self.capsys.readouterr()
        assert not UNSAFE.search(out + err), (args, UNSAFE.findall(out + err))
        assert (code == 0) is ok, (args, out, err)
        return out + err

    def import_(self, subs: list[Submission], **kw: Any) -> str:
        bundle = self.root / f"b{len(list(self.root.glob('b*.tar')))}.tar"
        bundle.write_bytes(build_bundle(self.org, subs, **kw))
        return self.run("import", bundle)

    def every_view(self, sid: str) -> None:
        """Everything a reviewer can look at, for one submission; the vault still opens."""
        self.run("list")
        self.run("list", "--json")
        self.run("show", sid)
        self.run("show", sid, "--json")
        self.run("search", "a")
        self.run("verify")


def _set_file(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["files"][0].update({key: value})


def _nest(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _set_question_value(value: object) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["questionnaire"]["answers"][0].update({"value": value})


FILE = [("a.txt", b"attachment", "text/plain")]
HOSTILE: dict[str, tuple[Submission, str]] = {
    "sha256-with-terminal-escapes": (
        Submission("m", files=FILE, tamper=_set_file("sha256", ESCAPES)), "sha256"),
    "sha256-uppercase": (
        Submission("m", files=FILE, tamper=_set_file("sha256", "A" * 64)), "sha256"),
    "answers-600-deep": (
        Submission("m", tamper=lambda m: m.update(answers={"q": _nest(600)})), "deeper than"),
    "answers-900-deep": (
        Submission("m", tamper=lambda m: m.update(answers={"q": _nest(900)})), "deeper"),
    "question-value-deep": (
        Submission("m", answers={"q": "x"}, tamper=_set_question_value(_nest(3))), "too deep"),
    "message-over-signed-limit": (Submission("x" * 100_000), "message size 100000"),
    "message-ciphertext-over-limit": (  # the entry lies; the ciphertext's size gives it away
        Submission("x" * 100_000, tamper=lambda m: m["message"].update(size=10)),
        "over the signed limit"),
    "file-size-over-limit": (
        Submission("m", files=FILE, tamper=_set_file("size", 2 * 1024 * 1024)), "size"),
    "too-many-files": (Submission("m", files=FILE * 4), "over the limit of 3"),
    "too-many-answers": (
        Submission("m", answers={f"k{i}": "v" for i in range(11)}), "over 10 values"),
    "answer-too-long": (Submission("m", answers={"k": "ب" * 600}), "over 1024 bytes"),
    "content-type-escape": (
        Submission("m", files=FILE, tamper=_set_file("content_type", ESCAPES)), "content_type"),
    "filename-not-a-string": (
        Submission("m", files=FILE, tamper=_set_file("filename", {"a": 1})), "filename"),
    "size-is-a-bool": (Submission("m", files=FILE, tamper=_set_file("size", True)), "size"),
    "unknown-key": (Submission("m", tamper=lambda m: m.update(evil=ESCAPES)), "unexpected"),
    "received-day-escape": (
        Submission("m", tamper=lambda m: m.update(received_day=ESCAPES)), "received_day"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_field_is_quarantined_and_the_rest_imports(
    name: str, tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, reason = HOSTILE[name]
    good = Submission("a fine testimony", answers={"city": "Quetta"})
    tool = Tool(tmp_path, org, capsys)
    printed = tool.import_([good, bad], limits=SMALL)
    assert f"QUARANTINED {bad.submission_id}: " in printed
    assert reason in printed
    rows = {r["id"]: r for r in json.loads(tool.run("list", "--json"))}
    assert rows[good.submission_id]["quarantine"] is None
    assert reason in rows[bad.submission_id]["quarantine"]
    tool.every_view(bad.submission_id)
    assert "QUARANTINED" in tool.run("show", bad.submission_id)
    assert "Quetta" in tool.run("show", good.submission_id)
    assert good.submission_id in tool.run("search", "fine testimony")
    tool.run("extract", bad.submission_id, "--out", tmp_path / "x", ok=False)
    tool.run("export-case", bad.submission_id, "--out", tmp_path / "case", "--purpose", "legal",
             "--override-consent", "test", ok=False)
    assert not (tmp_path / "x").exists()


def test_limits_signed_over_the_ceiling_are_capped(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = Tool(tmp_path, org, capsys)
    huge = IntakeLimits(max_message_bytes=2**50, max_files=10**9, max_fields=10**9,
                        max_field_bytes=2**40, max_file_bytes=2**50)
    big = Submission("m", answers={"k": "x" * (2 * 1024 * 1024)})  # over the 1 MiB ceiling
    assert "QUARANTINED" in tool.import_([big], limits=huge)


def test_a_large_message_stays_out_of_the_vault_state(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = Tool(tmp_path, org, capsys)
    message = ("پولیس " * 380_000) + ESCAPES  # just under the default 4 MiB limit
    sub = Submission(message, answers={"city": ESCAPES})
    tool.import_([sub])
    state_size = (tmp_path / "vault" / "state.age").stat().st_size
    assert state_size < 20_000, state_size  # an excerpt, not the message
    assert "پولیس" in tool.run("list")
    shown = json.loads(tool.run("show", sub.submission_id, "--json"))
    assert shown["message"] == message
    assert shown["answers"] == {"city": [ESCAPES]}
    assert sub.submission_id in tool.run("search", "verified OK")


def test_attachment_names_are_safe_everywhere(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["CONIN$", "COM¹.txt", "nul .txt", "-rf", "--checkpoint-action=exec=sh",
             "report.pdf" + " " * 60 + ".desktop", "\u202eexe.pdf", "a\x1b[2Jb.txt", "LPT².log"]
    files = [(n, f"data {i}".encode(), "text/plain") for i, n in enumerate(names)]
    sub = Submission("m", files=files)
    tool = Tool(tmp_path, org, capsys)
    tool.import_([sub], limits=IntakeLimits(max_files=20))
    out = tmp_path / "out"
    tool.run("extract", sub.submission_id, "--out", out)
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == len(names)
    device = re.compile(r"(?i)(con|prn|aux|nul|conin\$|conout\$|com.|lpt.)( *\..*)?")
    for name in written:
        assert not name.startswith("-"), name
        assert not device.fullmatch(name), name
        assert not UNSAFE.search(name), name
        assert "  " not in name, name
    assert "report.pdf.desktop" in written  # the real extension is the visible one
    for i, (_, data, _) in enumerate(files):
        assert data in {p.read_bytes() for p in out.iterdir()}, i


def test_an_extract_that_fails_half_way_has_every_written_file_in_custody(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = Submission("m", files=[("first.txt", b"one", "text/plain"),
                                 ("second.txt", b"two", "text/plain")],
                     wrong_sha256_for="second.txt")
    tool = Tool(tmp_path, org, capsys)
    tool.import_([sub])
    out = tmp_path / "out"
    assert "does not match" in tool.run("extract", sub.submission_id, "--out", out, ok=False)
    assert sorted(p.name for p in out.iterdir()) == ["first.txt"]
    with Vault.open(tmp_path / "vault", PASSPHRASE.encode()) as vault:
        custody = vault.custody
    verify_chain(custody)
    tail = [(e["action"], e["details"]) for e in custody[-2:]]
    assert tail[0][0] == "extract"
    assert tail[0][1]["planned"] == 2
    assert tail[1][0] == "extract-file"
    assert Path(tail[1][1]["out"]) == (out / "first.txt").resolve()


def test_a_format_1_vault_is_migrated_on_open(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    good = Submission("an old testimony", answers={"city": "Quetta"}, files=FILE)
    deep = Submission("old and deep")
    tool = Tool(tmp_path, org, capsys)
    tool.import_([good, deep])
    root = tmp_path / "vault"

    def as_format_1(state: dict[str, Any]) -> None:
        _as_format_1(state)
        # format 1 took the deep answers without a look; the migration re-checks them
        state["submissions"][deep.submission_id]["answers"] = {"q": _nest(600)}

    rewrite_state(root, as_format_1, STATE_FORMAT_V1)
    with Vault.open(root, PASSPHRASE.encode()) as vault:
        assert json.loads(vault.document())["format"] == "amanat-review-state/2"
        subs = vault.submissions
        assert "message" not in subs[good.submission_id]
        assert subs[good.submission_id]["excerpt"] == "an old testimony"
        assert subs[good.submission_id]["attachment_count"] == 1
        assert vault.custody[-1]["action"] == "migrate"
        verify_chain(vault.custody)
    assert "Quetta" in tool.run("show", good.submission_id)
    tool.every_view(deep.submission_id)


def _as_format_1(state: dict[str, Any]) -> None:
    """The state as format 1 kept it: message, answers and attachments inline."""
    state["format"] = STATE_FORMAT_V1
    for sub in state["submissions"].values():
        excerpt = sub.pop("excerpt")
        for key in ("quarantine", "attachment_count", "message_size"):
            sub.pop(key)
        sub.update(message=excerpt, answers={}, questionnaire=None, attachments=[])
    for bundle in state["bundles"].values():
        bundle.pop("limits")


# --- fuzzed bundles ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40)
    | st.sampled_from([ESCAPES, "0" * 64, "a" * 64, "\x9b", "\u202e"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
PATHS = [("files", 0, "sha256"), ("files", 0, "filename"), ("files", 0, "size"),
         ("files", 0, "content_type"), ("files", 0, "field"), ("answers", "k"), ("answers",),
         ("questionnaire",), ("questionnaire", "answers", 0, "value"),
         ("questionnaire", "answers", 0, "question"), ("message",), ("received_day",),
         ("locale",), ("files",)]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), json_values)
def test_fuzzed_manifests_are_imported_or_quarantined_never_shown_raw(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
    path: tuple[Any, ...], value: Any
) -> None:
    def tamper(manifest: dict[str, Any]) -> None:
        target: Any = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    org = make_org(("Alice",))
    tmp = tmp_path_factory.mktemp("fuzz")
    tool = Tool(tmp, org, capsys)
    good = Submission("good one")
    fuzzed = Submission(ESCAPES, answers={"k": ESCAPES}, files=FILE, tamper=tamper)
    tool.import_([good, fuzzed])
    rows = {r["id"]: r for r in json.loads(tool.run("list", "--json"))}
    assert rows[good.submission_id]["quarantine"] is None
    tool.every_view(fuzzed.submission_id)
    if rows[fuzzed.submission_id]["quarantine"] is None:
        tool.run("extract", fuzzed.submission_id, "--out", tmp / "x")
        tool.run("export-case", fuzzed.submission_id, "--out", tmp / "case", "--purpose",
                 "advocacy", "--override-consent", "test")
        for file in (tmp / "case").rglob("*"):
            if file.is_file() and file.parent.name not in ("originals", "working"):
                text = file.read_text(encoding="utf-8")
                assert not UNSAFE.search(text), (file, UNSAFE.findall(text))


def test_a_swapped_search_cache_is_rebuilt_not_trusted(
    tmp_path: Path, org: Org, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = Tool(tmp_path, org, capsys)
    sub = Submission("the real text")
    tool.import_([sub])
    assert sub.submission_id in tool.run("search", "real text")
    cache = tmp_path / "vault" / "search.age"
    forged = json.dumps({sub.submission_id: "FORGED words"}).encode()
    cache.write_bytes(encrypt(forged, [org.investigators[0].identity.recipient()]))
    assert "0 match(es)" in tool.run("search", "FORGED")
    assert sub.submission_id in tool.run("search", "real text")
    later = Submission("imported after the first search")
    tool.import_([later])
    assert later.submission_id in tool.run("search", "after the first")
