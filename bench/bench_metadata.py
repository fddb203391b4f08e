"""What reading attachment metadata in the sandbox costs, and finding similar photos in a vault.

    .venv/bin/python bench/bench_metadata.py [--files 20] [--subs 10000] [--rounds 3]

1. Per attachment, on import: exiftool on one photo run plainly (subprocess, no limits), under
   rlimits only, and under bubblewrap + rlimits (review/sandbox.py); then the perceptual hash
   (imagehash's dHash: Python, Pillow and imagehash start in the sandbox). Interleaved, round
   after round; the best round of each, per file, with its ratio to the plain run.
2. `list` and `show` find duplicates and similar photos over the whole vault
   (review/duplicates.py): the bucketed search beside a plain pairwise comparison, over
   `--subs` submissions with one random 64-bit perceptual hash each.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evidence_files import gps_photo

from review.duplicates import SIMILAR_BITS, find_matches
from review.metadata import EXIFTOOL, exif_tags, perceptual_hash
from review.sandbox import Sandbox, detect
from review.state import FileRecord, SubmissionRecord


def best(runs: list[float]) -> float:
    return min(runs)


def per_file(files: int, rounds: int) -> None:
    photo = gps_photo(size=(1600, 1200))
    boxed, size = detect(), len(photo)
    methods: dict[str, Callable[[], object]] = {
        "exiftool, plain subprocess": lambda: subprocess.run(
            [*EXIFTOOL, "-"], input=photo, capture_output=True, check=True),
        "exiftool, rlimits only": lambda: exif_tags(Sandbox("rlimits"), lambda: [photo], size),
        f"exiftool, {boxed.mode}": lambda: exif_tags(boxed, lambda: [photo], size),
        f"dHash, {boxed.mode}": lambda: perceptual_hash(boxed, lambda: [photo]),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, run in methods.items():
            start = time.perf_counter()
            for _ in range(files):
                run()
            times[name].append((time.perf_counter() - start) / files)
    base = best(times["exiftool, plain subprocess"])
    print(f"per attachment ({len(photo)} B JPEG, best of {rounds} rounds of {files} files):")
    for name, runs in times.items():
        print(f"  {name:<30} {best(runs) * 1000:8.1f} ms   x{best(runs) / base:5.2f}")


def naive(subs: list[SubmissionRecord]) -> int:
    hashes = [(s["id"], int(s["files"][0]["phash"], 16)) for s in subs]
    found = 0
    for n, (_, a) in enumerate(hashes):
        for _, b in hashes[n + 1:]:
            found += (a ^ b).bit_count() <= SIMILAR_BITS
    return found


def _submission(sid: str, sha256: str, phash: str) -> SubmissionRecord:
    """A vault record with one photo: all that find_matches reads, the rest left empty."""
    photo: FileRecord = {"ciphertext": "", "sha256": sha256, "size": 0, "tool": "",
                         "metadata": {}, "phash": phash}
    return {"id": sid, "instance": "", "bundle": "", "day": "", "source": "",
            "reply_recipient": "", "imported_at": "", "ciphertexts": [], "tags": [],
            "notes": [], "files": [photo]}


def vault_wide(count: int, rounds: int) -> None:
    rng = random.Random(7)
    subs = [_submission(f"{n:032x}", f"{rng.getrandbits(256):064x}",
                        f"{rng.getrandbits(64):016x}") for n in range(count)]
    bucketed, pairwise = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        find_matches(subs)
        bucketed.append(time.perf_counter() - start)
        start = time.perf_counter()
        naive(subs)
        pairwise.append(time.perf_counter() - start)
    print(f"duplicates and similar photos over {count} submissions (best of {rounds}):")
    print(f"  bucketed (review/duplicates.py) {best(bucketed) * 1000:8.1f} ms")
    print(f"  pairwise                        {best(pairwise) * 1000:8.1f} ms   "
          f"x{best(pairwise) / best(bucketed):5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--subs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_file(args.files, args.rounds)
    vault_wide(args.subs, args.rounds)


if __name__ == "__main__":
    main()
