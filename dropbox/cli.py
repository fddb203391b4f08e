"""`amanat`: the server-side command line. Each command group lives next to the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from keys import command

# Each module exposes `register(subparsers)` and sets `run=<callable(args) -> int>` on its parsers.
# Only the module of the command being run is imported: the organization-key machine has neither
# aiohttp nor stem, and `amanat keys` must run there. The help lines here are what `amanat --help`
# shows for the groups it did not import.
COMMANDS: dict[str, tuple[str, str]] = {
    "keys": ("keys.cli", "the organization key and the signed keyring"),
    "serve": ("dropbox.serve_cli", "run the intake service from a config file"),
    "demo": (
        "dropbox.demo",
        "create a throwaway organization in DIR (if absent) and serve it",
    ),
    "export": (
        "dropbox.transfer_cli",
        "write a signed bundle of every unacknowledged submission (on the server host)",
    ),
    "transfer": ("workstation.cli", "signed transfers with the server"),
    "onion": ("dropbox.onion_cli", "the Tor onion services: status and client keys"),
}


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command group named on the command line (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amanat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen_command(argv)
    module = COMMANDS[chosen][0] if chosen in COMMANDS else None
    if module is not None:
        importlib.import_module(module).register(sub)
    for name, (owner, text) in COMMANDS.items():
        if owner != module:
            sub.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    return command.run("amanat", args)


if __name__ == "__main__":
    sys.exit(main())
