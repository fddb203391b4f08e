"""`amanat onion status | add-client NAME | revoke-client NAME`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat onion ...` to `amanat`."""
    onion = subparsers.add_parser("onion", help="the Tor onion services: status and client keys")
    sub = onion.add_subparsers(dest="onion_command", required=True, metavar="ACTION")

    status = sub.add_parser("status", help="tor, the onion services, and a fetch through tor")
    status.add_argument("--no-self-check", action="store_true",
                        help="skip fetching the landing page through tor's SOCKS port")
    status.set_defaults(run=run_status)

    add = sub.add_parser("add-client", help="authorize an investigator workstation for the "
                         "transfer onion; prints the line for its ClientOnionAuthDir, once")
    add.add_argument("name", help="a label for the workstation (letters, digits, . _ -)")
    add.set_defaults(run=run_add_client)

    revoke = sub.add_parser("revoke-client", help="remove a workstation's transfer onion key")
    revoke.add_argument("name")
    revoke.set_defaults(run=run_revoke_client)

    for parser in (status, add, revoke):
        parser.add_argument("--config", required=True, type=Path, help="the TOML config file")


def run_status(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from onion.publish import status

    report = asyncio.run(status(load_config(args.config), self_check=not args.no_self_check))
    print(report.render())
    return 0 if report.ok else 1


def run_add_client(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from onion.publish import add_client

    line = asyncio.run(add_client(load_config(args.config), args.name))
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

    asyncio.run(revoke_client(load_config(args.config), args.name))
    print(f"amanat: revoked {args.name!r}; its key no longer opens the transfer onion")
    return 0
