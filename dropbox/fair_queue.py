"""A bounded wait queue for scarce work (Argon2id runs), served best rank first.

There is no global refusal: every attempt either gets a slot, waits in line, or, when the line is
full, is told at once that the service is busy. When the line is full and a better-ranked attempt
arrives, the worst-ranked waiter is told "busy" instead, so a flood that ranks badly (fresh forms)
can fill the line but never keeps a better-ranked attempt out of it. Every wait has a deadline.

A rank is a tuple compared as usual, lower first; `KeyDeriver` builds it from the form token
(proven forms before fresh ones, then older forms first). Ties are served in arrival order.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from keys.errors import BusyError

Rank = tuple[int, float]


@dataclass(order=True)
class _Waiter:
    rank: Rank
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class FairQueue:
    """At most `slots` holders at once, of which at most `slots - reserved` may rank in a class
    above 0 (fresh forms): the reserved slots are kept for proven attempts, so a real source never
    waits behind the flood's derivations already running. At most `max_waiting` more wait, for at
    most `max_wait` seconds each. Raises BusyError (from `slot`) to whoever cannot be served."""

    def __init__(self, slots: int, max_waiting: int, max_wait: float, reserved: int = 0) -> None:
        if not 0 <= reserved < slots:
            raise ValueError("reserved slots must leave at least one for everyone")
        self.slots = slots
        self.reserved = reserved
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self._running = 0
        self._running_unproven = 0
        self._waiting: list[_Waiter] = []  # sorted, best first
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return self._running

    @contextlib.asynccontextmanager
    async def slot(self, rank: Rank) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        await self._acquire(rank)
        try:
            yield
        finally:
            self._release(rank)

    async def _acquire(self, rank: Rank) -> None:
        if not self._waiting and self._free_for(rank):
            self._take(rank)
            return
        waiter = _Waiter(rank, next(self._seq), asyncio.get_running_loop().create_future())
        if len(self._waiting) >= self.max_waiting:
            if not self._waiting or not waiter < self._waiting[-1]:
                raise BusyError("the wait queue is full")
            self._waiting.pop().future.set_exception(BusyError("displaced by a better rank"))
        bisect.insort(self._waiting, waiter)
        self._dispatch()
        try:
            async with asyncio.timeout(self.max_wait):
                await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise BusyError("waited too long") from None
        except BaseException:  # displaced (BusyError) or cancelled
            self._abandon(waiter)
            raise

    def _free_for(self, rank: Rank) -> bool:
        if self._running >= self.slots:
            return False
        return rank[0] == 0 or self._running_unproven < self.slots - self.reserved

    def _take(self, rank: Rank) -> None:
        self._running += 1
        if rank[0] != 0:
            self._running_unproven += 1

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gives up: out of the line, or, if a slot was handed to it meanwhile, the slot
        goes to the next one."""
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            return
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self._release(waiter.rank)

    def _release(self, rank: Rank) -> None:
        self._running -= 1
        if rank[0] != 0:
            self._running_unproven -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the best waiters that may take them."""
        for waiter in list(self._waiting):
            if self._running >= self.slots:
                return
            if waiter.future.done():  # cancelled meanwhile; it removes itself
                continue
            if self._free_for(waiter.rank):
                self._waiting.remove(waiter)
                self._take(waiter.rank)
                waiter.future.set_result(None)
