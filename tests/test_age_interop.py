"""Interop with the real `age` and `age-keygen` binaries, both ways, X25519 and passphrases.

`age` reads passphrases only from a terminal (/dev/tty), so those tests run it under a pseudo-
terminal that is its controlling terminal, and type the passphrase when it prompts.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import subprocess
import termios
import time
from pathlib import Path

import pytest

from keys.age import (
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    decrypt,
    encrypt,
)
from keys.errors import NoIdentityMatchError

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (shutil.which("age") and shutil.which("age-keygen")),
        reason="the age and age-keygen binaries are not installed (Debian package 'age')",
    ),
]

SIZES = [0, 1, 64 * 1024, 128 * 1024, 1024 * 1024 + 1]
PASSPHRASE = "correct horse battery staple"


def run(*args: str | Path, data: bytes = b"") -> bytes:
    result = subprocess.run(
        [str(a) for a in args], input=data, capture_output=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def run_with_terminal(*args: str | Path, passphrase: str) -> tuple[int, str]:
    """Run a command whose controlling terminal is a pty; answer each passphrase prompt."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [str(a) for a in args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # make the pty /dev/tty
    )
    os.close(slave)
    transcript = b""
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                output = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not output:
                break
            transcript += output
            prompts = transcript.lower().count(b"passphrase")
            if prompts > answered:
                answered = prompts
                os.write(master, passphrase.encode() + b"\n")
    finally:
        os.close(master)
    return process.wait(timeout=60), transcript.decode(errors="replace")


@pytest.fixture(scope="module")
def keygen_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, X25519Identity]:
    path = tmp_path_factory.mktemp("keys") / "age-keygen.txt"
    run("age-keygen", "-o", path)
    secret_lines = [line for line in path.read_text().splitlines() if line.startswith("AGE-")]
    assert len(secret_lines) == 1
    return path, X25519Identity.parse(secret_lines[0])


def test_keygen_keys_match_ours(
    keygen_identity: tuple[Path, X25519Identity], tmp_path: Path
) -> None:
    path, identity = keygen_identity
    assert run("age-keygen", "-y", path).decode().strip() == str(identity.recipient())
    ours = X25519Identity.generate()
    (tmp_path / "ours.txt").write_text(f"{ours}\n")
    assert run("age-keygen", "-y", tmp_path / "ours.txt").decode().strip() == str(ours.recipient())


@pytest.mark.parametrize("size", SIZES)
def test_ours_decrypted_by_age(
    keygen_identity: tuple[Path, X25519Identity], tmp_path: Path, size: int
) -> None:
    path, identity = keygen_identity
    plaintext = os.urandom(size)
    other = X25519Identity.generate()
    ciphertext = encrypt(plaintext, [other.recipient(), identity.recipient()])
    assert run("age", "-d", "-i", path, data=ciphertext) == plaintext
    # And an identity file written by us works for age too.
    (tmp_path / "other.txt").write_text(f"{other}\n")
    assert run("age", "-d", "-i", tmp_path / "other.txt", data=ciphertext) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_age_decrypted_by_ours(keygen_identity: tuple[Path, X25519Identity], size: int) -> None:
    _, identity = keygen_identity
    plaintext = os.urandom(size)
    other = X25519Identity.generate()
    ciphertext = run(
        "age", "-r", str(other.recipient()), "-r", str(identity.recipient()), data=plaintext
    )
    assert decrypt(ciphertext, [identity]) == plaintext
    assert decrypt(ciphertext, [other]) == plaintext
    with pytest.raises(NoIdentityMatchError):
        decrypt(ciphertext, [X25519Identity.generate()])


@pytest.mark.slow
def test_our_passphrase_protected_identity_opened_by_age(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    identity_text = f"# public key: {identity.recipient()}\n{identity}\n"
    # Default work factor (18), as `amanat keys add-investigator` writes it.
    (tmp_path / "key.age").write_bytes(
        encrypt(identity_text.encode(), [ScryptRecipient(PASSPHRASE)])
    )
    plaintext = os.urandom(100_000)
    (tmp_path / "submission.age").write_bytes(encrypt(plaintext, [identity.recipient()]))

    code, transcript = run_with_terminal(
        "age", "-d", "-o", tmp_path / "key.txt", tmp_path / "key.age", passphrase=PASSPHRASE
    )
    assert code == 0, transcript
    assert (tmp_path / "key.txt").read_text() == identity_text

    # age also accepts the encrypted identity file directly with -i.
    code, transcript = run_with_terminal(
        "age",
        "-d",
        "-i",
        tmp_path / "key.age",
        "-o",
        tmp_path / "out",
        tmp_path / "submission.age",
        passphrase=PASSPHRASE,
    )
    assert code == 0, transcript
    assert (tmp_path / "out").read_bytes() == plaintext


@pytest.mark.slow
def test_age_passphrase_file_opened_by_ours(tmp_path: Path) -> None:
    plaintext = os.urandom(64 * 1024 + 1)
    (tmp_path / "in").write_bytes(plaintext)
    code, transcript = run_with_terminal(
        "age", "-p", "-o", tmp_path / "in.age", tmp_path / "in", passphrase=PASSPHRASE
    )
    assert code == 0, transcript
    ciphertext = (tmp_path / "in.age").read_bytes()
    assert b"\n-> scrypt " in ciphertext
    assert decrypt(ciphertext, [ScryptIdentity(PASSPHRASE)]) == plaintext


def test_wrong_passphrase_refused_by_age(tmp_path: Path) -> None:
    (tmp_path / "f.age").write_bytes(encrypt(b"x", [ScryptRecipient(PASSPHRASE, work_factor=10)]))
    code, transcript = run_with_terminal(
        "age", "-d", "-o", tmp_path / "out", tmp_path / "f.age", passphrase="not it"
    )
    assert code != 0
    assert "incorrect passphrase" in transcript.lower()
    assert not (tmp_path / "out").exists() or (tmp_path / "out").read_bytes() == b""


def test_recipient_strings_accepted_by_age() -> None:
    recipient = X25519Recipient.parse(str(X25519Identity.generate().recipient()))
    assert run("age", "-r", str(recipient), data=b"hi").startswith(b"age-encryption.org/v1\n")
