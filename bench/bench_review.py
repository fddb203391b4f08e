"""Review tool: import + indexing of 10,000 small submissions, and search latency over them.

Prints absolute numbers and ratios measured side by side in this one run (the machine is shared
and noisy, so compare ratios across runs rather than raw rates):
  - import rate vs. the rate of bundle verification alone (how much the vault work costs on top);
  - the rate of decrypting every message and manifest from the vault (search reads them there),
    and the search-index build rate;
  - search p50/p99 with the index vs. a naive per-document normalize-and-find loop;
  - a cold `amanat-review search` process (identity KDF + state decryption + search).

    .venv/bin/python bench/bench_review.py [N]
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

from test_review_kit import (  # noqa: E402
    PASSPHRASE,
    Submission,
    build_bundle,
    make_org,
)

from keys.bundle import read_bundle, transfer_key_lookup  # noqa: E402
from keys.identity_file import protect_identity  # noqa: E402
from review.importer import import_bundle  # noqa: E402
from review.search import SearchIndex, normalize  # noqa: E402
from review.vault import Vault  # noqa: E402

WORDS_FA = [
    "خانه",
    "پولیس",
    "مدارک",
    "کابل",
    "پشاور",
    "خانواده",
    "تهدید",
    "کمپ",
    "شب",
    "روز",
    "کودک",
    "زن",
    "مرد",
    "کار",
    "بازار",
]
WORDS_PS = ["کور", "کورنۍ", "ګواښ", "پېښور", "ماشوم", "ښځه", "سړی", "کار", "ورځ", "شپه"]
WORDS_EN = [
    "police",
    "house",
    "documents",
    "family",
    "threat",
    "camp",
    "night",
    "day",
    "child",
    "deported",
    "border",
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS_FA + WORDS_PS + WORDS_EN) for _ in range(n))


def _submissions(n: int, rng: random.Random) -> list[Submission]:
    return [
        Submission(
            _text(rng, 60) + f" ref{i:05d}",
            answers={
                "city": rng.choice(["Peshawar", "Quetta", "Karachi"]),
                "story": _text(rng, 15),
            },
            source_id=f"src{i % 3000}",
        )
        for i in range(n)
    ]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = random.Random(1404)
    org = make_org(("Alice", "Bob"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        bundle_path = tmp / "bundle.tar"
        bundle_path.write_bytes(build_bundle(org, _submissions(n, rng)))
        size_mb = bundle_path.stat().st_size / 1e6
        print(
            f"built a {size_mb:.1f} MB bundle of {n} submissions in "
            f"{time.perf_counter() - t0:.1f} s (setup, not measured)"
        )

        t0 = time.perf_counter()
        with open(bundle_path, "rb") as f:
            read_bundle(f, transfer_key_lookup(org.transfer_key.verify_key))
        verify_s = time.perf_counter() - t0

        identity = protect_identity(org.investigators[0], PASSPHRASE, work_factor=10)
        vault = Vault.create(
            tmp / "vault", identity, org.keyring_doc, org.org_pub_doc, PASSPHRASE.encode()
        )
        t0 = time.perf_counter()
        import_bundle(vault, bundle_path)
        import_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        docs = vault.search_texts()  # every message and manifest decrypted, then cached
        decrypt_s = time.perf_counter() - t0
        vault.close()
        t0 = time.perf_counter()
        index = SearchIndex(docs)
        index_s = time.perf_counter() - t0

        queries = [rng.choice(WORDS_FA + WORDS_PS + WORDS_EN) for _ in range(100)]
        queries += [f"ref{rng.randrange(n):05d}" for _ in range(50)]
        queries += ["بيرون كردند", "nothing like this", "PESHAWAR", "۱۴۰۴"] * 5
        indexed, naive = [], []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q)
            indexed.append(time.perf_counter() - t0)
        for q in queries[:40]:
            t0 = time.perf_counter()
            needle = normalize(q)
            [doc_id for doc_id, text in docs if needle in normalize(text)]
            naive.append(time.perf_counter() - t0)

        cold = []
        passfile = tmp / "pass"
        passfile.write_text(PASSPHRASE)
        for q in ("پولیس", "ref00042", "Quetta"):
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "review.cli",
                    "search",
                    q,
                    "--json",
                    "--vault",
                    str(tmp / "vault"),
                    "--passphrase-file",
                    str(passfile),
                ],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            cold.append(time.perf_counter() - t0)

    p50, p99 = _percentiles(indexed)
    n50, _ = _percentiles(naive)
    print(f"verify bundle only:     {n / verify_s:10.0f} submissions/s ({verify_s:.2f} s)")
    print(
        f"import (verify+decrypt+store+save): {n / import_s:7.0f} submissions/s "
        f"({import_s:.2f} s); verification is {verify_s / import_s:.0%} of it"
    )
    print(f"first search (decrypt all, write search.age): {n / decrypt_s:.0f} submissions/s "
          f"({decrypt_s:.2f} s)")
    print(f"index build:            {n / index_s:10.0f} submissions/s ({index_s * 1000:.0f} ms)")
    print(
        f"search over {n}: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms "
        f"({len(indexed)} queries)"
    )
    print(f"naive per-document scan p50 {n50 * 1000:.1f} ms: index is {n50 / p50:.0f}x faster")
    print(
        f"cold `amanat-review search` process: median {statistics.median(cold):.2f} s "
        "(interpreter start, identity KDF at work factor 10, state decryption, search)"
    )


if __name__ == "__main__":
    main()
