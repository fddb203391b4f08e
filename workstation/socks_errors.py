"""What a SOCKS failure on the way to the transfer onion means, in one sentence.

A workstation reaches the transfer onion through tor's SOCKS port. aiohttp-socks reports tor's
answers as `ProxyError` (with tor's `ExtendedErrors` code, 0xF0-0xF7, only in its message),
`ProxyConnectionError` (nothing listens on the port) and `ProxyTimeoutError`, none of them an
`OSError` or `aiohttp.ClientError`. `socks_retrying` runs one connection attempt, tries again
while tor says the onion is not reachable *yet* (right after a key was saved and tor reloaded it,
tor answers 0x04 for a few seconds), and turns every failure into a `SocksRouteError` whose
message says what to do. Nothing was sent to the server when the SOCKS connection failed, so a
second attempt cannot repeat a request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

from keys.errors import TransferError

T = TypeVar("T")

# tor's SOCKS5 answers (RFC 1928 codes, and tor's ExtendedErrors, tor-spec socks-extensions.txt)
NOT_AUTHORIZED = 0xF4
WRONG_AUTHORIZATION = 0xF5
BAD_ADDRESS = 0xF6
# The onion is not reachable *now*: not published yet, intro/rendezvous failed, tor just reloaded.
NOT_YET = frozenset({0x01, 0x04, 0x06, 0xF0, 0xF2, 0xF3, 0xF7})
# Without ExtendedErrors on its SocksPort, tor answers 0x04 for a missing client key too.
PLAIN_CODES_HINT = (" (Without `ExtendedErrors` on its SocksPort, tor gives the same answer when "
                    "this workstation has no key for the transfer onion: see docs/deploy.md, "
                    "section 4.)")
RETRY_FOR = 25.0  # seconds of "not yet" answers before giving up (tor needs ~5 s after a reload)
RETRY_PAUSE = 3.0


class SocksRouteError(TransferError):
    """tor could not (or would not) connect this workstation to the transfer onion."""

    exit_status = 2  # `amanat` exits 2: the route, not the server or the input, failed


def socks_code(exc: ProxyError) -> int | None:
    """tor's reply code; python-socks keeps it only for RFC 1928 codes, else in the message."""
    if exc.error_code is not None:
        return int(exc.error_code)
    found = re.search(r"0X([0-9A-F]{2})\b", str(exc).upper())
    return int(found.group(1), 16) if found else None


def explain(exc: Exception, socks: tuple[str, int]) -> str:
    """The sentence for a SOCKS failure (pure; `exc` is one of aiohttp-socks' errors)."""
    where = f"{socks[0]}:{socks[1]}"
    if isinstance(exc, ProxyConnectionError):
        return (f"nothing answers on {where}: tor is not running on that port. Start tor "
                "(systemctl start tor) or give --socks the port of tor's SocksPort.")
    if isinstance(exc, ProxyTimeoutError):
        return f"tor on {where} did not answer in time; is it still starting? Try again."
    code = socks_code(exc) if isinstance(exc, ProxyError) else None
    shown = explain_code(exc)
    if code == NOT_AUTHORIZED:
        return (f"this workstation is not authorized for the transfer onion (tor answered "
                f"{shown}: missing client authorization). Ask the server's operator for a key "
                "(`amanat onion add-client NAME`), save the line in tor's ClientOnionAuthDir, "
                "reload tor and try again (docs/deploy.md, section 4).")
    if code == WRONG_AUTHORIZATION:
        return (f"tor holds a client key for the transfer onion that it does not accept "
                f"({shown}: wrong client authorization): it was revoked, or is for another "
                "onion. Ask the server's operator for a new one.")
    if code == BAD_ADDRESS:
        return f"--url is not a valid onion address (tor answered {shown})."
    if code in NOT_YET:
        return (f"the transfer onion is not reachable yet (tor answered {shown}). It may have "
                "just been published, or tor just took a new key: try again in a minute; if "
                "it stays so, the server's operator can check `amanat onion status`."
                + (PLAIN_CODES_HINT if code < 0x80 else ""))
    return f"tor on {where} could not connect to the transfer onion ({shown}: {exc})."


def _not_yet(exc: Exception) -> bool:
    return isinstance(exc, ProxyError) and socks_code(exc) in NOT_YET


async def socks_retrying(
    attempt: Callable[[], Awaitable[T]],
    socks: tuple[str, int] | None,
    say: Callable[[str], None],
    *,
    retry_for: float | None = None,
    pause: float | None = None,
) -> T:
    """`attempt()`, again while tor answers "not reachable yet" (for up to `retry_for` s,
    default RETRY_FOR); any SOCKS failure leaves as a `SocksRouteError`. `say` hears about
    each wait."""
    pause = RETRY_PAUSE if pause is None else pause
    deadline = time.monotonic() + (RETRY_FOR if retry_for is None else retry_for)
    while True:
        try:
            return await attempt()
        except (ProxyError, ProxyConnectionError, ProxyTimeoutError) as exc:
            if socks is None:  # not through tor: nothing to explain
                raise
            if not _not_yet(exc) or time.monotonic() + pause > deadline:
                raise SocksRouteError(explain(exc, socks)) from None
            say(f"tor: the transfer onion is not reachable yet ({explain_code(exc)}); "
                f"trying again in {pause:.0f} s")
        await asyncio.sleep(pause)


def explain_code(exc: Exception) -> str:
    code = socks_code(exc) if isinstance(exc, ProxyError) else None
    return f"0x{code:02X}" if code is not None else type(exc).__name__
