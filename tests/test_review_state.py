"""The vault state (review/state.py): checked on load, and read-only outside review/vault.py.

A damaged or older state gives an error naming the field, from the command as from the library;
every record a Vault hands out refuses to be changed at run time (mypy refuses it statically:
the records' fields are ReadOnly), so the custody log cannot be bypassed; and no module of the
review tool reaches into the vault's private state.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from test_review_kit import (
    PASSPHRASE,
    ROOT,
    Submission,
    build_bundle,
    make_org,
    make_vault,
    review,
    rewrite_state,
)

from keys.age import decrypt
from review.state import (
    MAX_DEPTH,
    FrozenDict,
    FrozenList,
    StateReadOnlyError,
    VaultStateError,
    check_state,
    freeze,
)
from review.vault import Vault

PHOTO = [("photo.jpg", b"\xff\xd8 a photo", "image/jpeg")]


@pytest.fixture(scope="module")
def vault_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("state")
    org = make_org()
    path, passfile = make_vault(tmp, org)
    sub = Submission("a testimony", files=PHOTO)
    (tmp / "b.tar").write_bytes(build_bundle(org, [sub]))
    done = review("import", "--vault", path, "--passphrase-file", passfile, tmp / "b.tar")
    assert done.returncode == 0, done.stderr
    with Vault.open(path, PASSPHRASE.encode()) as vault:
        vault.tag(sub.submission_id, "first")
        vault.add_note(sub.submission_id, "a note")
    return path, passfile, sub.submission_id


def _state(path: Path) -> dict[str, Any]:
    with Vault.open(path, PASSPHRASE.encode()) as vault:
        document: dict[str, Any] = json.loads(vault.document())
    return document


def test_records_handed_out_refuse_every_change(vault_path: tuple[Path, Path, str]) -> None:
    path, _, sid = vault_path
    with Vault.open(path, PASSPHRASE.encode()) as vault:
        sub: Any = vault.submission(sid)
        attempts = [
            lambda: sub["tags"].append("x"),
            lambda: sub.__setitem__("tags", []),
            lambda: sub.update(day="2020-01-01"),
            lambda: sub.pop("quarantine"),
            lambda: sub["notes"][0].__setitem__("text", "rewritten"),
            lambda: sub["notes"].clear(),
            lambda: sub["ciphertexts"][0].__setitem__("sha256", "0" * 64),
            lambda: sub["files"][0]["metadata"].setdefault("gps", [0, 0]),
            lambda: sub["triage"]["groups"].extend(["x"]),
            lambda: vault.custody[-1]["details"].clear(),
            lambda: vault.bundles[sub["bundle"]].__delitem__("imported_at"),
        ]
        for attempt in attempts:
            with pytest.raises(StateReadOnlyError, match="through a Vault method"):
                attempt()
        with pytest.raises(TypeError):
            vault.submissions[sid] = sub
        with pytest.raises(AttributeError):
            vault.custody.append(vault.custody[0])
        # What the vault's own methods put in is frozen as well.
        vault.tag(sid, "second")
        with pytest.raises(StateReadOnlyError):
            vault.submission(sid)["tags"].append("x")
        with pytest.raises(StateReadOnlyError):
            vault.custody[-1]["subjects"].append("x")
        assert list(vault.submission(sid)["tags"]) == ["first", "second"]
        vault.tag(sid, "second", remove=True)
    assert [e["action"] for e in _state(path)["custody"][-3:]] == ["note", "tag", "untag"]


def test_the_state_on_disk_is_plain_json_as_before(vault_path: tuple[Path, Path, str]) -> None:
    path, _, sid = vault_path
    with Vault.open(path, PASSPHRASE.encode()) as vault:
        plaintext = decrypt((path / "state.age").read_bytes(), [vault.identity])
        body = plaintext.split(b"\n", 2)[2]
        assert plaintext.startswith(b"amanat-review-state/2\n")
        assert vault.document() == body  # frozen records write what was read, byte for byte
    state = json.loads(body)
    assert set(state) >= {"format", "org_pub", "keyring_version", "submissions", "bundles",
                          "replies", "custody"}
    assert state["submissions"][sid]["tags"] == ["first"]


@pytest.mark.parametrize(("change", "named"), [
    (lambda s: s["submissions"][next(iter(s["submissions"]))].pop("day"),
     "state.submissions['{sid}'] has no 'day'"),
    (lambda s: s["submissions"][next(iter(s["submissions"]))].update(tags="urgent"),
     "state.submissions['{sid}'].tags is not a list"),
    (lambda s: s["submissions"][next(iter(s["submissions"]))]["ciphertexts"][0].update(
        offset=True), "state.submissions['{sid}'].ciphertexts[0].offset is not an integer"),
    (lambda s: s["submissions"][next(iter(s["submissions"]))]["files"][0]["metadata"].update(
        gps="here"), ".files[0].metadata.gps is not a list"),
    (lambda s: s["custody"][1].pop("hash"), "state.custody[1] has no 'hash'"),
    (lambda s: s.update(bundles=[]), "state.bundles is not an object"),
    (lambda s: s.pop("replies"), "state has no 'replies'"),
])
def test_a_damaged_state_is_named_not_a_key_error(
    vault_path: tuple[Path, Path, str], change: Any, named: str
) -> None:
    path, passfile, sid = vault_path
    before = (path / "state.age").read_bytes()
    try:
        rewrite_state(path, change)
        expected = named.format(sid=sid)
        with pytest.raises(VaultStateError, match="damaged or from another version") as caught:
            Vault.open(path, PASSPHRASE.encode())
        assert expected in str(caught.value)
        done = review("list", "--vault", path, "--passphrase-file", passfile)
        assert done.returncode != 0
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        (path / "state.age").write_bytes(before)  # the investigator's backup opens again
    with Vault.open(path, PASSPHRASE.encode()) as vault:
        assert sid in vault.submissions


def test_check_state_refuses_a_record_filed_under_another_id() -> None:
    state: dict[str, Any] = {"format": "amanat-review-state/2", "org_pub": "k",
                             "keyring_version": 1, "bundles": {}, "replies": [], "custody": []}
    record = {"id": "b", "instance": "i", "bundle": "x", "day": "2026-01-01", "source": "s",
              "reply_recipient": "age1", "imported_at": "t", "ciphertexts": [], "tags": [],
              "notes": []}
    with pytest.raises(VaultStateError, match="carries the id 'b'"):
        check_state(state | {"submissions": {"a": record}})
    checked = check_state(state | {"submissions": {"b": dict(record, later="kept")}})
    assert checked["submissions"]["b"]["later"] == "kept"
    assert isinstance(checked["submissions"]["b"], FrozenDict)
    assert isinstance(checked["submissions"]["b"]["tags"], FrozenList)


def test_freeze_refuses_absurd_nesting() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(VaultStateError, match="nests more than"):
        freeze({"details": deep})


# Names of Vault's private members: the state and the steps that change it without logging.
PRIVATE = {"_state", "_put", "_log", "_save", "_write_object", "_migrate_v1"}


def test_only_the_vault_module_reaches_its_state() -> None:
    """The run-time freeze and the ReadOnly types guard the records; this guards the doors:
    outside review/vault.py no module of the review tool touches the vault's private members
    (its state, and the steps that change it without a custody entry)."""
    found = []
    for path in sorted((ROOT / "review").rglob("*.py")):
        if path.name == "vault.py" and path.parent.name == "review":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
                found.append(f"{where} uses {node.attr}")
    assert found == []
