"""One passphrase rule for every command (keys/passphrase.py): the first line of a passphrase
file; typed at a terminal otherwise; without a terminal, a sentence instead of an EOFError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from roles import ROOT

from keys.passphrase import PassphraseError, passphrase_from_file, read_passphrase


@pytest.mark.parametrize("content", [b"horse battery", b"horse battery\n", b"horse battery\n\n",
                                     b"horse battery\r\n", b"horse battery\nsecond line\n"])
def test_a_file_gives_its_first_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "p").write_bytes(content)
    assert passphrase_from_file(tmp_path / "p") == "horse battery"


def test_bad_files_are_sentences(tmp_path: Path) -> None:
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    with pytest.raises(PassphraseError, match="not UTF-8"):
        passphrase_from_file(tmp_path / "latin1")
    with pytest.raises(Exception, match="does not exist"):
        passphrase_from_file(tmp_path / "missing")


def test_no_terminal_is_a_sentence() -> None:
    # pytest's stdin is not a terminal
    with pytest.raises(PassphraseError, match="no passphrase for the vault v"):
        read_passphrase(None, "the vault v")


def test_review_without_a_terminal_says_so_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from review.cli import main; sys.exit(main())",
         "list", "--vault", str(tmp_path / "vault")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert "no passphrase for the vault" in result.stderr
    assert "Traceback" not in result.stderr
