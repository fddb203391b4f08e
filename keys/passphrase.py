"""Passphrases from a file or a terminal, by one rule for every command (`amanat keys`,
`amanat transfer`, `amanat-review`): a passphrase file holds the passphrase on its first line,
and whatever follows that line (a trailing empty line, a comment) is not part of it. Without a
file, the passphrase is typed at a terminal; without a terminal, that is an error in words, not
an EOFError."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from keys.errors import InputError
from keys.files import read_file


class PassphraseError(InputError):
    """No usable passphrase: none given, not text, or the two entries differ."""


def passphrase_from_file(path: Path) -> str:
    try:
        text = read_file(path, "passphrase").decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseError(f"the passphrase file {path} is not UTF-8 text") from None
    return text.splitlines()[0] if text else ""


def ask_passphrase(prompt: str, what: str, *, confirm: bool = False) -> str:
    """Typed at the terminal (twice when `confirm`); an error without a terminal."""
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"no passphrase for {what}: give its passphrase file option or run in a terminal"
        )
    passphrase = getpass.getpass(prompt)
    if confirm and getpass.getpass("Same passphrase again: ") != passphrase:
        raise PassphraseError("the two passphrases differ; nothing was written")
    return passphrase


def read_passphrase(path: Path | None, what: str) -> str:
    """The passphrase of `what` (a file or a vault), from `path` if given, else typed."""
    if path is not None:
        return passphrase_from_file(path)
    return ask_passphrase(f"Passphrase of {what}: ", what)
