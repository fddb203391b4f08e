"""The workbench (`amanat-review open`) over 10,000 submissions: opening it and sorting.

Prints absolute numbers and ratios measured side by side in this one run (the machine is shared
and noisy: compare ratios across runs rather than raw times):
  - opening the vault alone vs. opening the workbench on it (the vault, the queue's 10,000 rows
    built, sorted and put in the table, the first frame drawn headless);
  - sorting the queue in the pure module (review/queue.py) by urgency vs. by day, and 10,000 vs.
    1,000 rows (the sort should scale as n log n);
  - re-sorting in the workbench (the `s` key: sort and refill the table) vs. the pure sort alone
    (what the table costs on top).

    .venv/bin/python bench/bench_workbench.py [N]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_review_kit import PASSPHRASE, build_bundle, make_org  # noqa: E402
from test_review_report import make_submission  # noqa: E402

from keys.identity_file import protect_identity  # noqa: E402
from review.importer import import_bundle  # noqa: E402
from review.queue import Row, rows, sort_rows  # noqa: E402
from review.vault import Vault  # noqa: E402
from review.workbench import Options, Workbench  # noqa: E402

BATCH = 2000


def _median(work: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def _session(root: Path, out: Path) -> tuple[float, float, float, float]:
    """(open the vault, open the workbench to its first frame, one re-sort in it, the same
    re-sort until its frame is drawn)."""
    t0 = time.perf_counter()
    vault = Vault.open(root, PASSPHRASE.encode())
    opened = time.perf_counter() - t0
    try:
        app = Workbench(vault, Options(out=out))
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            shown = time.perf_counter() - t0
            resorts, drawn = [], []
            for _ in range(4):  # the `s` key's action, then the redraw
                t1 = time.perf_counter()
                app.action_sort()
                resorts.append(time.perf_counter() - t1)
                await pilot.pause()
                drawn.append(time.perf_counter() - t1)
            assert len(app.shown) == len(vault.submissions)
    finally:
        vault.close()
    return opened, shown, statistics.median(resorts), statistics.median(drawn)


def _vault(tmp: Path, n: int) -> Path:
    rng = random.Random(1313)
    org = make_org(("Alice",))
    identity = protect_identity(org.investigators[0], PASSPHRASE, work_factor=10)
    root = tmp / "vault"
    with Vault.create(root, identity, org.keyring_doc, org.org_pub_doc,
                      PASSPHRASE.encode()) as vault:
        for start in range(0, n, BATCH):
            subs = [make_submission(rng, f"src{i % 997}", rng.random() < 0.8)
                    for i in range(start, min(n, start + BATCH))]
            bundle = tmp / f"b{start}.tar"
            bundle.write_bytes(build_bundle(org, subs))
            import_bundle(vault, bundle)
            bundle.unlink()
    return root


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        root = _vault(tmp, n)
        print(f"{n} submissions imported in {time.perf_counter() - t0:.1f} s")
        sessions = [asyncio.run(_session(root, tmp)) for _ in range(3)]
        opened = statistics.median(s[0] for s in sessions)
        shown = statistics.median(s[1] for s in sessions)
        resort = statistics.median(s[2] for s in sessions)
        drawn = statistics.median(s[3] for s in sessions)
        with Vault.open(root, PASSPHRASE.encode()) as vault:
            subs = list(vault.submissions.values())
            replies = vault.replies
        build = _median(lambda: rows(subs, replies))
        queue: list[Row] = rows(subs, replies)
        small = queue[: len(queue) // 10]
        by_urgency = _median(lambda: sort_rows(queue, "urgency"))
        by_day = _median(lambda: sort_rows(queue, "day"))
        by_urgency_small = _median(lambda: sort_rows(small, "urgency"))

    print(f"open the vault alone:             {opened * 1000:8.1f} ms")
    print(f"open the workbench (first frame): {shown * 1000:8.1f} ms  "
          f"(x{shown / opened:.1f} the vault alone)")
    print(f"queue rows from the state:        {build * 1000:8.1f} ms")
    print(f"sort by urgency, {len(queue)} rows:      {by_urgency * 1000:8.1f} ms  "
          f"(by day {by_day * 1000:.1f} ms, urgency/day x{by_urgency / by_day:.2f})")
    print(f"sort by urgency, {len(small)} rows:       {by_urgency_small * 1000:8.1f} ms  "
          f"({len(queue)}/{len(small)} rows: x{by_urgency / by_urgency_small:.1f})")
    print(f"re-sort in the workbench (s key): {resort * 1000:8.1f} ms  "
          f"(x{resort / by_urgency:.1f} the pure sort; until drawn {drawn * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
