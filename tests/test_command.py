"""keys.command.run: every failure of every command is one clean line on stderr and a status,
never a traceback (issue 14: a missing file or a missing terminal used to crash)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from keys.command import FAILURE_STATUS, INTERRUPTED_STATUS, run
from keys.errors import ConfigError, WrongPassphraseError
from workstation.socks_errors import SocksRouteError


def _args(behaviour: Callable[[], int]) -> argparse.Namespace:
    return argparse.Namespace(run=lambda _args: behaviour())


def _raise(exc: BaseException) -> Callable[[], int]:
    def behaviour() -> int:
        raise exc
    return behaviour


@pytest.mark.parametrize(("exc", "expected"), [
    (FileNotFoundError(2, "No such file or directory", "/no/such/vault"),
     "prog: /no/such/vault: No such file or directory\n"),
    (EOFError(), "prog: no terminal to read from: give the input as a file (see --help)\n"),
    (WrongPassphraseError("the vault v"), "prog: wrong passphrase: the vault v\n"),
    (ConfigError("[server] listen: \x1b]0;owned\x07bad\x1b[2J"),
     "prog: [server] listen: \ufffdbad\ufffd\n"),
])
def test_a_failure_is_one_clean_line(exc: BaseException, expected: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert run("prog", _args(_raise(exc))) == FAILURE_STATUS
    assert capsys.readouterr().err == expected


def test_an_error_may_name_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    exc = SocksRouteError("tor could not reach the transfer onion")
    assert run("amanat", _args(_raise(exc))) == 2
    assert "tor could not reach" in capsys.readouterr().err


def test_interrupt_and_success(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("prog", _args(_raise(KeyboardInterrupt()))) == INTERRUPTED_STATUS
    assert run("prog", _args(lambda: 0)) == 0
    assert capsys.readouterr().err == ""


def test_a_bug_still_shows_its_traceback() -> None:
    # Only the errors a person can correct are caught: a programming error must be reported.
    with pytest.raises(ZeroDivisionError):
        run("prog", _args(lambda: 1 // 0))


@pytest.mark.parametrize("argv", [
    ["amanat-review", "list", "--vault", "/no/such/vault"],
    ["amanat", "keys", "show", "--dir", "/no/such/org"],
])
def test_commands_without_a_terminal_or_a_file(argv: list[str], tmp_path: Path) -> None:
    """Real processes, stdin not a terminal: the error is one line, no traceback."""
    script = "import sys; from {m} import main; sys.exit(main(sys.argv[1:]))".format(
        m="review.cli" if argv[0] == "amanat-review" else "dropbox.cli")
    done = subprocess.run([sys.executable, "-c", script, *argv[1:]], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == FAILURE_STATUS
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
