"""dropbox.periodic.every: background work that stops with its application."""

from __future__ import annotations

import asyncio

from dropbox import periodic


async def test_work_runs_at_start_only_when_asked_and_stops_on_exit() -> None:
    calls: list[str] = []

    async def work_a() -> None:
        calls.append("a")

    async def work_b() -> None:
        calls.append("b")

    async with periodic.every(3600, work_a, at_start=True), periodic.every(3600, work_b):
        await asyncio.sleep(0.05)
    assert calls == ["a"]
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_work_repeats_until_the_block_ends() -> None:
    ran = asyncio.Event()
    count = 0

    async def work() -> None:
        nonlocal count
        count += 1
        if count == 3:
            ran.set()

    async with periodic.every(0.001, work):
        await asyncio.wait_for(ran.wait(), 10)
    stopped_at = count
    await asyncio.sleep(0.02)
    assert count == stopped_at >= 3


def test_seconds_to_midnight_utc() -> None:
    midnight = 1_764_374_400  # 2025-11-29T00:00:00Z
    assert periodic.seconds_to_midnight(midnight) == 86400
    assert periodic.seconds_to_midnight(midnight + 1.5) == 86398.5
    assert periodic.seconds_to_midnight(midnight - 10) == 10


async def test_daily_work_runs_at_start_and_then_waits_for_midnight(monkeypatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(3600)

    calls = []

    async def work() -> None:
        calls.append(1)

    monkeypatch.setattr(periodic.asyncio, "sleep", sleep)
    async with periodic.daily(work, at_start=True):
        await real_sleep(0.05)
    assert calls == [1]
    assert len(waits) == 1
    assert 0 < waits[0] <= 86400
    assert abs(waits[0] - periodic.seconds_to_midnight()) < 5
