"""`amanat`: the server-side command line. Each command group lives next to the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from keys.errors import AmanatError

# Each module exposes `register(subparsers)` and sets `run=<callable(args) -> int>` on its parsers.
COMMAND_MODULES = (
    "keys.cli",  # amanat keys ...
    "dropbox.serve_cli",  # amanat serve, amanat demo
    "dropbox.transfer_cli",  # amanat export, amanat transfer ...
    "onion.cli",  # amanat onion ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amanat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except AmanatError as exc:
        print(f"amanat: {exc}", file=sys.stderr)
        status: int = getattr(exc, "exit_status", 1)  # e.g. 2: tor could not route a transfer
        return status
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
