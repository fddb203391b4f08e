"""`amanat transfer ...` on the online workstation, through tor's SOCKS port to the
client-authorized transfer onion (`--socks` may be left out only for a loopback URL, as tests do):

    amanat transfer status --url URL --credential FILE [--json]
    amanat transfer pull   --url URL --credential FILE --out BUNDLE
    amanat transfer ack    --url URL --credential FILE (ID... | --bundle BUNDLE --keyring FILE
                           --org-pub FILE)
    amanat transfer push   --url URL --credential FILE REPLY-BUNDLE|OUTBOX...

Every request is signed with the investigator's transfer credential (docs/format.md, 3.5 and 6),
which opens nothing. The offline identity file never comes here: a file holding an age identity
is refused with a sentence saying why. Progress goes to stderr, results to stdout.

`amanat transfer init-key` belongs to the server (dropbox/transfer_cli.py); it is listed here
because it shares the command group, and loads the server's code only when run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from nacl.signing import SigningKey

from keys.bundle import TransferManifest
from keys.errors import ConfigError
from keys.files import write_new
from keys.passphrase import read_passphrase
from keys.progress import Progress
from workstation.client import TransferClient, UsageError

if TYPE_CHECKING:
    pass

def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat transfer ...`."""
    group = subparsers.add_parser("transfer", help="signed transfers with the server")
    sub = group.add_subparsers(dest="transfer_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("init-key", help="create the server's transfer signing key")
    p.add_argument("--config", metavar="FILE",
                   required=True, type=Path, help="the TOML config file")
    p.set_defaults(run=_run_init_key)

    p = _client_parser(sub, "status", "what waits on the server for you (downloads nothing)")
    p.add_argument("--json", action="store_true", help="answer in JSON")
    p.set_defaults(run=run_status)
    p = _client_parser(sub, "pull", "download a signed bundle of every unacknowledged item")
    p.add_argument("--out", metavar="BUNDLE",
                   required=True, type=Path, help="the bundle to write (.tar)")
    p.set_defaults(run=run_pull)
    p = _client_parser(sub, "ack", "tell the server these submissions are safely imported")
    p.add_argument("ids", nargs="*", metavar="ID", help="submission ids")
    p.add_argument(
        "--bundle",
        type=Path,
        help="acknowledge every submission of this bundle, once it verifies against the keyring",
        metavar="BUNDLE",
    )
    p.add_argument("--keyring", metavar="FILE",
                   type=Path, help="the keyring (keyring.json), for --bundle")
    p.add_argument("--org-pub", metavar="FILE",
                   type=Path, help="the organization public key, for --bundle")
    p.set_defaults(run=run_ack)
    p = _client_parser(sub, "push", "send reply bundles (files, or OUTBOX folders of them)")
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    p.set_defaults(run=run_push)


def _run_init_key(args: argparse.Namespace) -> int:
    from dropbox.transfer_cli import run_init_key  # the server's: needs the server's packages

    return run_init_key(args)


def _client_parser(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    p.add_argument("--url", metavar="URL",
                   required=True, help="the transfer onion, http://....onion")
    p.add_argument("--socks", help="tor's SOCKS port, e.g. 127.0.0.1:9050", metavar="HOST:PORT")
    p.add_argument(
        "--credential",
        type=Path,
        help="your transfer credential (transfer.cred); never the offline identity file",
        metavar="FILE",
    )
    # Refused with a sentence (see _signing_key): the identity file must not be on this machine.
    p.add_argument("--identity", type=Path, help=argparse.SUPPRESS, metavar="FILE")
    p.add_argument("--passphrase-file", metavar="FILE",
                   type=Path, help="read the passphrase from this file")
    return p


# --- workstation commands ---------------------------------------------------------------------


def _signing_key(args: argparse.Namespace) -> SigningKey:
    """The transfer credential's key. A file with an age identity in it is refused before the
    passphrase is asked when it shows one, else as soon as it is decrypted."""
    from keys.identity_file import open_credential, refuse_plain_age_identity

    if args.identity is not None:
        raise UsageError(
            "--identity is refused: the identity file holds the age key that opens every "
            "testimony and must stay on the review workstation. Use --credential with your "
            "transfer credential (docs/deploy.md, \"Migrating to transfer credentials\")."
        )
    if args.credential is None:
        raise UsageError("give your transfer credential with --credential FILE")
    try:
        data = args.credential.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read the transfer credential {args.credential}: {exc.strerror}"
        ) from None
    what = str(args.credential)
    refuse_plain_age_identity(data, what)
    passphrase = read_passphrase(args.passphrase_file, what)
    return open_credential(data, passphrase, what).signing_key


def run_status(args: argparse.Namespace) -> int:
    key = _signing_key(args)

    async def status() -> dict[str, Any]:
        async with TransferClient(args.url, key, args.socks, say=_say) as client:
            return await client.status()

    answer = asyncio.run(status())
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return 0
    waiting = answer["waiting"]
    print(f"waiting for you: {waiting['submissions']} submission(s), {waiting['files']} file(s), "
          f"{waiting['bytes']} bytes")
    print(f"replies waiting for their sources: {waiting['replies']}")
    print(f"on the server, acknowledged by you: {answer['acknowledged_by_me']} submission(s)")
    deleted = _id_list(answer.get("replies_deleted_by_sources"))
    if deleted:
        more = " ..." if len(deleted) > MAX_IDS_SHOWN else ""
        shown = ", ".join(deleted[:MAX_IDS_SHOWN]) + more
        print(f"your replies their sources deleted ({len(deleted)}; when is not known): {shown}")
    return 0


MAX_IDS_SHOWN = 50


def _id_list(value: object) -> list[str]:
    """A list of ids from the server's answer (an older server sends none; anything else that
    is not a list of strings counts as none)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def run_pull(args: argparse.Namespace) -> int:
    key = _signing_key(args)
    progress = Progress("pull", None)

    async def pull(out: BinaryIO) -> int:
        async with TransferClient(args.url, key, args.socks, say=_say) as client:
            return await client.pull(out, progress)

    size = 0

    def write(out: BinaryIO) -> None:
        nonlocal size
        size = asyncio.run(pull(out))

    _write_new_file(args.out, write)
    progress.finish()
    print(f"pulled a bundle of {size} bytes to {args.out}; import it with `amanat-review import`")
    return 0


def run_ack(args: argparse.Namespace) -> int:
    ids = list(args.ids)
    if args.bundle is not None:
        ids += verified_submission_ids(args.bundle, args.keyring, args.org_pub)
    if not ids:
        raise UsageError("name the submission ids to acknowledge, or --bundle BUNDLE")
    key = _signing_key(args)

    async def ack() -> dict[str, Any]:
        async with TransferClient(args.url, key, args.socks, say=_say) as client:
            return await client.ack(ids)

    answer = asyncio.run(ack())
    print(f"acknowledged {len(answer['acknowledged'])}, already acknowledged by you "
          f"{len(answer['already_acknowledged'])}, unknown {len(answer['unknown'])}; "
          f"retention started for {len(answer['retention_started'])} (the organization's "
          f"policy is met); {answer['deleted']} ciphertext file(s) deleted (retention "
          f"{answer['retention_days']} day(s))")
    for unknown in answer["unknown"]:
        print(f"  not held by the server (never received, or acknowledged and deleted): {unknown}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    paths: list[Path] = []
    for path in args.bundles:
        paths += sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not paths:
        raise UsageError("no reply bundle (*.tar) found")
    key = _signing_key(args)

    async def push() -> None:
        async with TransferClient(args.url, key, args.socks, say=_say) as client:
            progress = Progress("push", len(paths))
            for path in paths:
                answer = await client.push(path.read_bytes())
                progress.update(1)
                gone = _id_list(answer.get("deleted_by_source"))
                print(f"{path}: stored {len(answer['stored'])} repl(ies), "
                      f"{len(answer['already_stored'])} already there"
                      + (f", {len(gone)} deleted by the source (not stored again)" if gone
                         else ""))
            progress.finish()

    asyncio.run(push())
    return 0


def verified_submission_ids(path: Path, keyring: Path | None, org_pub: Path | None) -> list[str]:
    """The submission ids of a transfer bundle, after the whole bundle verified: its signature
    against the transfer key the keyring pins, every file's size and SHA-256. An altered or
    truncated bundle is refused, so nothing is acknowledged that was not received whole."""
    from keys.bundle import read_bundle, transfer_key_lookup
    from keys.files import read_file
    from keys.keyring import load_keyring, parse_org_public_key

    if keyring is None or org_pub is None:
        raise UsageError(
            "--bundle needs --keyring FILE and --org-pub FILE to verify the bundle first"
        )
    pinned = parse_org_public_key(read_file(org_pub, "organization public key"))
    ring = load_keyring(read_file(keyring, "keyring"), pinned)
    if ring.transfer_verify_key is None:
        raise UsageError(f"{keyring} pins no transfer key: no bundle can be verified")
    try:
        with path.open("rb") as src:
            bundle = read_bundle(src, transfer_key_lookup(ring.transfer_verify_key))
    except OSError as exc:
        raise UsageError(f"cannot read the bundle {path}: {exc.strerror}") from None
    if not isinstance(bundle.manifest, TransferManifest):
        raise UsageError(f"{path} is a reply bundle, not a transfer bundle")
    return [item.submission_id for item in bundle.manifest.items]


def _write_new_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a new file (mode 0600) through `write`: a failure leaves no partial bundle behind,
    and an existing file is never overwritten."""
    try:
        write_new(path, write, secret=True)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
