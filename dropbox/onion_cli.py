"""`amanat onion status | add-client NAME | revoke-client NAME`: the server's commands for its
onions. They read the server's config and hand onion/ only its OnionSettings."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from keys.errors import AmanatError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat onion ...` to `amanat`."""
    onion = subparsers.add_parser("onion", help="the Tor onion services: status and client keys")
    sub = onion.add_subparsers(dest="onion_command", required=True, metavar="ACTION")

    status = sub.add_parser("status", help="tor, the onion services, and a fetch through tor")
    status.add_argument("--no-self-check", action="store_true",
                        help="skip fetching the landing page through tor's SOCKS port")
    status.add_argument("--json", action="store_true",
                        help="the same fields as JSON, for monitoring; the exit status is 0 ok, "
                        "1 degraded, 2 down, 3 unknown (docs/deploy.md)")
    status.set_defaults(run=run_status)

    add = sub.add_parser("add-client", help="authorize an investigator workstation for the "
                         "transfer onion; prints the line for its ClientOnionAuthDir, once")
    add.add_argument("name", metavar="NAME",
                     help="a label for the workstation (letters, digits, . _ -)")
    add.set_defaults(run=run_add_client)

    revoke = sub.add_parser("revoke-client", help="remove a workstation's transfer onion key")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=run_revoke_client)

    for parser in (status, add, revoke):
        parser.add_argument("--config", metavar="FILE",
                            required=True, type=Path, help="the TOML config file")


def run_status(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from keys.errors import TorError
    from onion.publish import status
    from onion.status import DOWN, EXIT_STATUS

    try:
        config = load_config(args.config)
    except AmanatError as exc:
        return _status_unknown(args, str(exc))
    try:
        report = asyncio.run(status(config.onion_settings(), self_check=not args.no_self_check))
    except TorError as exc:  # no tor to ask, or it failed us: the onions are down
        _say(args, {"state": DOWN, "error": str(exc)}, f"amanat: {exc}\nstate:           down")
        return EXIT_STATUS[DOWN]
    except AmanatError as exc:
        return _status_unknown(args, str(exc))
    print(report.to_json() if args.json else report.render())
    return EXIT_STATUS[report.state]


def _status_unknown(args: argparse.Namespace, error: str) -> int:
    _say(args, {"state": "unknown", "error": error}, f"amanat: {error}\nstate:           unknown")
    return 3


def _say(args: argparse.Namespace, fields: dict[str, str], text: str) -> None:
    print(json.dumps(fields, indent=1) if args.json else text, file=sys.stdout if args.json
          else sys.stderr)


def run_add_client(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from onion.publish import add_client

    line = asyncio.run(add_client(load_config(args.config).onion_settings(), args.name))
    print(
        f"# Transfer onion key for {args.name!r}: shown once, not kept on this server.\n"
        "# On the workstation, save the next line as "
        f"/var/lib/tor/onion_auth/amanat-{args.name}.auth_private\n"
        "# (ClientOnionAuthDir /var/lib/tor/onion_auth in its torrc), mode 0600, owner debian-tor."
    )
    print(line)
    return 0


def run_revoke_client(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from onion.publish import revoke_client

    asyncio.run(revoke_client(load_config(args.config).onion_settings(), args.name))
    print(f"amanat: revoked {args.name!r}; its key no longer opens the transfer onion")
    return 0
