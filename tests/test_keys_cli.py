"""`amanat keys` end to end: real files in a temporary org dir, modes and outputs checked."""

from __future__ import annotations

import base64
import getpass
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from dropbox.cli import main
from keys.errors import WrongPassphraseError
from keys.identity_file import open_credential, open_identity
from keys.keyring import (
    FORMAT_V1,
    Keyring,
    load_keyring,
    parse_org_public_key,
    parse_org_signing_key,
    sign_keyring,
)

PASSPHRASE = "a long enough passphrase"
ONLINE_PASSPHRASE = "another passphrase, for the online side"


class Org:
    """An org dir made by `init-org`, plus helpers to run commands against it."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        self.passphrase_file = root.parent / "passphrase.txt"
        self.passphrase_file.write_text(PASSPHRASE + "\n")
        self.online_passphrase_file = root.parent / "online-passphrase.txt"
        self.online_passphrase_file.write_text(ONLINE_PASSPHRASE + "\n")
        self.outputs: list[str] = []  # everything printed, to check that no secret was

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(["keys", *args])
        out, err = self.capsys.readouterr()
        self.outputs.append(out + err)
        return code, out, err

    def keyring(self) -> Keyring:
        org_pub = parse_org_public_key((self.root / "org.pub").read_bytes())
        return load_keyring((self.root / "keyring.json").read_bytes(), org_pub)

    def add(
        self, label: str, out: Path | None = None, credential: Path | None = None
    ) -> tuple[int, str, str]:
        out = out or self.root.parent / f"{label}.age"
        credential = credential or self.root.parent / f"{label}.cred"
        return self.run(
            "add-investigator", "--dir", str(self.root), "--label", label,
            "--identity-out", str(out), "--passphrase-file", str(self.passphrase_file),
            "--credential-out", str(credential),
            "--credential-passphrase-file", str(self.online_passphrase_file),
            "--work-factor", "10",
        )  # fmt: skip

    def secrets_on_disk(self) -> list[str]:
        """Every secret this org dir holds, in the text forms it could leak as."""
        seed = bytes(parse_org_signing_key((self.root / "org.key").read_bytes()))
        return [base64.b64encode(seed).decode(), seed.hex(), PASSPHRASE, ONLINE_PASSPHRASE]


@pytest.fixture
def org(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Org:
    org = Org(tmp_path / "org", capsys)
    code, out, _ = org.run("init-org", "--dir", str(org.root))
    assert code == 0
    assert "fingerprint:" in out
    return org


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_org_writes_the_three_files(org: Org) -> None:
    assert sorted(p.name for p in org.root.iterdir()) == ["keyring.json", "org.key", "org.pub"]
    assert mode(org.root / "org.key") == 0o600
    assert mode(org.root) == 0o700
    keyring = org.keyring()
    assert keyring.version == 1
    assert keyring.investigators == ()
    signing_key = parse_org_signing_key((org.root / "org.key").read_bytes())
    assert bytes(signing_key.verify_key) == bytes(keyring.org_verify_key)
    code, _, err = org.run("init-org", "--dir", str(org.root))
    assert code == 1
    assert "already exists" in err
    assert bytes(parse_org_signing_key((org.root / "org.key").read_bytes())) == bytes(signing_key)


def test_add_investigator_writes_a_private_identity_and_signs_a_new_version(
    org: Org, tmp_path: Path
) -> None:
    code, out, _ = org.add("alice")
    assert code == 0
    identity_path = tmp_path / "alice.age"
    assert mode(identity_path) == 0o600
    keyring = org.keyring()
    assert keyring.version == 2
    assert [i.label for i in keyring.investigators] == ["alice"]
    secrets = open_identity(identity_path.read_bytes(), PASSPHRASE)
    assert secrets.label == "alice"
    assert [str(r) for r in keyring.active_recipients()] == [str(secrets.identity.recipient())]
    assert keyring.investigator_by_verify_key(secrets.signing_key.verify_key) is not None
    assert str(secrets.identity.recipient()) in out
    assert keyring.fingerprint() in out
    with pytest.raises(WrongPassphraseError):
        open_identity(identity_path.read_bytes(), PASSPHRASE + "!")
    # The transfer credential: its own file and passphrase, its key in the keyring.
    credential_path = tmp_path / "alice.cred"
    assert mode(credential_path) == 0o600
    credential = open_credential(credential_path.read_bytes(), ONLINE_PASSPHRASE)
    owner = keyring.investigator_by_transfer_key(credential.signing_key.verify_key)
    assert owner is not None
    assert owner.label == "alice"
    assert bytes(credential.signing_key) != bytes(secrets.signing_key)
    with pytest.raises(WrongPassphraseError):
        open_credential(credential_path.read_bytes(), PASSPHRASE)
    # Nothing secret was printed: not the org key, the passphrases, nor the new keys.
    seeds = [base64.b64encode(bytes(k)).decode() for k in (secrets.signing_key,
                                                           credential.signing_key)]
    for secret in [*org.secrets_on_disk(), str(secrets.identity), *seeds, "AGE-SECRET-KEY"]:
        assert all(secret not in text for text in org.outputs)


def test_add_investigator_refuses_without_changing_anything(org: Org, tmp_path: Path) -> None:
    assert org.add("alice")[0] == 0
    before = (org.root / "keyring.json").read_bytes()
    existing = tmp_path / "alice.age"
    content = existing.read_bytes()

    code, _, err = org.add("bob", out=existing)  # the identity file exists already
    assert code == 1
    assert "already exists" in err
    assert existing.read_bytes() == content
    assert not (tmp_path / "bob.cred").exists()

    # the credential file exists already: the identity written first is taken back
    code, _, err = org.add("bob", credential=tmp_path / "alice.cred")
    assert code == 1
    assert "already exists" in err
    assert not (tmp_path / "bob.age").exists()

    code, _, err = org.add("ALICE")  # labels are unique, whatever the case
    assert code == 1
    assert "same label" in err
    assert not (tmp_path / "ALICE.age").exists()

    org.passphrase_file.write_text("short\n")
    code, _, err = org.add("carol")
    assert code == 1
    assert "at least 10 characters" in err
    assert not (tmp_path / "carol.age").exists()
    assert (org.root / "keyring.json").read_bytes() == before


def test_add_investigator_without_a_passphrase_source_fails_clearly(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, even under `pytest -s`
    code, _, err = org.run(
        "add-investigator", "--dir", str(org.root), "--label", "dan",
        "--identity-out", str(tmp_path / "dan.age"), "--credential-out", str(tmp_path / "d.cred"),
    )  # fmt: skip
    assert code == 1
    assert "no passphrase for the offline identity" in err
    assert not (tmp_path / "dan.age").exists()
    assert org.keyring().version == 1


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_add_investigator_prompts_twice_at_a_terminal(
    org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typed: list[str] = []
    monkeypatch.setattr(sys, "stdin", FakeTerminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: typed.pop(0))
    args = ("add-investigator", "--dir", str(org.root), "--work-factor", "10", "--label", "erin",
            "--identity-out", str(tmp_path / "e.age"), "--credential-out", str(tmp_path / "e.cred"))

    typed[:] = [PASSPHRASE, PASSPHRASE + "x"]
    code, _, err = org.run(*args)
    assert code == 1
    assert "the two passphrases differ" in err
    assert not (tmp_path / "e.age").exists()

    typed[:] = [PASSPHRASE, PASSPHRASE, ONLINE_PASSPHRASE, ONLINE_PASSPHRASE]
    code, _, _ = org.run(*args)
    assert code == 0
    assert typed == []
    assert open_identity((tmp_path / "e.age").read_bytes(), PASSPHRASE).label == "erin"
    assert open_credential((tmp_path / "e.cred").read_bytes(), ONLINE_PASSPHRASE).label == "erin"


def test_revoke_pin_and_sign(org: Org) -> None:
    org.add("alice")
    org.add("bob")
    before = org.keyring().fingerprint()
    code, out, _ = org.run("revoke", "--dir", str(org.root), "--label", "alice")
    assert code == 0
    assert "version 4" in out
    keyring = org.keyring()
    assert [i.label for i in keyring.active_investigators()] == ["bob"]
    assert keyring.fingerprint() != before
    assert org.run("revoke", "--dir", str(org.root), "--label", "alice")[0] == 1

    transfer = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    assert org.run("pin-transfer-key", "--dir", str(org.root), "--key", transfer)[0] == 0
    assert org.keyring().transfer_verify_key is not None
    code, _, err = org.run("pin-transfer-key", "--dir", str(org.root), "--key", "bm90IGEga2V5")
    assert code == 1
    assert "expected 32 bytes" in err

    assert org.run("sign", "--dir", str(org.root))[0] == 0
    assert org.keyring().version == 6


def test_transfer_credentials_are_rotated_and_revoked_alone(org: Org, tmp_path: Path) -> None:
    org.add("alice")
    first = open_credential((tmp_path / "alice.cred").read_bytes(), ONLINE_PASSPHRASE)
    before = org.keyring().investigators[0]
    rotate = ("transfer-credential", "--dir", str(org.root), "--label", "ALICE",
              "--credential-passphrase-file", str(org.online_passphrase_file),
              "--work-factor", "10")
    code, out, _ = org.run(*rotate, "--credential-out", str(tmp_path / "alice-2.cred"))
    assert code == 0
    assert "no longer works" in out
    second = open_credential((tmp_path / "alice-2.cred").read_bytes(), ONLINE_PASSPHRASE)
    assert second.label == "alice"  # the keyring's spelling
    keyring = org.keyring()
    assert keyring.investigator_by_transfer_key(first.signing_key.verify_key) is None
    after = keyring.investigator_by_transfer_key(second.signing_key.verify_key)
    assert after is not None
    assert (after.recipient, after.verify_key) == (before.recipient, before.verify_key)

    code, out, _ = org.run("revoke", "--dir", str(org.root), "--label", "alice",
                           "--transfer-only")
    assert code == 0
    keyring = org.keyring()
    assert keyring.investigators[0].transfer_key is None
    assert [i.label for i in keyring.active_investigators()] == ["alice"]  # still reads
    code, _, err = org.run("revoke", "--dir", str(org.root), "--label", "alice",
                           "--transfer-only")
    assert code == 1
    assert "no transfer credential" in err

    code, out, _ = org.run("rotate-identity", "--dir", str(org.root), "--label", "alice",
                           "--identity-out", str(tmp_path / "alice-2.age"),
                           "--passphrase-file", str(org.passphrase_file), "--work-factor", "10")
    assert code == 0
    new_identity = open_identity((tmp_path / "alice-2.age").read_bytes(), PASSPHRASE)
    assert [str(r) for r in org.keyring().active_recipients()] == [
        str(new_identity.identity.recipient())
    ]
    code, _, _ = org.run(*rotate, "--credential-out", str(tmp_path / "alice-3.cred"))
    assert code == 0  # a revoked credential can be issued again


def test_a_v1_keyring_migrates_by_issuing_transfer_credentials(org: Org, tmp_path: Path) -> None:
    """docs/deploy.md, "Migrating to transfer credentials": an org dir from before credentials
    (keyring v1, identity files only) gets one per investigator; the identity file is unchanged."""
    org.add("alice")
    signing_key = parse_org_signing_key((org.root / "org.key").read_bytes())
    current = org.keyring()
    v1 = replace(
        current,
        format_id=FORMAT_V1,
        investigators=tuple(replace(i, transfer_key=None) for i in current.investigators),
    )
    (org.root / "keyring.json").write_bytes(sign_keyring(v1, signing_key))
    old = org.keyring()
    assert old.format_id == "amanat-keyring/v1"
    assert old.investigators[0].transfer_key is None
    code, _, _ = org.run(
        "transfer-credential", "--dir", str(org.root), "--label", "alice",
        "--credential-out", str(tmp_path / "migrated.cred"),
        "--credential-passphrase-file", str(org.online_passphrase_file), "--work-factor", "10",
    )  # fmt: skip
    assert code == 0
    new = org.keyring()
    assert new.format_id == "amanat-keyring/v2"
    assert new.version == old.version + 1
    credential = open_credential((tmp_path / "migrated.cred").read_bytes(), ONLINE_PASSPHRASE)
    assert new.investigator_by_transfer_key(credential.signing_key.verify_key) is not None
    identity = open_identity((tmp_path / "alice.age").read_bytes(), PASSPHRASE)
    assert new.investigator_by_verify_key(identity.signing_key.verify_key) is not None


def test_sign_from_a_prepared_payload(org: Org, tmp_path: Path) -> None:
    org.add("alice")
    payload = org.keyring().payload()
    prepared = tmp_path / "unsigned.json"
    prepared.write_text(json.dumps(payload | {"version": 2}))
    code, _, err = org.run("sign", "--dir", str(org.root), "--from", str(prepared))
    assert code == 1
    assert "must be above the current version 2" in err
    payload["investigators"][0]["revoked"] = True
    prepared.write_text(json.dumps(payload | {"version": 10}))
    assert org.run("sign", "--dir", str(org.root), "--from", str(prepared))[0] == 0
    keyring = org.keyring()
    assert keyring.version == 10
    assert keyring.active_recipients() == []


def test_show_verify_fingerprint(org: Org) -> None:
    org.add("alice")
    org.run("revoke", "--dir", str(org.root), "--label", "alice")
    org.add("بصیر")
    keyring = org.keyring()
    code, out, _ = org.run("show", "--dir", str(org.root))
    assert code == 0
    assert "keyring version 4" in out
    assert "alice (REVOKED" in out
    assert "بصیر (active" in out
    assert keyring.fingerprint() in out

    code, out, _ = org.run("verify", "--dir", str(org.root), "--min-version", "4")
    assert code == 0
    assert out.startswith("keyring OK: version 4")
    code, out, _ = org.run("fingerprint", "--dir", str(org.root))
    assert out.strip() == keyring.fingerprint()
    code, out, _ = org.run("fingerprint", "--dir", str(org.root), "--digits", "fa")
    assert out.strip().translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹", "0123456789")) == keyring.fingerprint()
    assert out.strip() != keyring.fingerprint()

    code, _, err = org.run("verify", "--dir", str(org.root), "--min-version", "5")
    assert code == 1
    assert "rollback" in err
    assert all(secret not in text for secret in org.secrets_on_disk() for text in org.outputs)


def test_verify_with_explicit_files_refuses_tampering(org: Org, tmp_path: Path) -> None:
    org.add("alice")
    copy = tmp_path / "served-keyring.json"
    document = json.loads((org.root / "keyring.json").read_text())
    document["keyring"]["investigators"][0]["label"] = "mallory"
    copy.write_text(json.dumps(document))
    args = ["--keyring", str(copy), "--org-pub", str(org.root / "org.pub")]
    code, _, err = org.run("verify", *args)
    assert code == 1
    assert "signature does not verify" in err
    code, _, err = org.run("verify", "--keyring", str(tmp_path / "missing.json"),
                           "--org-pub", str(org.root / "org.pub"))  # fmt: skip
    assert code == 1
    assert "does not exist" in err


def test_mismatched_org_pub_is_refused(org: Org) -> None:
    other = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    (org.root / "org.pub").write_text(other + "\n")
    code, _, err = org.run("revoke", "--dir", str(org.root), "--label", "alice")
    assert code == 1
    assert "does not match" in err


def test_an_org_key_others_can_read_is_refused(org: Org) -> None:
    (org.root / "org.key").chmod(0o644)
    code, _, err = org.run("sign", "--dir", str(org.root))
    assert code == 1
    assert "readable by other users (mode 0644)" in err
    assert org.keyring().version == 1


def test_the_amanat_command_runs_as_a_process(org: Org) -> None:
    """The console entry point, in a real process: what an operator types."""
    result = subprocess.run(
        [sys.executable, "-m", "dropbox.cli", "keys", "verify", "--dir", str(org.root)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("keyring OK: version 1")
