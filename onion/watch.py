"""Keeping the onions up while Amanat serves.

Ephemeral onions (ADD_ONION) live only as long as the tor process: when the system's tor restarts
(an upgrade, a crash, a reboot of tor alone) they are gone, and a drop nobody can reach loses
every testimony that would have come. So while the service runs, `OnionWatch` looks at tor every
`interval` seconds: it reconnects when the control connection broke (in "attach" mode; a tor we
launched ourselves cannot come back, and that is reported as an error), and publishes again,
with the same persistent keys and so the same addresses, every service tor no longer lists.
Services that torrc defines are tor's own business and are not touched.

`missing_services` is the decision, kept free of I/O so it is tested by feeding it what tor said.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from keys.errors import TorError
from onion.controller import TorController
from onion.services import PublishedService

log = logging.getLogger("amanat.onion")

DEFAULT_INTERVAL = 30.0

# Publishes the named services of `current` again on this controller; returns them all.
Republish = Callable[
    [TorController, set[str], list[PublishedService]], Awaitable[list[PublishedService]]
]
Reconnect = Callable[[], Awaitable[TorController]]


def missing_services(
    services: Sequence[PublishedService], detached_ids: Sequence[str]
) -> list[PublishedService]:
    """The ephemeral services of `services` whose address tor no longer lists."""
    present = set(detached_ids)
    return [s for s in services if not s.torrc_dir and s.address not in present]


class OnionWatch:
    """Run `run()` as a task beside the server; cancel it to stop, then `close()`.

    `controller` is always the connection in use (a reconnect replaces it); the watch closes the
    connections it opened itself, never the one it was given.
    """

    def __init__(
        self,
        controller: TorController,
        services: list[PublishedService],
        republish: Republish,
        reconnect: Reconnect | None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.controller = controller
        self.services = services
        self._republish = republish
        self._reconnect = reconnect
        self._interval = interval
        self._owned: TorController | None = None
        self.republished = 0  # how many times services had to be published again

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except TorError as exc:
                log.error("onion watch: %s; trying again in %.0f s", exc, self._interval)

    async def check_once(self) -> None:
        """One look at tor: reconnect if needed, then publish what is missing."""
        try:
            detached = await self.controller.onion_ids(detached=True)
        except TorError as exc:
            if self._reconnect is None:
                raise TorError(
                    f"the tor Amanat launched does not answer ({exc}): the onions are down "
                    "until Amanat restarts"
                ) from exc
            log.error("onion watch: lost the control connection to tor (%s); reconnecting", exc)
            await self._use(await self._reconnect())
            detached = await self.controller.onion_ids(detached=True)
        missing = missing_services(self.services, detached)
        if not missing:
            return
        names = {s.name for s in missing}
        log.error("onion watch: tor no longer serves the %s onion; publishing it again",
                  ", ".join(sorted(names)))
        self.services = await self._republish(self.controller, names, self.services)
        back = names & {s.name for s in self.services}
        if back:
            self.republished += 1
            log.warning("onion watch: tor serves the %s onion again (its descriptor upload "
                        "follows)", ", ".join(sorted(back)))
        if names - back:
            log.warning("onion watch: the %s onion is no longer wanted (no client keys left)",
                        ", ".join(sorted(names - back)))

    async def _use(self, controller: TorController) -> None:
        await self.close()
        self.controller = self._owned = controller

    async def close(self) -> None:
        if self._owned is not None:
            with contextlib.suppress(TorError):
                await self._owned.close()
            self._owned = None
