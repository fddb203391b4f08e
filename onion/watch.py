"""Keeping the onions up while Amanat serves.

Ephemeral onions (ADD_ONION) live only as long as the tor process: when the system's tor restarts
(an upgrade, a crash, a reboot of tor alone) they are gone, and a drop nobody can reach loses
every testimony that would have come. So while the service runs, `OnionWatch` looks at tor every
`interval` seconds: it reconnects when the control connection broke (in "attach" mode; a tor we
launched ourselves cannot come back, and that is reported as an error), and has every onion that
the persistent record expects published again, with the same keys and so the same addresses,
when tor no longer lists it or serves it with other client keys than the record names.

The record (keys and client keys in the data folder, and `services.json`) is read afresh on every
look, so an onion or client that another process added (`amanat onion add-client` while serving)
is kept up too. Services that torrc defines are tor's own business and are not touched.

`stale_services` is the decision, kept free of I/O so it is tested by feeding it what tor said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from keys.errors import AmanatError, TorError
from onion.controller import HsDescEvent, TorController
from onion.services import PublishedService, hsdir_fingerprint

log = logging.getLogger("amanat.onion")

DEFAULT_INTERVAL = 30.0

# Publishes again, on this controller, what the record expects and tor does not serve as recorded
# (given the ephemeral onions tor lists); returns (names published again, names no longer wanted).
Sync = Callable[[TorController, list[str]], Awaitable[tuple[set[str], set[str]]]]
Reconnect = Callable[[], Awaitable[TorController]]
OnUpload = Callable[[str, str], Awaitable[None]]  # (onion address, HSDir fingerprint)


def stale_services(
    expected: Sequence[PublishedService],
    recorded: Sequence[PublishedService],
    detached_ids: Sequence[str],
) -> list[PublishedService]:
    """The ephemeral services of `expected` that tor does not list, or that were last published
    (the record of `services.json`) with another address or other client keys."""
    present = set(detached_ids)
    last = {s.name: s for s in recorded}
    stale = []
    for s in expected:
        if s.torrc_dir:
            continue
        before = last.get(s.name)
        if (s.address not in present or before is None or before.address != s.address
                or before.clients != s.clients):
            stale.append(s)
    return stale


class OnionWatch:
    """Run `run()` as a task beside the server; cancel it to stop, then `close()`.

    `controller` is always the connection in use (a reconnect replaces it); the watch closes the
    connections it opened itself, never the one it was given. Between looks it listens to tor's
    HS_DESC events and hands each descriptor upload an HSDir took to `on_upload(address,
    hsdir)`; on a new connection it subscribes before it publishes anything, so that no upload
    goes unheard.
    """

    def __init__(
        self,
        controller: TorController,
        sync: Sync,
        reconnect: Reconnect | None,
        interval: float = DEFAULT_INTERVAL,
        on_upload: OnUpload | None = None,
    ) -> None:
        self.controller = controller
        self._sync = sync
        self._reconnect = reconnect
        self._interval = interval
        self._on_upload = on_upload
        self._owned: TorController | None = None
        self.republished = 0  # how many times services had to be published again

    async def run(self) -> None:
        while True:
            try:
                detached = await self._look()
                controller = self.controller
                async with controller.hs_desc_events() as events:
                    await self._apply(detached)
                    while True:
                        await self._hear_uploads(events)
                        detached = await self._look()
                        if self.controller is not controller:
                            break  # a new connection: subscribe there first, then publish
                        await self._apply(detached)
            except (AmanatError, OSError) as exc:  # a bad client key file, too: keep watching
                log.error("onion watch: %s; trying again in %.0f s", exc, self._interval)
                await asyncio.sleep(self._interval)

    async def check_once(self) -> None:
        """One look at tor: reconnect if needed, then publish what the record misses in tor."""
        await self._apply(await self._look())

    async def _look(self) -> list[str]:
        """The ephemeral onions tor lists; reconnects first when the connection broke."""
        try:
            return await self.controller.onion_ids(detached=True)
        except TorError as exc:
            if self._reconnect is None:
                raise TorError(
                    f"the tor Amanat launched does not answer ({exc}): the onions are down "
                    "until Amanat restarts"
                ) from exc
            log.error("onion watch: lost the control connection to tor (%s); reconnecting", exc)
            await self._use(await self._reconnect())
            return await self.controller.onion_ids(detached=True)

    async def _apply(self, detached: list[str]) -> None:
        back, dropped = await self._sync(self.controller, detached)
        if back:
            self.republished += 1
            log.warning("onion watch: tor serves the %s onion again (its descriptor upload "
                        "follows)", ", ".join(sorted(back)))
        if dropped:
            log.warning("onion watch: the %s onion is no longer wanted (no client keys left)",
                        ", ".join(sorted(dropped)))

    async def _hear_uploads(self, events: asyncio.Queue[HsDescEvent]) -> None:
        """Wait `interval` seconds, passing on each upload an HSDir took meanwhile."""
        deadline = time.monotonic() + self._interval
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(events.get(), remaining)
            except TimeoutError:
                return
            if event.action == "UPLOADED" and event.directory and self._on_upload is not None:
                await self._on_upload(event.address, hsdir_fingerprint(event.directory))

    async def _use(self, controller: TorController) -> None:
        await self.close()
        self.controller = self._owned = controller

    async def close(self) -> None:
        if self._owned is not None:
            with contextlib.suppress(TorError):
                await self._owned.close()
            self._owned = None
