"""Review tool: `list` and `show` must not slow down as messages grow (issue 11, section 3).

Two vaults side by side, each with N submissions (default 10,000): in A every message is short;
in B, K of them (default 100) are 4 MiB messages (the intake's default limit). Messages live as
encrypted objects in the stored bundle, not in the vault state, so A and B should cost the same
for `list`, and `show` of one small submission the same in both. Printed: state.age sizes, and
the median of cold `amanat-review list` / `show` processes in A and in B, with their ratio (the
machine is shared: compare ratios, not absolute numbers).

    .venv/bin/python bench/bench_review_large.py [N] [K]

K = N (10,000 messages of 4 MiB, a 40 GiB bundle) works too, given the disk and the time.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_review_kit import PASSPHRASE, Submission, build_bundle, make_org  # noqa: E402

from keys.identity_file import protect_identity  # noqa: E402
from review.importer import import_bundle  # noqa: E402
from review.vault import Vault  # noqa: E402

MIB = 1024 * 1024
BATCH = 1000  # submissions per bundle, so no bundle needs all messages in memory at once


def _vault(tmp: Path, name: str, org: object, subs: list[Submission]) -> tuple[Path, float]:
    identity = protect_identity(org.investigators[0], PASSPHRASE, work_factor=10)  # type: ignore[attr-defined]
    root = tmp / name
    vault = Vault.create(root, identity, org.keyring_doc, org.org_pub_doc, PASSPHRASE.encode())  # type: ignore[attr-defined]
    import_s = 0.0
    for start in range(0, len(subs), BATCH):
        bundle = tmp / f"{name}-{start}.tar"
        bundle.write_bytes(build_bundle(org, subs[start : start + BATCH]))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        import_bundle(vault, bundle)
        import_s += time.perf_counter() - t0
        bundle.unlink()
    vault.close()
    return root, import_s


def _once(vault: Path, passfile: Path, args: tuple[str, ...]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "review.cli", *args, "--vault", str(vault),
         "--passphrase-file", str(passfile)],
        check=True, capture_output=True, cwd=ROOT,
    )
    return time.perf_counter() - t0


def _cold(passfile: Path, *runs: tuple[Path, tuple[str, ...]], rounds: int = 5) -> list[float]:
    """Median time of each (vault, command), the commands taking turns so that noise from the
    shared machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for n, (vault, args) in enumerate(runs):
            times[n].append(_once(vault, passfile, args))
    return [statistics.median(t) for t in times]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rng = random.Random(11)
    org = make_org(("Alice",))
    big_text = "پولیس خانه " * (4 * MIB // 21)  # just under 4 MiB of UTF-8
    big_at = set(rng.sample(range(n), k))

    def subs(big: bool) -> list[Submission]:
        return [
            Submission(
                big_text if big and i in big_at else f"short testimony {i} " * 20,
                answers={"city": rng.choice(["Peshawar", "Quetta"])},
                submission_id=f"s{i:05d}",
            )
            for i in range(n)
        ]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        passfile = tmp / "pass"
        passfile.write_text(PASSPHRASE)
        small_vault, small_import = _vault(tmp, "A", org, subs(False))
        big_vault, big_import = _vault(tmp, "B", org, subs(True))
        state_a = (small_vault / "state.age").stat().st_size
        state_b = (big_vault / "state.age").stat().st_size
        bundles_b = sum(p.stat().st_size for p in (big_vault / "bundles").iterdir())
        one_small = f"s{min(set(range(n)) - big_at):05d}"
        one_big = f"s{min(big_at):05d}"
        list_a, list_b, show_a, show_b, show_big, open_only = _cold(
            passfile,
            (small_vault, ("list",)),
            (big_vault, ("list",)),
            (small_vault, ("show", one_small)),
            (big_vault, ("show", one_small)),
            (big_vault, ("show", one_big)),
            (big_vault, ("list", "--tag", "none")),
        )

    print(f"{n} submissions; in B, {k} carry a 4 MiB message ({bundles_b / 1e9:.2f} GB of bundles)")
    print(f"import: A {small_import:.1f} s, B {big_import:.1f} s")
    print(f"state.age: A {state_a / 1e6:.2f} MB, B {state_b / 1e6:.2f} MB "
          f"(B/A {state_b / state_a:.2f})")
    print(f"cold `list`: A {list_a:.2f} s, B {list_b:.2f} s (B/A {list_b / list_a:.2f})")
    print(f"cold `show` small: A {show_a:.2f} s, B {show_b:.2f} s (B/A {show_b / show_a:.2f})")
    print(f"cold `show` of a 4 MiB message in B: {show_big:.2f} s "
          f"(vs. opening the vault alone {open_only:.2f} s)")


if __name__ == "__main__":
    main()
