"""The private Tor network itself, and onion/ against it."""

from __future__ import annotations

import pytest

from onion.controller import TorController

pytestmark = pytest.mark.tor


async def test_service_tor_is_bootstrapped(service_tor: TorController) -> None:
    state = await service_tor.bootstrap_state()
    assert state.done
    assert (await service_tor.version()).startswith("0.")
