"""`amanat export` and `amanat transfer ...`: moving ciphertext between server and workstation.

On the server host:

    amanat export --config FILE --out BUNDLE      a signed bundle of every unacknowledged item
    amanat transfer init-key --config FILE        create the transfer signing key ([transfer]
                                                  signing_key, mode 0600); prints its public half
                                                  for `amanat keys pin-transfer-key --key`

On the online workstation, through tor's SOCKS port to the client-authorized transfer onion
(`--socks` may be left out only for a loopback URL, as tests do):

    amanat transfer status --url URL --credential FILE [--json]
    amanat transfer pull   --url URL --credential FILE --out BUNDLE
    amanat transfer ack    --url URL --credential FILE (ID... | --bundle BUNDLE --keyring FILE
                           --org-pub FILE)
    amanat transfer push   --url URL --credential FILE REPLY-BUNDLE|OUTBOX...

Every request is signed with the investigator's transfer credential (docs/format.md, 3.5 and 6),
which opens nothing. The offline identity file never comes here: a file holding an age identity
is refused with a sentence saying why. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

import aiohttp
from nacl.signing import SigningKey

from dropbox.socks_errors import socks_retrying
from keys.bundle import TransferManifest
from keys.errors import ConfigError, InputError, TransferError
from keys.files import write_new
from keys.keyring import encode_key
from keys.manifest import IntakeLimits
from keys.passphrase import read_passphrase
from keys.transfer_auth import EMPTY_SHA256, sign_request

if TYPE_CHECKING:
    from dropbox.store import CiphertextStore
    from dropbox.transfer import PlannedBundle

CHUNK = 256 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=600)


class TransferClientError(TransferError):
    """The transfer server refused a request, or could not be reached."""


class UsageError(InputError):
    """The command line asks for something unsafe or impossible."""


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, every 10% otherwise."""

    WIDTH = 30

    def __init__(self, label: str, total: int | None, stream: Any = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_step, self.last_draw = -1, 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw > 0.1:
                self.last_draw = now
                print("\r" + self.line(), end="", file=self.stream, flush=True)
            return
        step = self.done * 10 // self.total if self.total else -1
        if step > self.last_step:
            self.last_step = step
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        print(("\r" if self.tty else "") + self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        mib = self.done / 2**20
        if not self.total:
            return f"{self.label}: {mib:.1f} MiB"
        share = min(self.done / self.total, 1.0)
        filled = int(share * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return f"{self.label}: [{bar}] {share:4.0%} {mib:.1f}/{self.total / 2**20:.1f} MiB"


# --- the signed client ------------------------------------------------------------------------


def check_route(url: str, socks: str | None) -> tuple[str, tuple[str, int] | None]:
    """The base URL and SOCKS address; refuses any route that would leave 127.0.0.0/8 without
    tor (a .onion without --socks, or a public host)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--url must be http://HOST[:PORT] (an onion, or loopback), not {url!r}")
    proxy = None
    if socks is not None:
        host, _, port = socks.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--socks must be HOST:PORT, e.g. 127.0.0.1:9050, not {socks!r}")
        proxy = (host, int(port))
    elif not _is_loopback(parts.hostname):
        raise UsageError(
            f"{parts.hostname} is not a loopback address: use --socks 127.0.0.1:9050 so the "
            "request goes through tor"
        )
    return url.rstrip("/"), proxy


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TransferClient:
    """Signed requests to the transfer API; use as `async with TransferClient(...) as c:`."""

    def __init__(
        self,
        url: str,
        signing_key: SigningKey,
        socks: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base, self.proxy = check_route(url, socks)
        self.prefix = urlsplit(self.base).path
        self.signing_key, self.clock = signing_key, clock
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TransferClient:
        connector: aiohttp.BaseConnector
        if self.proxy is not None:
            from aiohttp_socks import ProxyConnector, ProxyType

            # rdns: tor resolves the onion name; nothing is looked up locally.
            connector = ProxyConnector(
                proxy_type=ProxyType.SOCKS5, host=self.proxy[0], port=self.proxy[1], rdns=True
            )
        else:
            connector = aiohttp.TCPConnector()
        self.http = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.http is not None:
            await self.http.close()

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        return sign_request(self.signing_key, method, self.prefix + path, digest, self.clock())

    async def _send(self, method: str, path: str, body: bytes = b"") -> aiohttp.ClientResponse:
        assert self.http is not None, "use the client as an async context manager"
        http = self.http

        def attempt() -> Awaitable[aiohttp.ClientResponse]:
            headers = self.signed_headers(method, path, body)  # signed afresh for each try
            if body:
                headers["Content-Type"] = "application/octet-stream"
            return http.request(method, self.base + path, data=body or None, headers=headers)

        try:  # a SOCKS failure leaves as a SocksRouteError that says what to do
            response = await socks_retrying(attempt, self.proxy, _say)
        except (aiohttp.ClientError, OSError) as exc:
            raise TransferClientError(f"cannot reach the transfer server: {exc}") from None
        if response.status != 200:
            raise await _refusal(response)
        return response

    async def pull(self, out: BinaryIO, progress: Progress | None = None) -> int:
        """Stream a transfer bundle into `out`; returns its size. Raises on a short body."""
        response = await self._send("GET", "/v1/pull")
        written = 0
        if progress is not None:
            progress.total = response.content_length
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                out.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress.update(len(chunk))
        except (aiohttp.ClientError, OSError) as exc:
            raise TransferClientError(f"the bundle download broke off: {exc}") from None
        finally:
            response.release()
        if response.content_length is not None and written != response.content_length:
            raise TransferClientError("the bundle download is incomplete")
        return written

    async def status(self) -> dict[str, Any]:
        return await self._json("GET", "/v1/status", b"")

    async def ack(self, submission_ids: Sequence[str]) -> dict[str, Any]:
        body = json.dumps({"submission_ids": list(submission_ids)}).encode()
        return await self._json("POST", "/v1/ack", body)

    async def push(self, bundle: bytes) -> dict[str, Any]:
        return await self._json("POST", "/v1/push", bundle)

    async def _json(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        response = await self._send(method, path, body)
        async with response:
            answer: dict[str, Any] = await response.json()
        return answer


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _refusal(response: aiohttp.ClientResponse) -> TransferClientError:
    async with response:
        try:
            data = await response.json(content_type=None)
            code, message = data["error"], data["message"]
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            code, message = "http_error", response.reason or ""
    return TransferClientError(f"the transfer server refused ({response.status} {code}): {message}")


# --- command registration ---------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `amanat export` and `amanat transfer ...`."""
    export = subparsers.add_parser(
        "export",
        help="write a signed bundle of every unacknowledged submission (on the server host)",
    )
    export.add_argument("--config", required=True, type=Path, help="the TOML config file")
    export.add_argument("--out", required=True, type=Path, help="the bundle to write (.tar)")
    export.set_defaults(run=run_export)

    group = subparsers.add_parser("transfer", help="signed transfers with the server")
    sub = group.add_subparsers(dest="transfer_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("init-key", help="create the server's transfer signing key")
    p.add_argument("--config", required=True, type=Path, help="the TOML config file")
    p.set_defaults(run=run_init_key)

    p = _client_parser(sub, "status", "what waits on the server for you (downloads nothing)")
    p.add_argument("--json", action="store_true", help="answer in JSON")
    p.set_defaults(run=run_status)
    p = _client_parser(sub, "pull", "download a signed bundle of every unacknowledged item")
    p.add_argument("--out", required=True, type=Path, help="the bundle to write (.tar)")
    p.set_defaults(run=run_pull)
    p = _client_parser(sub, "ack", "tell the server these submissions are safely imported")
    p.add_argument("ids", nargs="*", metavar="ID", help="submission ids")
    p.add_argument(
        "--bundle",
        type=Path,
        help="acknowledge every submission of this bundle, once it verifies against the keyring",
    )
    p.add_argument("--keyring", type=Path, help="the keyring (keyring.json), for --bundle")
    p.add_argument("--org-pub", type=Path, help="the organization public key, for --bundle")
    p.set_defaults(run=run_ack)
    p = _client_parser(sub, "push", "send reply bundles (files, or OUTBOX folders of them)")
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    p.set_defaults(run=run_push)


def _client_parser(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    p.add_argument("--url", required=True, help="the transfer onion, http://....onion")
    p.add_argument("--socks", help="tor's SOCKS port, e.g. 127.0.0.1:9050")
    p.add_argument(
        "--credential",
        type=Path,
        help="your transfer credential (transfer.cred); never the offline identity file",
    )
    # Refused with a sentence (see _signing_key): the identity file must not be on this machine.
    p.add_argument("--identity", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--passphrase-file", type=Path, help="read the passphrase from this file")
    return p


# --- server-side commands ---------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from dropbox.intake import intake_limits
    from dropbox.server_keys import load_verified_keyring, read_instance_salt
    from dropbox.store import CiphertextStore
    from dropbox.transfer import instance_id, load_transfer_key

    config = load_config(args.config)
    keyring = load_verified_keyring(config)
    key = load_transfer_key(config.transfer.signing_key, keyring)
    store = CiphertextStore(config.storage.store_dir, config.storage.reserve_bytes)
    instance = instance_id(read_instance_salt(config))
    try:
        planned = asyncio.run(
            _plan_export(config.storage.database_url, instance, intake_limits(config.limits))
        )
        progress = Progress("export", planned.size)
        _write_new_file(args.out, lambda out: _export_to(out, planned, store, key, progress))
    finally:
        store.close()
    progress.finish()
    files = len(planned.manifest.files())
    print(f"exported {len(planned.submission_ids)} submission(s), {files} file(s), "
          f"{planned.size} bytes to {args.out}")
    return 0


async def _plan_export(url: str, instance: str, limits: IntakeLimits) -> PlannedBundle:
    from dropbox import db
    from dropbox.transfer import build_transfer

    await db.init_db(url)
    engine, maker = db.create_engine_and_sessionmaker(url)
    try:
        async with maker() as session:
            return await build_transfer(session, instance, db.today(), limits=limits)
    finally:
        await engine.dispose()


def _export_to(
    out: BinaryIO,
    planned: PlannedBundle,
    store: CiphertextStore,
    key: SigningKey,
    progress: Progress,
) -> None:
    from dropbox.transfer import write_transfer_bundle

    class Counting:
        def write(self, data: bytes) -> int:
            progress.update(len(data))
            return out.write(data)

    write_transfer_bundle(cast(BinaryIO, Counting()), planned, store, key)


def run_init_key(args: argparse.Namespace) -> int:
    from dropbox.config import load_config
    from dropbox.transfer import create_transfer_key

    config = load_config(args.config)
    if config.transfer.signing_key is None:
        raise ConfigError(f"{args.config}: set [transfer] signing_key to the key file's path")
    key = create_transfer_key(config.transfer.signing_key)
    print(f"transfer signing key written to {config.transfer.signing_key} (mode 0600)")
    print("its public half, for the organization to pin in the keyring:")
    print(f"  amanat keys pin-transfer-key --dir ORG-DIR --key {encode_key(key.verify_key)}")
    return 0


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
        async with TransferClient(args.url, key, args.socks) as client:
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
    return 0


def run_pull(args: argparse.Namespace) -> int:
    key = _signing_key(args)
    progress = Progress("pull", None)

    async def pull(out: BinaryIO) -> int:
        async with TransferClient(args.url, key, args.socks) as client:
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
        async with TransferClient(args.url, key, args.socks) as client:
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
        async with TransferClient(args.url, key, args.socks) as client:
            progress = Progress("push", len(paths))
            for path in paths:
                answer = await client.push(path.read_bytes())
                progress.update(1)
                print(f"{path}: stored {len(answer['stored'])} repl(ies), "
                      f"{len(answer['already_stored'])} already there")
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
