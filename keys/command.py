"""What every Amanat command line shares (`amanat` on the server, the online workstation and the
organization-key machine; `amanat-review` on the review workstation): how a failure reaches the
person at the terminal, and the names its options show.

A failure is one line on stderr with the command's name, never a traceback: a missing file, a
missing terminal or a wrong passphrase is a mistake to correct, not a crash to report. Whatever the
line quotes (a server's answer, a file name from a bundle) may be hostile, so it goes through
keys.sanitize first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from keys.errors import AmanatError, WrongPassphraseError
from keys.sanitize import clean

Run = Callable[[argparse.Namespace], int]

# One metavar per kind of value, in every command, so that `--help` reads the same everywhere.
# tests/test_cli_metavars.py holds every option of both commands to this table.
METAVARS = {
    "file": "FILE",
    "dir": "DIR",
    "bundle": "BUNDLE",
    "text": "TEXT",
    "day": "DAY",
    "url": "URL",
    "name": "NAME",
    "number": "N",
    "id": "ID",
    "tag": "TAG",
    "address": "HOST:PORT",
    "key": "KEY",
    "source": "SOURCE",
}

# The status a failure exits with when its error names none (TorError names 2, for example).
FAILURE_STATUS = 1
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a ^C


def run(prog: str, args: argparse.Namespace) -> int:
    """Run the command `args.run` with its arguments; a failure becomes one line on stderr and an
    exit status."""
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return INTERRUPTED_STATUS
    except (AmanatError, OSError, EOFError) as exc:
        say_error(prog, describe(exc))
        return int(getattr(exc, "exit_status", FAILURE_STATUS))
    return status


def describe(exc: BaseException) -> str:
    """The sentence a person reads for `exc`."""
    if isinstance(exc, WrongPassphraseError):
        return f"wrong passphrase: {exc}"
    if isinstance(exc, EOFError):
        return "no terminal to read from: give the input as a file (see --help)"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}"
    return str(exc) or type(exc).__name__


def say_error(prog: str, text: str) -> None:
    print(f"{prog}: {clean(text)}", file=sys.stderr, flush=True)

