"""The short soak (issue 15, section 3): 100 sources upload at 20 KB/s for 60 s, one file after
another, while visitors load pages and sources log in. No submission fails, no page load fails,
and every stored ciphertext decrypts with the stock `age` binary to exactly what a source was
told had arrived. The 1,000-source, 10-minute version with its figures: bench/bench_soak.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from soak import SoakPlan, run_soak
from tornet import report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("age") is None, reason="the age binary is not installed"),
]


async def test_100_sources_at_tor_speed_for_60_s_lose_nothing(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    result = await run_soak(SoakPlan(sources=100, seconds=60), tmp_path)
    report("short soak: " + result.describe(), pytestconfig)
    tally = result.tally
    assert tally.failures == [], (tally.failures[:10], result.server_errors[:10])
    assert result.server_errors == []
    acknowledged = sum(tally.sent.values())
    assert acknowledged >= 100 * 5, acknowledged  # each source sent a file every 10 s or so
    assert result.stored == acknowledged
    assert result.undecryptable == [], result.undecryptable[:10]
    # a message, a file and a manifest each, and the warm-up's
    assert result.decrypted == 3 * (acknowledged + 1)
    assert tally.page_failures == [], tally.page_failures[:10]
    assert tally.landing
    assert tally.logins
    assert tally.login_failures == [], tally.login_failures[:10]
