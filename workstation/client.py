"""The signed transfer client: every request to the transfer onion signed with the
investigator's transfer credential (docs/format.md, 3.5 and 6), through tor's SOCKS port."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

import aiohttp
from nacl.signing import SigningKey

from keys.errors import InputError, TransferError
from keys.progress import Progress
from keys.sanitize import clean
from keys.transfer_auth import EMPTY_SHA256, sign_request
from workstation.socks_errors import socks_retrying

if TYPE_CHECKING:
    pass

CHUNK = 256 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=600)


class TransferClientError(TransferError):
    """The transfer server refused a request, or could not be reached."""


class UsageError(InputError):
    """The command line asks for something unsafe or impossible."""


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
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.base, self.proxy = check_route(url, socks)
        self.say = say  # hears about each wait for tor (the CLI prints it on stderr)
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
            response = await socks_retrying(attempt, self.proxy, self.say)
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
            answer = await response.json()
        if not isinstance(answer, dict):
            raise TransferClientError(f"the transfer server answered {path} with no JSON object")
        return cast(dict[str, Any], _cleaned(answer))


async def _refusal(response: aiohttp.ClientResponse) -> TransferClientError:
    async with response:
        try:
            data = await response.json(content_type=None)
            code, message = data["error"], data["message"]
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            code, message = "http_error", response.reason or ""
    code, message = clean(str(code), single_line=True)[:80], clean(str(message))[:2000]
    return TransferClientError(f"the transfer server refused ({response.status} {code}): {message}")


def _cleaned(value: Any) -> Any:
    """The server's answer with every string made safe for a terminal: a compromised server must
    not move the cursor, retitle the window or fake a line of our own output."""
    if isinstance(value, str):
        return clean(value, single_line=True)
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, dict):
        return {_cleaned(k): _cleaned(v) for k, v in value.items()}
    return value


# --- command registration ---------------------------------------------------------------------
