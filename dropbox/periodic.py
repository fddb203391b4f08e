"""Background work that runs every so often for as long as an application runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def every(seconds: float, work: Callable[[], Awaitable[None]], *,
                at_start: bool = False) -> AsyncIterator[None]:
    """Run `work` every `seconds` (first at once with `at_start`) while the block runs; the
    task is cancelled and awaited on the way out, so nothing outlives the application."""

    async def loop() -> None:
        if not at_start:
            await asyncio.sleep(seconds)
        while True:
            await work()
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
