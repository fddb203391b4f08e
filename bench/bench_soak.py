"""The Tor-speed soak (issue 15, section 3): 1,000 sources at 20 KB/s for 10 minutes.

    .venv/bin/python bench/bench_soak.py [--sources 1000] [--minutes 10] [--kb 1000]
                                         [--rate 20000]

One `amanat serve` process (cheapest KDF, SQLite, the local-folder store). Each source logs in,
then uploads a file of `--kb` KB at `--rate` bytes a second (in pieces of 4 KB, as through
Tor), then the next one, until `--minutes` have passed; uploads under way then finish. The
sources arrive spread over one file's sending time. Beside them two visitors load the landing
and start pages in a loop (a new connection each time) and two returning sources log in with a
codename or take a new one, in turn. Afterwards every ciphertext in the store is decrypted with
the stock `age` binary and matched against what the sources were told had arrived.

Printed: submissions acknowledged, failed, stored and decrypted; the server's RSS before, at
its peak and per open upload; the landing page's p50 and p99 under the load; logins. The soak
logic is tests/soak.py; tests/test_soak.py runs a short version (100 sources, 60 s). Traffic
goes only to 127.0.0.1, and the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from soak import SoakPlan, run_soak  # noqa: E402 - after the path set-up above


async def main(args: argparse.Namespace) -> int:
    plan = SoakPlan(sources=args.sources, seconds=args.minutes * 60, rate=args.rate,
                    file_bytes=args.kb * 1000)
    with tempfile.TemporaryDirectory(prefix="amanat-bench-soak-") as tmp:
        result = await run_soak(plan, Path(tmp))
    print(result.describe(), flush=True)
    tally = result.tally
    for line in (tally.failures[:5] + result.undecryptable[:5] + tally.page_failures[:5]
                 + tally.login_failures[:5] + sorted(set(result.server_errors))[:10]):
        print("  !", line[:300])
    lost = tally.failures or result.undecryptable or result.stored != sum(tally.sent.values())
    print("  verdict:", "FAILED" if lost else "zero failed submissions, every one decrypted by age")
    return 1 if lost else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--kb", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20_000)
    sys.exit(asyncio.run(main(parser.parse_args())))
