"""Background work that runs every so often for as long as an application runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

DAY_SECONDS = 86400


def seconds_to_midnight(now: float | None = None) -> float:
    """Seconds from `now` (default: the clock) to the next midnight UTC, in (0, 86400]."""
    moment = time.time() if now is None else now
    return DAY_SECONDS - moment % DAY_SECONDS


@contextlib.asynccontextmanager
async def every(seconds: float, work: Callable[[], Awaitable[None]], *,
                at_start: bool = False) -> AsyncIterator[None]:
    """Run `work` every `seconds` (first at once with `at_start`) while the block runs; the
    task is cancelled and awaited on the way out, so nothing outlives the application."""
    async with _repeating(lambda: seconds, work, at_start):
        yield


@contextlib.asynccontextmanager
async def daily(work: Callable[[], Awaitable[None]], *,
                at_start: bool = False) -> AsyncIterator[None]:
    """Run `work` at every midnight UTC (first at once with `at_start`) while the block runs:
    at a fixed hour, so that what it leaves on disk (file change times) tells only that hour."""
    async with _repeating(seconds_to_midnight, work, at_start):
        yield


@contextlib.asynccontextmanager
async def _repeating(wait: Callable[[], float], work: Callable[[], Awaitable[None]],
                     at_start: bool) -> AsyncIterator[None]:
    async def loop() -> None:
        if not at_start:
            await asyncio.sleep(wait())
        while True:
            await work()
            await asyncio.sleep(wait())

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
